"""Transformers Learn Higher-Order Optimization Methods for In-Context Learning: A Study with Linear Models (arXiv 2310.17086).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from matplotlib.figure import Figure

from gradlab.claims import ClaimRun, Evidence, Paper, claim
from gradlab.incontext.learners import gd_iterates, newton_iterates, prefix_predictions
from gradlab.incontext.models import ICLTransformer
from gradlab.incontext.probes import RidgeProbe, best_match, similarity_matrix
from gradlab.incontext.tasks import LinearRegressionTask, ill_conditioned_covariance

PAPER = Paper(
    key="icl-newton",
    title="Transformers Learn Higher-Order Optimization Methods for In-Context Learning: A Study with Linear Models",
    short_title="ICL as higher-order optimization",
    cluster="incontext",
    arxiv="2310.17086",
    components=("gradlab.incontext.tasks", "gradlab.incontext.models", "gradlab.incontext.learners",
                "gradlab.incontext.probes"),
)

NEWTON_KS = list(range(1, 25))
GD_STEPS = [2**j for j in range(13)]
GD_LR = 0.01


def _train_and_probe(task: LinearRegressionTask, probe_task: LinearRegressionTask, eval_task: LinearRegressionTask,
                     n_points: int, n_steps: int, n_probe: int, n_eval: int, seed: int,
                     progress) -> dict[str, object]:
    torch.manual_seed(seed)
    model = ICLTransformer(task.dim, n_points, width=64, n_layers=4, n_heads=4)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_steps)
    for step in range(n_steps):
        b = task.sample(64, n_points)
        loss = (model(b.xs, b.ys) - b.ys).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            progress(step / n_steps)
    with torch.no_grad():
        pb = probe_task.sample(n_probe, n_points)
        _, h_probe = model(pb.xs, pb.ys, return_hidden=True)
        eb = eval_task.sample(n_eval, n_points)
        pred_eval, h_eval = model(eb.xs, eb.ys, return_hidden=True)
    probe = RidgeProbe(lam=1e-4).fit(h_probe, pb.ys)
    layer_preds = probe.predict(h_eval).double()  # (L, B, N)
    xs, ys = eb.xs.double(), eb.ys.double()
    newton = prefix_predictions(lambda x, y: newton_iterates(x, y, NEWTON_KS), xs, ys)
    gd = prefix_predictions(lambda x, y: gd_iterates(x, y, GD_STEPS, GD_LR), xs, ys)
    pos = slice(1, n_points)  # positions with at least one in-context example
    sim_newton = similarity_matrix(layer_preds[..., pos], newton[..., pos], ys[:, pos])
    sim_gd = similarity_matrix(layer_preds[..., pos], gd[..., pos], ys[:, pos])
    k_idx, k_sim = best_match(sim_newton)
    g_idx, g_sim = best_match(sim_gd)
    return {
        "sim_newton": sim_newton, "sim_gd": sim_gd,
        "newton_k": [NEWTON_KS[i] for i in k_idx.tolist()], "newton_sim": k_sim.tolist(),
        "gd_steps": [GD_STEPS[i] for i in g_idx.tolist()], "gd_sim": g_sim.tolist(),
        "final_mse": float((pred_eval.double() - ys).pow(2).mean() / task.dim),
    }


def _pattern_checks(r: dict[str, object]) -> dict[str, bool | float]:
    ks, gs = r["newton_k"], r["gd_steps"]
    ns, gsim = r["newton_sim"], r["gd_sim"]
    diffs = [ns[i] - gsim[i] for i in range(1, len(ns))]
    return {
        "newton_monotone": all(b >= a for a, b in zip(ks, ks[1:])) and ks[-1] - ks[0] >= 6,
        "gd_geometric": all(gs[i + 1] >= 2 * gs[i] for i in range(1, len(gs) - 1)),
        "newton_not_worse": all(x >= -0.01 for x in diffs),
        "mean_newton_minus_gd": float(np.mean(diffs)),
    }


@claim(paper=PAPER.key, title="Transformer layers track iterative Newton (linear in depth) better than GD "
       "(exponentially many steps); ill-conditioned data widens the gap", timeouts={"quick": 2400})
def layers_match_newton(run: ClaimRun) -> Evidence:
    torch.set_num_threads(1)
    start = time.time()
    d, n_points, kappa = 4, 12, 10.0
    n_steps = run.pick(smoke=20, quick=4000, full=16000)
    n_probe = run.pick(smoke=256, quick=4096, full=4096)
    n_eval = run.pick(smoke=128, quick=1024, full=1024)
    cov_ill = ill_conditioned_covariance(d, kappa, torch.Generator().manual_seed(run.seed + 7))
    results = {}
    for j, (name, cov) in enumerate((("isotropic", None), ("ill_conditioned", cov_ill))):
        def task(offset: int) -> LinearRegressionTask:
            return LinearRegressionTask(d, covariance=cov, seed=run.seed + offset)

        results[name] = _train_and_probe(
            task(0), task(1000), task(2000), n_points, n_steps, n_probe, n_eval, run.seed,
            lambda f, j=j, name=name: run.progress((j + f) / 2, f"training {name} transformer"))
    iso, ill = results["isotropic"], results["ill_conditioned"]
    c_iso, c_ill = _pattern_checks(iso), _pattern_checks(ill)
    ratio_iso = iso["gd_steps"][-1] / iso["newton_k"][-1]
    ratio_ill = ill["gd_steps"][-1] / ill["newton_k"][-1]

    fig = Figure(figsize=(13, 7))
    for row, name in enumerate(("isotropic", "ill_conditioned")):
        r = results[name]
        for col, (key, labels, title) in enumerate((("sim_newton", NEWTON_KS, "Newton iteration k"),
                                                    ("sim_gd", GD_STEPS, "GD steps (log2)"))):
            ax = fig.add_subplot(2, 3, 3 * row + col + 1)
            im = ax.imshow(r[key].numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
            ax.set_yticks(range(4), [f"layer {i + 1}" for i in range(4)])
            ticks = range(0, len(labels), 4 if key == "sim_newton" else 2)
            ax.set_xticks(list(ticks), [str(labels[i]) for i in ticks])
            ax.set_xlabel(title); ax.set_title(f"{name}: residual cosine vs {title.split()[0]}")
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax = fig.add_subplot(2, 3, 3 * row + 3)
        ax.plot(range(1, 5), r["newton_sim"], "o-", label="best Newton")
        ax.plot(range(1, 5), r["gd_sim"], "s--", label="best GD")
        for i in range(4):
            ax.annotate(f"k={r['newton_k'][i]}/{r['gd_steps'][i]}", (i + 1, r["newton_sim"][i]), fontsize=7)
        ax.set_xlabel("layer"); ax.set_ylabel("best cosine"); ax.set_title(f"{name}: best matches (Newton k / GD steps)")
        ax.legend(fontsize=7)
    fig.tight_layout()

    passed = (c_iso["newton_monotone"] and c_iso["gd_geometric"] and c_iso["newton_not_worse"]
              and c_iso["mean_newton_minus_gd"] > 0 and c_ill["newton_not_worse"] and ratio_ill > ratio_iso)
    metrics: dict[str, object] = {"train_steps": n_steps, "kappa": kappa}
    for name, r, c in (("iso", iso, c_iso), ("ill", ill, c_ill)):
        metrics.update({f"{name}_newton_k": r["newton_k"], f"{name}_gd_steps": r["gd_steps"],
                        f"{name}_newton_sim": r["newton_sim"], f"{name}_gd_sim": r["gd_sim"],
                        f"{name}_final_mse_per_dim": r["final_mse"],
                        f"{name}_mean_newton_minus_gd": c["mean_newton_minus_gd"],
                        f"{name}_newton_monotone": c["newton_monotone"], f"{name}_gd_geometric": c["gd_geometric"],
                        f"{name}_newton_not_worse": c["newton_not_worse"]})
    metrics.update({"iso_gd_per_newton_last_layer": ratio_iso, "ill_gd_per_newton_last_layer": ratio_ill,
                    "seconds": time.time() - start})
    return Evidence(
        metrics=metrics,
        criterion=("isotropic: best Newton k non-decreasing over layers with total increase >= 6, best GD steps "
                   "grow >= 2x per layer after layer 1, Newton similarity >= GD similarity - 0.01 at every layer "
                   ">= 2 and larger on average; ill-conditioned (kappa=10): Newton >= GD - 0.01 at every layer >= 2 "
                   "and GD steps per Newton iteration at the last layer larger than for isotropic data"),
        passed=bool(passed), figures={"similarity_heatmaps": fig},
        notes=("Tiny pre-LN GPT (4 layers, width 64, 4 heads) instead of the paper's 12-layer Garg checkpoint; "
               "d=4, 12 points, Adam 1e-3 with cosine decay, batch 64. Per-layer closed-form ridge probe on the "
               "hidden state at x positions (fitted on 4096 prompts) instead of retraining the readout; residual "
               "cosine over positions 2..12, 1024 eval prompts. Newton alpha = 1/||SS^T||_F (official), "
               "GD lr 0.01 on the unnormalised loss. Ill-conditioned data: Fu et al.'s skew design with kappa=10 "
               "(covariance condition number 100), a separate transformer trained on it. Observed at quick scale (seed 0): "
               "the isotropic transformer had not left the initial loss plateau after 2500 or 4000 steps (MSE/d "
               "0.81, every layer matched Newton-1 / GD 1-4 steps), so the isotropic checks fail; the "
               "ill-conditioned one learned (MSE/d 0.17) and matched Newton k = 1,3,7,9 vs GD 1,32,256,256 steps. "
               "Quick uses the research note's 4000 steps (~9 CPU min); full trains 16000 steps."),
    )
