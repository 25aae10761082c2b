"""On Mesa-Optimization in Autoregressively Trained Transformers: Emergence and Capability (arXiv 2405.16845).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, claim
from gradlab.incontext.learners import mesa_construction, one_step_gd_ar
from gradlab.incontext.models import LinearSelfAttention, ar_tokens
from gradlab.incontext.probes import matrix_correlation
from gradlab.incontext.tasks import AutoregressiveTask

PAPER = Paper(
    key="mesa-opt",
    title="On Mesa-Optimization in Autoregressively Trained Transformers: Emergence and Capability",
    short_title="Mesa-optimization",
    cluster="incontext",
    arxiv="2405.16845",
    components=("gradlab.incontext.tasks", "gradlab.incontext.models", "gradlab.incontext.learners",
                "gradlab.incontext.probes"),
    statement=("A one-layer linear causal transformer trained autoregressively on x_{t+1} = W x_t keeps the diagonal "
               "structure and learns one step of gradient descent on the in-context least-squares loss (a "
               "mesa-optimizer); with a Gaussian initial token the learned step is ab = 1/(5 sigma^2), so the "
               "prediction is 1/5 of the truth and W is not recovered, while a sparse initial token recovers W."),
    revisions=(
        Revision(
            claim="ar_lsa_learns_one_gd_step",
            date="2026-12-01",
            old=("gaussian: |ab - 0.2| < 0.02 and |ratio_T - 0.2| < 0.03 and off_structure < 0.15 and pred_cos > 0.99; "
                 "sparse: ab > 0.95 and mse_T < 1e-2 and off_structure < 0.02 and pred_cos > 0.99 (ratio_T = mean "
                 "over test sequences and coordinates of Re(yhat_T / x_T), the official code's statistic)"),
            new=("gaussian: |ab - 0.2| < 0.02 and the 95% bootstrap CI (over test sequences) of c_T lies inside "
                 "[0.18, 0.22] and off_structure < 0.15 and pred_cos > 0.99, where c_T = sum Re(conj(g_T) yhat_T) / "
                 "sum |g_T|^2 is the least-squares step size of the model's last-position predictions on the "
                 "one-step-GD predictor g_T (step 1; theory 1/(5 sigma^2)); sparse part unchanged. ratio_T and a 10% "
                 "trimmed ratio are reported, not decided on"),
            reason=("ratio_T is a mean of yhat/x over Gaussian x: the trained model's off-diagonal (finite-sample) "
                    "weights give terms not proportional to x_j, so the ratio has a Cauchy tail; one coordinate "
                    "with |x| = 3e-5 moves it from 0.21 to 0.16 and its bootstrap sd is 0.05 (issue 9, 2.3). c_T has "
                    "the same theory value (pred/true = ab |x_1j|^2 with mean ab sigma^2 = 0.2) without dividing by x, "
                    "and is decided on its CI (statistical flaw, pre-declared estimator)."),
            old_result=("failed: gaussian_ratio_T 0.1639 (|ratio_T - 0.2| = 0.036 > 0.03); gaussian_ab 0.2096, "
                        "gaussian_c_star 0.2092, gaussian_pred_cos 0.9906, gaussian_off_structure 0.1022"),
        ),
    ),
)

AB_GAUSSIAN = 0.2   # 1/(5 sigma^2) with sigma = 1
C_TOL = 0.02        # the CI of c_T must lie inside [0.18, 0.22]


def _ratio_ci(num: np.ndarray, den: np.ndarray, seed: int, confidence: float = 0.95) -> tuple[float, float, float]:
    """``sum(num) / sum(den)`` with a BCa bootstrap CI over rows (``scipy.stats.bootstrap``, rows resampled paired)."""
    from scipy.stats import bootstrap

    def stat(n, d, axis=-1):
        return n.sum(axis=axis) / d.sum(axis=axis)

    res = bootstrap((num, den), stat, paired=True, vectorized=True, confidence_level=confidence, n_resamples=9999,
                    method="BCa", rng=np.random.default_rng(seed))
    return float(stat(num, den)), float(res.confidence_interval.low), float(res.confidence_interval.high)


def _train(x1: str, a0: float, b0: float, lr: float, d: int, t_len: int, m: int, epochs: int, seed: int,
           progress) -> dict[str, object]:
    train = AutoregressiveTask(d, x1=x1, sigma=1.0, seed=seed).sample(m, t_len).xs
    test = AutoregressiveTask(d, x1=x1, sigma=1.0, seed=seed + 10_000).sample(m, t_len).xs
    model = LinearSelfAttention(2 * d, out_dim=d, parametrization="merged", causal=True, normalize=True,
                                residual=False, init_std=0.0, dtype=torch.complex64)
    model.load_state_dict(mesa_construction(d, a0, b0))
    opt = torch.optim.SGD(model.parameters(), lr=lr, foreach=True)
    e_train = ar_tokens(train)
    losses, abs_ = [], []
    diag_kq = torch.zeros(2 * d, 2 * d, dtype=torch.bool)
    diag_kq[d:, :d] = torch.eye(d, dtype=torch.bool)
    diag_pv = torch.zeros(d, 2 * d, dtype=torch.bool)
    diag_pv[:, :d] = torch.eye(d, dtype=torch.bool)

    def ab() -> float:
        kq, pv = model.w_kq[0].detach(), model.w_pv[0].detach()
        return float((kq[diag_kq].mean() * pv[diag_pv].mean()).real)

    for epoch in range(epochs):
        pred = model(e_train)[:, 1:-1]  # predictions at 1-based t = 2 .. T-1
        loss = 0.5 * (pred - train[:, 2:]).abs().pow(2).sum((1, 2)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        abs_.append(ab())
        progress(epoch / epochs)
    with torch.no_grad():
        pred = model(ar_tokens(test))[:, 1:-1]
        gd = one_step_gd_ar(test, 1.0)[:, 1:-1]
    kq, pv = model.w_kq[0].detach(), model.w_pv[0].detach()
    off = max(float(kq[~diag_kq].norm() / kq[diag_kq].norm()), float(pv[~diag_pv].norm() / pv[diag_pv].norm()))
    ab_final = ab()
    c_star = float((gd.conj() * pred).sum().real / gd.abs().pow(2).sum())
    last_pred, last_true = pred[:, -1], test[:, -1]
    nz = last_true.abs() > 1e-6  # sparse x_1: the ratio is only defined on the support
    g_last = gd[:, -1]
    num = (g_last.conj() * last_pred).real.sum(-1).double().numpy()  # per test sequence
    den = g_last.abs().pow(2).sum(-1).double().numpy()
    c_t, c_lo, c_hi = _ratio_ci(num, den, seed)
    from scipy.stats import trim_mean

    ratios = (last_pred[nz] / last_true[nz]).real.double().numpy()
    return {
        "ab": ab_final, "c_star": c_star, "c_T": c_t, "c_T_ci_low": c_lo, "c_T_ci_high": c_hi,
        "ratio_T_trimmed10": float(trim_mean(ratios, 0.1)),
        "ratio_T_trimmed10_construction": float(trim_mean((ab_final * gd[:, -1][nz] / last_true[nz]).real.double()
                                                          .numpy(), 0.1)),
        "pred_cos": matrix_correlation(pred, ab_final * gd),
        "ratio_T": float((last_pred[nz] / last_true[nz]).real.mean()),
        "ratio_T_construction": float((ab_final * gd[:, -1][nz] / last_true[nz]).real.mean()),
        "mse_T": float((last_pred - last_true).abs().pow(2).sum(-1).mean()),
        "off_structure": off, "losses": losses, "ab_curve": abs_,
    }


@claim(paper=PAPER.key, title="A causal LSA trained autoregressively on x_{t+1} = W x_t learns one GD step on the "
       "in-context OLS problem (ab -> 1/(5 sigma^2) for Gaussian x_1, recovery of W for sparse x_1)",
       timeouts={"quick": 900})
def ar_lsa_learns_one_gd_step(run: ClaimRun) -> Evidence:
    torch.set_num_threads(1)
    start = time.time()
    d, t_len = 5, 100
    m = run.pick(smoke=64, quick=1000, full=10_000)
    epochs = run.pick(smoke=5, quick=150, full=200)
    settings = {"gaussian": dict(x1="gaussian", a0=0.1, b0=0.1, lr=1e-4),
                "sparse": dict(x1="sparse", a0=0.5, b0=0.5, lr=1e-3)}
    res = {}
    for i, (name, cfg) in enumerate(settings.items()):
        res[name] = _train(d=d, t_len=t_len, m=m, epochs=epochs, seed=run.seed + 100 * i,
                           progress=lambda f, i=i, name=name: run.progress((i + f) / 2, f"training ({name} x_1)"),
                           **cfg)
    g, s = res["gaussian"], res["sparse"]

    fig = Figure(figsize=(11, 3.6))
    ax = fig.add_subplot(1, 2, 1)
    for name, r in res.items():
        ax.plot(r["ab_curve"], label=f"{name} x_1")
    ax.axhline(0.2, color="C0", ls="--", lw=0.8, label="theory 1/(5 sigma^2)")
    ax.axhline(1.0, color="C1", ls="--", lw=0.8, label="theory 1/sigma^2")
    ax.set_xlabel("full-batch GD epoch"); ax.set_ylabel("ab (diagonal product)"); ax.set_title("learned GD step size")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(1, 2, 2)
    for name, r in res.items():
        ax.plot(r["losses"], label=f"{name} x_1")
    ax.set_yscale("log"); ax.set_xlabel("epoch"); ax.set_ylabel("training loss"); ax.set_title("AR training loss")
    ax.legend(fontsize=7)
    fig.tight_layout()

    c_in_band = AB_GAUSSIAN - C_TOL <= g["c_T_ci_low"] and g["c_T_ci_high"] <= AB_GAUSSIAN + C_TOL
    passed = (abs(g["ab"] - AB_GAUSSIAN) < 0.02 and c_in_band and g["off_structure"] < 0.15
              and g["pred_cos"] > 0.99 and s["ab"] > 0.95 and s["mse_T"] < 1e-2 and s["off_structure"] < 0.02
              and s["pred_cos"] > 0.99)
    c_dev = max(abs(g["c_T_ci_low"] - AB_GAUSSIAN), abs(g["c_T_ci_high"] - AB_GAUSSIAN))
    metrics = {f"{name}_{k}": v for name, r in res.items() for k, v in r.items() if k not in ("losses", "ab_curve")}
    metrics["seconds"] = time.time() - start
    return Evidence(
        metrics=metrics,
        criterion=("gaussian: |ab - 0.2| < 0.02 and the 95% bootstrap CI of c_T inside [0.18, 0.22] and "
                   "off_structure < 0.15 and pred_cos > 0.99; sparse: ab > 0.95 and mse_T < 1e-2 and off_structure "
                   "< 0.02 and pred_cos > 0.99 (c_T = least-squares step size of the trained model's last-position "
                   "predictions on the one-step-GD predictor, CI over test sequences; pred_cos = cosine between the "
                   "trained model's and the one-step-GD construction's predictions on test sequences)"),
        passed=bool(passed), figures={"ab_and_loss": fig},
        headline=(Check("gaussian: |ab - 1/(5 sigma^2)|", abs(g["ab"] - AB_GAUSSIAN), "<", 0.02),
                  Check("gaussian: max |c_T CI bound - 0.2|", c_dev, "<=", C_TOL),
                  Check("sparse: MSE at T", s["mse_T"], "<", 1e-2)),
        notes=("d=5, T=100, W = diag(exp(i theta)), complex64; causal merged LSA on e_t = (x_t, x_{t-1}) with "
               "rho_t = t-1, initialised at the diagonal construction (a0, b0) = (0.1, 0.1) Gaussian / (0.5, 0.5) "
               "sparse, full-batch GD on 1000 sequences (loss summed over positions), lr 1e-4 / 1e-3, 150 epochs "
               "(the paper's Appendix B settings as reported in the research note). sigma = 1. c_T = sum over test sequences "
               "and coordinates of Re(conj(g_T) yhat_T) / sum |g_T|^2 with g_T the one-step-GD (step 1) prediction at "
               "the last position; its 95% CI is a paired BCa bootstrap over test sequences (scipy.stats.bootstrap). "
               "Reported, not decided on: ratio_T = mean of Re(yhat_T / x_T) (the official code's Cauchy-tailed "
               "statistic), ratio_T_trimmed10 its 10% trimmed mean, and the same two for the construction with c = ab "
               "(a trimmed mean of ab x_1^2 is below 0.2 by design, so it is compared with the construction's, not "
               "with 0.2)."),
    )
