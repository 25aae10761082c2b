"""Exploring Geometry of Blind Spots in Vision Models (arXiv 2310.19889).

Balasubramanian et al. introduce Level Set Traversal (LST): starting from a source image, move toward an
arbitrary target image of another class using only steps orthogonal to the gradient of the source-class
confidence, accepting a step only while the confidence stays within ``p_thresh`` of its start. LST reaches images
that look like the target yet keep the source confidence, and the straight segment from the source to such an
image keeps high confidence ("star-like" level sets) whereas the straight interpolation from source to target
loses it.

Claim checked here, on two-block digit images (0 vs 1, BlockMNIST style, pixel noise 0.3 as in the research
note's reproduction) with a standard MLP, over several seeds (model, data and start noise change with the seed):
with the paper's LST rule (:class:`gradlab.explain.LevelSetTraversal`, ``rule="paper"``, no adversarial drift, the
official default), LST outputs are much closer to the target than the source was, the segment source -> LST output
keeps the source class, the straight source -> target interpolation does not. Decided on 95% bootstrap CIs over
seeds of the per-seed medians. Reported beside it, not in the criterion: our Newton back-projection variant (the
old criterion's traversal), the official argparse defaults (100 steps, ``p_thresh`` 0.05), the README's paper run
with the adversarial drift, and the same traversal on low-noise images (0.05).
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, bootstrap_ci, claim
from gradlab.explain.data import make_block_digits
from gradlab.explain.evaluation import evaluate_accuracy
from gradlab.explain.level_set import LevelSetTraversal, LSTResult
from gradlab.explain.robust import train_classifier

CLAIM = "lst_reaches_target_keeping_confidence"

RATIO_MAX = 0.25
SEGMENT_MIN = 0.5
STRAIGHT_MAX = 0.5
ACC_MIN = 0.9
MIN_PAIRS = 10

# the traversal of the criterion: the paper's rule, eta = the official argparse default 0.05, 400 iterations and
# p_thresh 0.2 as in the README's paper run, no adversarial drift (the official default), init noise 2/255
CRITERION_LST = {"rule": "paper", "step_size": 0.05, "n_steps": 400, "p_thresh": 0.2, "adv_step": 0.0}
# reported variants (not in the criterion)
VARIANTS = {
    "newton": {"rule": "newton", "step_size": 0.05, "n_steps": 400, "p_thresh": 0.2, "correction_steps": 1},
    "official_defaults": {"rule": "paper", "step_size": 0.05, "n_steps": 100, "p_thresh": 0.05, "adv_step": 0.0},
    "readme_drift": {"rule": "paper", "step_size": 0.01, "n_steps": 400, "p_thresh": 0.2, "adv_step": 2e-3},
}

OLD_CRITERION = (
    "median ||x_LST - x_tgt|| / ||x_src - x_tgt|| <= 0.25 and median min confidence on the segment source->LST "
    ">= 0.5 and median min confidence on the straight source->target interpolation < 0.5 (noise-0.3 setting), "
    "one seed, LST = our Newton back-projection (one correction per step) with per-sample step halving"
)

PAPER = Paper(
    key="blind-spots",
    title="Exploring Geometry of Blind Spots in Vision Models",
    short_title="Blind spots (level sets)",
    cluster="explain",
    arxiv="2310.19889",
    components=("gradlab.explain.level_set", "gradlab.explain.data", "gradlab.explain.robust"),
    statement=("There exist piecewise-linear connected paths in input space between images that a human oracle "
               "would deem extremely disparate, though vision models retain a near-uniform level of confidence on "
               "the same path, and the linear interpolant from the source image to the LST output also stays in "
               "the level set (a star-like substructure)."),
    revisions=(
        Revision(
            claim=CLAIM,
            date="2026-12-01",
            old=OLD_CRITERION,
            new=(f"upper 95% CI bound over seeds of the median L2 distance ratio <= {RATIO_MAX}, lower CI bound of the "
                 f"median min segment confidence >= {SEGMENT_MIN}, upper CI bound of the median min straight-line "
                 f"confidence < {STRAIGHT_MAX}; LST = the paper's rule (fixed step, accept iff p0 - p(x') < p_thresh, "
                 "init noise U(+-2/255), no drift); preconditions: every model's test accuracy >= 0.9 and >= 10 pairs"),
            reason=("The verdict came from our own traversal (Newton back-projection and per-sample step halving), not "
                    "the paper's Level Set Traversal (issue 9, 2.1); the margin rested on one draw (issue 9, 1)."),
            old_result=("failed: distance_ratio_l2_median 0.2942 > 0.25 (Newton variant, one seed), "
                        "final_conf_median 1, acceptance_rate_mean 1"),
        ),
    ),
)


def _mlp(d: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 2))


def _summary(model: nn.Module, res: LSTResult) -> dict[str, float]:
    with torch.no_grad():
        still_source = (model(res.final).argmax(dim=1) == 0).float().mean()
    return {
        "n_pairs": res.source.shape[0],
        "p0_median": float(res.source_confidence.median()),
        "final_conf_median": float(res.confidences[-1].median()),
        "path_min_conf_median": float(res.confidences.min(dim=0).values.median()),
        "distance_ratio_l2_median": float(res.distance_ratio(2.0).median()),
        "distance_ratio_linf_median": float(res.distance_ratio(float("inf")).median()),
        "segment_min_conf_median": float(res.segment_confidences.min(dim=0).values.median()),
        "straight_min_conf_median": float(res.straight_confidences.min(dim=0).values.median()),
        "final_predicted_source_fraction": float(still_source),
        "acceptance_rate_mean": float(res.acceptance_rate.mean()),
    }


def _setting(seed: int, noise: float, n_pairs: int, steps_scale: float, epochs: int, n_train: int,
             variants: bool) -> tuple[LSTResult, dict[str, float]]:
    """Train the MLP for one seed, traverse with the criterion's LST (and the reported variants)."""
    data = make_block_digits(seed, classes=(0, 1), n_train=n_train, n_test=max(400, 4 * n_pairs), noise=noise)
    torch.manual_seed(seed)
    model = train_classifier(_mlp(data.x_train[0].numel()), data.x_train, data.y_train, epochs=epochs, seed=seed)
    with torch.no_grad():
        pred = model(data.x_test).argmax(dim=1)
    ok = pred == data.y_test
    src = data.x_test[ok & (data.y_test == 0)][:n_pairs]
    tgt = data.x_test[ok & (data.y_test == 1)][:n_pairs]
    n = min(len(src), len(tgt))
    src, tgt = src[:n], tgt[:n]

    def traverse(cfg: dict) -> LSTResult:
        cfg = dict(cfg, n_steps=max(1, int(round(cfg["n_steps"] * steps_scale))))
        return LevelSetTraversal(model, seed=seed, **cfg).traverse(src, tgt, source_class=0)

    res = traverse(CRITERION_LST)
    m = {"test_acc": evaluate_accuracy(model, data.x_test, data.y_test), **_summary(model, res)}
    if variants:
        for name, cfg in VARIANTS.items():
            m.update({f"{name}_{k}": v for k, v in _summary(model, traverse(cfg)).items() if k != "n_pairs"})
    return res, m


