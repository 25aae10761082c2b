"""Transformers as Support Vector Machines (arXiv 2308.16898).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from matplotlib.figure import Figure

from gradlab.claims import Check, ClaimRun, Evidence, Paper, claim
from gradlab.incontext.attention_svm import AttentionSelector, att_svm, directional_correlation, normalized_gd
from gradlab.incontext.tasks import TokenSelectionTask

PAPER = Paper(
    key="tf-svm",
    title="Transformers as Support Vector Machines",
    short_title="Transformers as SVMs",
    cluster="incontext",
    arxiv="2308.16898",
    statement="Gradient descent on attention weights converges in direction to a max-margin SVM that separates the optimal tokens: the Frobenius-norm SVM for a combined W, the nuclear-norm SVM (low rank) for the product K Q^T.",
    components=("gradlab.incontext.tasks", "gradlab.incontext.attention_svm", "gradlab.incontext.probes"),
)


def _run_variant(self_attention: bool, n_seeds: int, n_steps: int, record: int, n: int, t_len: int, d: int,
                 base_seed: int, progress) -> tuple[dict[str, list[float]], dict[str, list[list[float]]], int]:
    rows: dict[str, list[float]] = {k: [] for k in ("W_fro", "W_nuc", "KQ_fro", "KQ_nuc", "rank_fro", "rank_nuc")}
    curves: dict[str, list[list[float]]] = {"W": [], "KQ": []}
    dropped = 0
    for s in range(n_seeds):
        seed = base_seed * 1000 + s
        batch = TokenSelectionTask(d, self_attention=self_attention, seed=seed).sample(n, t_len)
        out = {}
        for param in ("W", "KQ"):
            model = AttentionSelector(d, batch.v, param=param, init_std=0.1,
                                      generator=torch.Generator().manual_seed(seed + 1))
            hist = normalized_gd(model, batch, n_steps, lr=0.1, record_every=record)
            with torch.no_grad():
                probs = model.attention(batch.X, batch.z)
            second = probs.topk(2, -1).values[:, 1]
            if bool(((second > 1e-6) & (second <= 1e-3)).any()):  # ambiguous selection, as the paper's code drops
                out = None
                break
            opt = probs.argmax(-1)
            try:
                w_fro = att_svm(batch.X, batch.z, opt, norm="fro")
                w_nuc = att_svm(batch.X, batch.z, opt, norm="nuc")
            except ValueError:
                out = None
                break
            out[param] = (hist, w_fro, w_nuc)
        progress((s + 1) / n_seeds)
        if out is None:
            dropped += 1
            continue
        for param in ("W", "KQ"):
            hist, w_fro, w_nuc = out[param]
            rows[f"{param}_fro"].append(directional_correlation(hist[-1], w_fro))
            rows[f"{param}_nuc"].append(directional_correlation(hist[-1], w_nuc))
            target = w_fro if param == "W" else w_nuc
            curves[param].append([directional_correlation(h, target) for h in hist])
        rows["rank_fro"].append(int(torch.linalg.matrix_rank(out["W"][1], tol=1e-7)))
        rows["rank_nuc"].append(int(torch.linalg.matrix_rank(out["W"][2], tol=1e-7)))
    return rows, curves, dropped

@claim(paper=PAPER.key, title="Normalised GD on softmax attention converges in direction to the Att-SVM: "
       "Frobenius-norm SVM for W, nuclear-norm SVM for (K, Q)", timeouts={"quick": 900})
def attention_converges_to_svm(run: ClaimRun) -> Evidence:
    torch.set_num_threads(1)
    start = time.time()
    n, t_len, d = 6, 8, 10
    n_seeds = run.pick(smoke=1, quick=6, full=20)
    n_steps = run.pick(smoke=1000, quick=2000, full=4000)
    record = max(n_steps // 20, 1)
    results = {}
    variants = run.pick(smoke=("cross",), quick=("cross", "self"))  # smoke: one variant proves the code path
    for v_i, variant in enumerate(variants):
        results[variant] = _run_variant(variant == "self", n_seeds, n_steps, record, n, t_len, d, run.seed,
                                        lambda f, v_i=v_i, variant=variant: run.progress(
                                            (v_i + f) / len(variants), f"{variant}-attention seeds"))
    rows, curves, dropped = results["cross"]
    kept = len(rows["W_fro"])
    mean = {k: float(np.mean(v)) if v else float("nan") for k, v in rows.items()}
    self_mean = ({k: float(np.mean(v)) for k, v in results["self"][0].items() if v} if "self" in results else {})

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    steps = [record * (i + 1) for i in range(len(curves["W"][0]))] if kept else []
    for param, label, color in (("W", "corr(W, W_fro-SVM)", "C0"), ("KQ", "corr(KQ^T, W_nuc-SVM)", "C1")):
        for i, c in enumerate(curves[param]):
            ax.plot(steps[: len(c)], c, color=color, alpha=0.5, lw=0.8, label=label if i == 0 else None)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.set_xscale("log"); ax.set_xlabel("normalised GD iteration"); ax.set_ylabel("correlation with SVM direction")
    ax.set_title(f"attention weights -> Att-SVM direction ({kept} seeds)")
    if kept:
        ax.legend(fontsize=8)
    fig.tight_layout()

    passed = (kept >= min(5, n_seeds) and mean["W_fro"] >= 0.99 and mean["KQ_nuc"] >= 0.99
              and mean["W_fro"] - mean["W_nuc"] >= 0.05 and mean["KQ_nuc"] - mean["KQ_fro"] >= 0.05
              and mean["rank_nuc"] <= mean["rank_fro"])
    return Evidence(
        metrics={"corr_W_fro": mean["W_fro"], "corr_W_nuc": mean["W_nuc"], "corr_KQ_nuc": mean["KQ_nuc"],
                 "corr_KQ_fro": mean["KQ_fro"], "mean_rank_fro": mean["rank_fro"], "mean_rank_nuc": mean["rank_nuc"],
                 "seeds_kept": kept, "seeds_dropped": dropped, "per_seed_corr_W_fro": rows["W_fro"],
                 "per_seed_corr_KQ_nuc": rows["KQ_nuc"],
                 **{f"self_attention_corr_{k}": v for k, v in self_mean.items()},
                 "seconds": time.time() - start},
        criterion=("mean corr(W, W_fro) >= 0.99 and mean corr(KQ^T, W_nuc) >= 0.99, each beating the other norm's SVM "
                   "by >= 0.05, mean rank(W_nuc) <= mean rank(W_fro), over >= 5 kept seeds"),
        passed=bool(passed), figures={"directional_convergence": fig},
        headline=(Check("mean corr(W, W_fro-SVM)", mean["W_fro"], ">=", 0.99),
                  Check("mean corr(KQ^T, W_nuc-SVM)", mean["KQ_nuc"], ">=", 0.99)),
        notes=("n=6 sequences, T=8 tokens, d=10, unit-norm Gaussian tokens and query tokens z_i (cross-attention; "
               "the criterion is evaluated here), random "
               "labels and unit head v; normalised GD (lr 0.1 per parameter, float64) from 0.1 N(0,1); (K,Q) with "
               "the eps (||K||^2+||Q||^2) penalty. SVMs solved for the tokens GD selects (local Att-SVM): Frobenius by "
               "its dual (scipy), nuclear with cvxpy. Runs with ambiguous softmax (2nd prob in (1e-6, 1e-3]) or an "
               "infeasible SVM are dropped, as in the official notebooks. The self-attention variant (z_i = x_i1) is "
               "reported as self_attention_* metrics, not part of the criterion. History: a first quick run (self-attention "
               "only, before AttentionSelector.forward was made cancellation-free) gave corr_W_fro = 0.947 with "
               "correlations peaking near 0.998 and then decaying once float64 rounding swamped the saturated "
               "softmax gradients; corr_KQ_nuc was 0.997."),
    )
