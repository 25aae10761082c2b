"""Feature Learning in Infinite-Width Neural Networks (arXiv 2011.14522).

Paper metadata; the claims that check the paper's central statement are registered here with ``@claim``.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from torch.nn import functional as F

from gradlab.claims import ClaimRun, Evidence, Paper, claim
from gradlab.core import make_gaussian_classification
from gradlab.dynamics.coord_check import coord_check, lr_transfer_sweep
from gradlab.dynamics.width_models import MLP

PAPER = Paper(
    key="mup",
    title="Feature Learning in Infinite-Width Neural Networks",
    short_title="Feature learning at infinite width (muP)",
    cluster="dynamics",
    arxiv="2011.14522",
    components=("gradlab.dynamics.parametrization", "gradlab.dynamics.coord_check", "gradlab.dynamics.width_models"),
)


def _mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out - target).pow(2).sum(1).mean()


@claim(paper=PAPER.key, title="muP feature updates are Theta(1) in width; NTK's vanish and SP's blow up", timeouts={"quick": 600})
def coordinate_check(run: ClaimRun) -> Evidence:
    """One SGD step of a 2-hidden-layer MLP under SP / NTK / muP (absolute-width abc-parametrisations)."""
    widths = run.pick(smoke=[32, 64, 128], quick=[128, 256, 512, 1024, 2048])
    seeds = [100 * run.seed + s for s in range(run.pick(smoke=1, quick=3))]
    gen = torch.Generator().manual_seed(run.seed)
    x, y = torch.randn(64, 16, generator=gen), torch.randn(64, 10, generator=gen)
    results, slopes = {}, {}
    for i, p in enumerate(("mup", "ntk", "sp")):
        results[p] = coord_check(lambda w: MLP(16, w, 10), widths, x, y, _mse, p, lr=0.05, steps=1, seeds=seeds)
        slopes[p] = results[p].slopes()
        run.progress((i + 1) / 3, p)
    hidden = ("layers.0", "layers.1")
    mup_max_abs = max(abs(v) for v in slopes["mup"].values())
    ntk_hidden = [slopes["ntk"][h] for h in hidden]
    metrics = {f"slope_{p}_{layer}": v for p in slopes for layer, v in slopes[p].items()}
    metrics.update({"mup_max_abs_slope": mup_max_abs, "widths": widths, "seeds": len(seeds)})
    passed = (
        mup_max_abs < 0.1
        and all(-0.65 <= v <= -0.35 for v in ntk_hidden)
        and slopes["sp"]["layers.1"] > 0.3
        and slopes["sp"]["<output>"] > 0.8
    )
    fig = Figure(figsize=(13, 4))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, p in zip(axes, ("sp", "ntk", "mup")):
        results[p].plot(ax=ax, title=f"{p}: mean|h_1 - h_0| after one SGD step")
    return Evidence(
        metrics=metrics,
        criterion=(
            "slopes of log mean|h_1 - h_0| vs log width: |slope| < 0.1 for every muP layer and the output; "
            "NTK hidden-layer slopes in [-0.65, -0.35]; SP last-hidden slope > 0.3 and SP output slope > 0.8"
        ),
        passed=bool(passed),
        figures={"coordinate_check": fig},
        notes=(
            "MLP 16 -> n -> n -> 10 (ReLU, biases), MSE on one fixed Gaussian batch of 64, SGD lr 0.05, one step; "
            "abc-parametrisations with absolute width n (W ~ N(0, n^-2(a+b)), lr n^-(c+2a)), TP4 presets."
        ),
    )


@claim(paper=PAPER.key, title="The best learning rate transfers across width under muP but not under SP", timeouts={"quick": 900})
def lr_transfer(run: ClaimRun) -> Evidence:
    """SGD lr sweeps of a 2-hidden-layer MLP at several widths under SP and muP (base width = smallest width)."""
    widths = run.pick(smoke=[16, 32], quick=[64, 256, 1024])
    lrs = [2.0**e for e in run.pick(smoke=range(-3, 1), quick=range(-6, 3))]
    steps = run.pick(smoke=10, quick=60)
    split = make_gaussian_classification(n_samples=2048, n_features=32, n_classes=8, seed=run.seed)
    x = torch.as_tensor(np.asarray(split.x_train), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(split.y_train)).long()
    n_classes = int(split.num_classes)
    res = {}
    for i, p in enumerate(("sp", "mup")):
        res[p] = lr_transfer_sweep(
            lambda w: MLP(x.shape[1], w, n_classes), widths, lrs, x, y, F.cross_entropy, p, steps=steps,
            batch_size=64, base_width=widths[0], seeds=[run.seed],
            progress=lambda f, i=i: run.progress((i + f) / 2, f"lr sweep {('sp', 'mup')[i]}"),
        )
    shift_mup, shift_sp = res["mup"].best_lr_shift(), res["sp"].best_lr_shift()
    metrics = {
        "best_lr_shift_octaves_mup": shift_mup,
        "best_lr_shift_octaves_sp": shift_sp,
        "best_lrs_mup": res["mup"].best_lrs(),
        "best_lrs_sp": res["sp"].best_lrs(),
        "best_loss_mup": [float(np.min(r)) for r in res["mup"].losses],
        "best_loss_sp": [float(np.min(r)) for r in res["sp"].losses],
        "widths": widths,
        "lrs": lrs,
    }
    passed = shift_mup <= 1.0 and shift_sp >= 2.0
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2, sharey=True)
    res["sp"].plot(ax=ax1, title="SP: final train loss vs lr")
    res["mup"].plot(ax=ax2, title="muP: final train loss vs lr")
    return Evidence(
        metrics=metrics,
        criterion="best-lr shift between the smallest and largest width: muP <= 1 octave and SP >= 2 octaves",
        passed=bool(passed),
        figures={"lr_sweeps": fig},
        notes=(
            f"MLP 32 -> n -> n -> 8 on Gaussian-mixture classification (2048 points), SGD, batch 64, {steps} steps, "
            "loss = mean of the last 10% of minibatch losses; diverged runs count as inf. muP via shape-based "
            "widths relative to the smallest width (where muP == SP), as in the mup package."
        ),
    )
