"""Transformers learn in-context by gradient descent (arXiv 2212.07677).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from __future__ import annotations

import time

import torch
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, claim
from gradlab.incontext.learners import gd_lsa_construction, gradient_descent
from gradlab.incontext.models import LinearSelfAttention, regression_prediction, regression_tokens
from gradlab.incontext.probes import compare_weights, sensitivity_cosine
from gradlab.incontext.tasks import LinearRegressionTask, PromptBatch

PAPER = Paper(
    key="icl-gd",
    title="Transformers learn in-context by gradient descent",
    short_title="ICL by gradient descent",
    cluster="incontext",
    arxiv="2212.07677",
    statement="A trained linear self-attention layer implements one step of gradient descent on the in-context least-squares loss, matching its predictions, sensitivities and weights.",
    components=("gradlab.incontext.tasks", "gradlab.incontext.models", "gradlab.incontext.learners",
                "gradlab.incontext.probes"),
)


def _with_query(batch: PromptBatch, xq: torch.Tensor) -> PromptBatch:
    return PromptBatch(batch.xs, batch.ys, xq, batch.yq, batch.w)


@claim(paper=PAPER.key, title="A trained one-layer linear self-attention matches the one-step GD construction "
       "(predictions, loss and weights up to scale)", timeouts={"quick": 900})
def lsa_equals_one_gd_step(run: ClaimRun) -> Evidence:
    torch.set_num_threads(1)
    start = time.time()
    d, n = 10, 10
    n_steps = run.pick(smoke=30, quick=4000, full=10000)
    batch_size = run.pick(smoke=256, quick=2048, full=2048)
    n_test = run.pick(smoke=2000, quick=10000, full=20000)
    train = LinearRegressionTask(d, x_dist="uniform", input_range=2.0, seed=run.seed)
    test = LinearRegressionTask(d, x_dist="uniform", input_range=2.0, seed=run.seed + 10_000)
    model = LinearSelfAttention(d + 1, parametrization="separate", include_query=False,
                                init_std=(0.002 / (d + 1)) ** 0.5)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), foreach=True)
    losses = []
    for step in range(n_steps):
        b = train.sample(batch_size, n)
        loss = 0.5 * (regression_prediction(model(regression_tokens(b), last_only=True)) - b.yq).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if step % 200 == 0:
            run.progress(step / n_steps, "training LSA")

    # GD baseline: one step from w=0 on the mean loss with the best learning rate (closed-form line search).
    tb = test.sample(n_test, n)
    s = (gradient_descent(tb.xs, tb.ys, 1, 1.0, normalize=True) * tb.xq).sum(-1)  # (1/N) x_q^T X^T y
    eta_star = float((s * tb.yq).sum() / (s * s).sum())
    with torch.no_grad():
        pred_tf = regression_prediction(model(regression_tokens(tb), last_only=True))
    pred_gd = eta_star * s
    loss_tf = float(0.5 * (pred_tf - tb.yq).pow(2).mean())
    loss_gd = float(0.5 * (pred_gd - tb.yq).pow(2).mean())
    pred_cos = float(torch.nn.functional.cosine_similarity(pred_tf, pred_gd, dim=0))
    sens_cos = float(sensitivity_cosine(
        lambda q: regression_prediction(model(regression_tokens(_with_query(tb, q)), last_only=True)),
        lambda q: eta_star / n * ((tb.xs.mT @ tb.ys[..., None]).squeeze(-1) * q).sum(-1), tb.xq))

    kq = (model.w_k[0].T @ model.w_q[0]).detach()
    pv = (model.proj[0] @ model.w_v[0]).detach()
    con = gd_lsa_construction(d, eta_star, n)
    kq_c = con["w_k"][0].T @ con["w_q"][0]
    pv_c = con["proj"][0] @ con["w_v"][0]
    # Only the first d columns of W_K^T W_Q (the query's y-slot is 0) and the last row of P W_V (the y-slot
    # the prediction is read from) affect the prediction; the sign of both can flip together.
    cmp = compare_weights({"kq": kq[:, :d], "pv": pv[-1]}, {"kq": kq_c[:, :d], "pv": pv_c[-1]})
    corr_kq, corr_pv = abs(cmp["kq"]["correlation"]), abs(cmp["pv"]["correlation"])
    eta_learned = float(-pv[-1, -1] * torch.diagonal(kq[:d, :d]).mean() * n)
    loss_ratio = loss_tf / loss_gd
    eta_ratio = eta_learned / eta_star

    fig = Figure(figsize=(12, 3.6))
    ax = fig.add_subplot(1, 3, 1)
    ax.plot(losses, lw=0.6, label="trained LSA (train batches)")
    ax.axhline(loss_gd, color="k", ls="--", label=f"one GD step, eta*={eta_star:.2f} (test)")
    ax.set_yscale("log"); ax.set_xlabel("Adam step"); ax.set_ylabel("loss 1/2 (yhat - y)^2")
    ax.set_title("training loss vs GD"); ax.legend(fontsize=7)
    for i, (m, title) in enumerate(((kq, "W_K^T W_Q (trained)"), (pv, "P W_V (trained)"))):
        ax = fig.add_subplot(1, 3, i + 2)
        lim = float(m.abs().max())
        im = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(title); ax.set_xlabel("column"); ax.set_ylabel("row")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()

    passed = (pred_cos > 0.99 and sens_cos > 0.99 and 0.98 <= loss_ratio <= 1.03 and corr_kq >= 0.95
              and corr_pv >= 0.95 and abs(eta_ratio - 1) < 0.05)
    return Evidence(
        metrics={"loss_tf": loss_tf, "loss_gd": loss_gd, "loss_ratio": loss_ratio, "prediction_cos": pred_cos,
                 "sensitivity_cos": sens_cos, "eta_star": eta_star, "eta_learned": eta_learned,
                 "eta_ratio": eta_ratio, "weight_corr_kq": corr_kq, "weight_corr_pv": corr_pv,
                 "train_steps": n_steps, "seconds": time.time() - start},
        criterion="prediction_cos > 0.99 and sensitivity_cos > 0.99 and 0.98 <= loss_ratio <= 1.03 and "
                  "|weight_corr_kq| >= 0.95 and |weight_corr_pv| >= 0.95 and |eta_learned/eta_star - 1| < 0.05",
        passed=bool(passed), figures={"lsa_vs_gd": fig},
        headline=(Check("prediction cosine LSA vs GD", pred_cos, ">", 0.99), Check("loss ratio LSA/GD", loss_ratio, "<=", 1.03),
                  Check("|eta_learned/eta* - 1|", abs(eta_ratio - 1), "<", 0.05)),
        notes=("d=10, N=10, x ~ U(-1,1)^d, w ~ N(0, I); one LSA layer with separate W_K, W_Q, W_V, P (11x11), keys "
               "exclude the query, prediction = -y-slot; Adam(1e-3, betas 0.9/0.98), batch 2048, no gradient "
               "clipping (the paper clips at global norm 1e-3; Adam is nearly scale-invariant). GD baseline: one "
               "step from w=0 with the loss-optimal eta found in closed form on the test prompts (the paper scans "
               "a grid). Weight correlations use the blocks that affect the prediction and are taken in absolute "
               "value (a joint sign flip of both matrices leaves the model unchanged)."),
    )