KEYS = ("distance_ratio_l2_median", "segment_min_conf_median", "straight_min_conf_median")


@claim(paper=PAPER.key, title="LST finds equi-confidence inputs near target images, joined to the source by "
       "high-confidence segments, unlike straight interpolation", timeouts={"quick": 900})
def lst_reaches_target_keeping_confidence(run: ClaimRun) -> Evidence:
    n_pairs = run.pick(smoke=6, quick=40, full=100)
    steps_scale = run.pick(smoke=0.05, quick=1.0, full=2.5)
    epochs = run.pick(smoke=1, quick=10, full=20)
    n_train = run.pick(smoke=200, quick=2000, full=6000)
    seeds = run.seeds(run.pick(smoke=2, quick=5, full=8))
    per_seed: list[dict[str, float]] = []
    results: list[LSTResult] = []
    for i, s in enumerate(seeds):
        run.progress(i / (len(seeds) + 1), f"seed {s}: training and traversal")
        res, m = _setting(s, 0.3, n_pairs, steps_scale, epochs, n_train, variants=True)
        per_seed.append(m)
        results.append(res)
    run.progress(len(seeds) / (len(seeds) + 1), "low-noise images (first seed, reported)")
    _, low = _setting(seeds[0], 0.05, n_pairs, steps_scale, epochs, n_train, variants=False)

    metrics: dict[str, object] = {"seeds": list(seeds)}
    names = list(per_seed[0])
    for k in names:  # mean over seeds of every per-seed number; the criterion's three also with their CI
        metrics[k] = float(np.mean([m[k] for m in per_seed]))
    cis = {k: bootstrap_ci([m[k] for m in per_seed], seed=run.seed) for k in KEYS}
    for k, ci in cis.items():
        metrics[f"{k}_ci"] = ci.to_json()
        metrics[f"{k}_per_seed"] = [m[k] for m in per_seed]
    for v in VARIANTS:
        metrics[f"{v}_distance_ratio_l2_median_per_seed"] = [m[f"{v}_distance_ratio_l2_median"] for m in per_seed]
    metrics["test_acc_min"] = float(min(m["test_acc"] for m in per_seed))
    metrics["n_pairs_min"] = int(min(m["n_pairs"] for m in per_seed))
    metrics.update({f"lownoise_{k}": v for k, v in low.items()})

    ratio_hi = cis["distance_ratio_l2_median"].high
    seg_lo = cis["segment_min_conf_median"].low
    straight_hi = cis["straight_min_conf_median"].high
    headline = (
        Check("distance ratio to target (CI upper)", ratio_hi, "<=", RATIO_MAX),
        Check("min confidence source->LST segment (CI lower)", seg_lo, ">=", SEGMENT_MIN),
        Check("min confidence straight source->target (CI upper)", straight_hi, "<", STRAIGHT_MAX),
    )
    passed = bool(all(h.ok for h in headline))
    preconditions = {
        "every model learned": Check("lowest test accuracy over seeds", metrics["test_acc_min"], ">=", ACC_MIN),
        "enough correctly classified pairs": Check("fewest pairs over seeds", metrics["n_pairs_min"], ">=",
                                                   min(MIN_PAIRS, n_pairs)),
    }

    res = results[0]
    fig = Figure(figsize=(13, 4.2))
    gs = fig.add_gridspec(3, 3, width_ratios=[1.1, 1, 0.8])
    k = min(4, res.final.shape[0])
    pad = torch.ones(16, 1)
    for row, (imgs, title) in enumerate(((res.source, "sources (class 0)"), (res.final, "LST outputs (still class 0)"),
                                         (res.target, "targets (class 1)"))):
        ax_img = fig.add_subplot(gs[row, 0])
        strip = torch.cat([torch.cat([imgs[i, 0].clamp(0, 1), pad], dim=1) for i in range(k)], dim=1)
        ax_img.imshow(strip.numpy(), cmap="gray", vmin=0, vmax=1)
        ax_img.set_title(title, fontsize=8)
        ax_img.axis("off")
    ax = fig.add_subplot(gs[:, 1])
    t = res.interpolation.numpy()
    for curves, label, color in ((res.straight_confidences, "straight source -> target", "tab:red"),
                                 (res.segment_confidences, "straight source -> LST output", "tab:blue")):
        med = curves.median(dim=1).values.numpy()
        lo, hi = curves.quantile(0.1, dim=1).numpy(), curves.quantile(0.9, dim=1).numpy()
        ax.plot(t, med, color=color, label=label)
        ax.fill_between(t, lo, hi, color=color, alpha=0.2)
    ax.set_xlabel("interpolation t")
    ax.set_ylabel("source-class confidence (median, 10-90%)")
    ax.set_title(f"first seed; L2 distance ratio {per_seed[0]['distance_ratio_l2_median']:.3f}", fontsize=9)
    ax.legend(fontsize=8)
    ax2 = fig.add_subplot(gs[:, 2])
    labels = ["paper rule\n(criterion)"] + [v.replace("_", "\n") for v in VARIANTS]
    series = [metrics["distance_ratio_l2_median_per_seed"]] + [
        metrics[f"{v}_distance_ratio_l2_median_per_seed"] for v in VARIANTS]
    for j, ys in enumerate(series):
        ax2.scatter(np.full(len(ys), j), ys, s=14, color="tab:blue" if j == 0 else "grey")
    ax2.axhline(RATIO_MAX, color="tab:red", ls="--", lw=1, label=f"threshold {RATIO_MAX}")
    ax2.set_xticks(range(len(labels)), labels, fontsize=7)
    ax2.set_ylabel("median L2 distance ratio (one dot per seed)")
    ax2.legend(fontsize=7)
    fig.suptitle("Level Set Traversal (paper's rule) on two-block digits (noise 0.3), standard MLP")
    crit = CRITERION_LST
    return Evidence(
        metrics=metrics,
        criterion=(f"over {len(seeds)} seeds (95% bootstrap CI of the mean of per-seed medians): upper CI bound of "
                   f"||x_LST - x_tgt|| / ||x_src - x_tgt|| <= {RATIO_MAX}, lower CI bound of the min confidence on "
                   f"the segment source->LST >= {SEGMENT_MIN}, upper CI bound of the min confidence on the straight "
                   f"source->target interpolation < {STRAIGHT_MAX} (noise-0.3 setting, LST = the paper's rule without "
                   "drift)"),
        passed=passed,
        preconditions=preconditions,
        headline=headline,
        figures={"lst": fig},
        notes=(f"Two-block digits 0 vs 1 (16x8), MLP 128-256-256-2 trained {epochs} epochs per seed; LST: the "
               f"paper's rule, eta {crit['step_size']} (fixed), {int(round(crit['n_steps'] * steps_scale))} steps, "
               f"p_thresh {crit['p_thresh']}, init noise U(+-2/255), no adversarial drift; {n_pairs} correctly "
               "classified (source, target) pairs per seed. Reported variants (not in the criterion): 'newton_*' our "
               "Newton back-projection (the old criterion's traversal), 'official_defaults_*' the official argparse "
               "defaults (100 steps, p_thresh 0.05), 'readme_drift_*' the README's paper run (eta 0.01, 400 steps, "
               "p_thresh 0.2, drift adv_step 2e-3; our drift uses the per-sample CE gradient, the official code the "
               "batch mean), 'lownoise_*' the criterion's traversal on pixel-noise-0.05 images (first seed). "
               "Unsuffixed numbers are means over seeds. Paper: ImageNet/CIFAR ResNets and ViTs; here a small MLP on "
               "128-pixel images."),
    )
