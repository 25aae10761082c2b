"""Principled Approaches for Extending Neural Architectures to Function Spaces for Operator Learning
(Berner, Liu-Schiaffini, Kossaifi, Duruisseaux, Bonev, Azizzadenesheli & Anandkumar, arXiv 2506.10973).

The paper's recipe converts grid networks into neural operators (integrals with quadrature, fixed receptive fields in
physical units, kernel interpolation, input-output interpolation) and states that operator-style models keep their
error when queried at other resolutions while plain CNNs degrade. The claim trains on 1-D Darcy flow at N = 64 and
tests the same underlying functions at N = 32 ... 512.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from gradlab.claims import Check, ClaimRun, Evidence, Paper, bootstrap_ci, claim
from gradlab.operators import (FNO, DarcyCoefficient, InputOutputInterpolation, darcy_dataset, grid_points,
                               lp_loss, to_operator)
from gradlab.papers._operator_training import Normalised, fast_cpu_convs, fit, mean_predictor_error, predict

PAPER = Paper(
    key="nns-to-nos",
    title="Principled Approaches for Extending Neural Architectures to Function Spaces for Operator Learning",
    short_title="Architectures in function space",
    cluster="operators",
    arxiv="2506.10973",
    components=("gradlab.operators.function_space", "gradlab.operators.pde", "gradlab.papers._operator_training"),
    statement="Networks built or converted by the function-space recipe (spectral/integral kernels, kernel "
              "interpolation) keep their accuracy when evaluated at resolutions other than the training one, "
              "whereas a plain CNN's error grows off its training resolution.",
)

BASE = 64


class GridCNN(nn.Module):
    """Plain CNN on ``[a, x]``: ``depth`` x (Conv1d k, ``width`` channels, zero padding, GELU), then a 1x1 conv."""

    def __init__(self, width: int = 32, depth: int = 6, kernel_size: int = 5) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 2
        for _ in range(depth):
            layers += [nn.Conv1d(c, width, kernel_size, padding=kernel_size // 2), nn.GELU()]
            c = width
        layers.append(nn.Conv1d(width, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        x = grid_points(a.shape[-1], dtype=a.dtype, device=a.device).expand(a.shape[0], 1, -1)
        return self.net(torch.cat([a, x], dim=1))


def _gap(preds: dict[int, torch.Tensor], n: int) -> float:
    """Discretisation-convergence gap ||G(a_n) - R G(a_2n)|| / ||G(a_n)|| (R: restriction to even nodes)."""
    return float(lp_loss(preds[2 * n][..., ::2], preds[n]))


@claim(paper=PAPER.key, title="Trained on 1-D Darcy at N=64, FNO and the converted CNN keep their error at N=256 "
       "(ratio <= 1.5) while the plain CNN's error grows (ratio >= 2)", timeouts={"quick": 900})
def discretisation(run: ClaimRun) -> Evidence:
    seeds = run.seeds(run.pick(smoke=2, quick=3, full=5))
    n_train = run.pick(smoke=32, quick=1000, full=1000)
    n_test = run.pick(smoke=16, quick=200, full=500)
    epochs = run.pick(smoke=1, quick=25, full=300)
    width = run.pick(smoke=8, quick=32, full=32)
    resolutions = [32, 64, 128, 256, 512]
    coef = DarcyCoefficient(n_train + n_test, 1, n_terms=32, seed=run.seed + 5)
    data = {n: darcy_dataset(coef, n) for n in resolutions}
    a_tr, u_tr = data[BASE][0][:n_train], data[BASE][1][:n_train]
    tests = {n: (a[n_train:], u[n_train:]) for n, (a, u) in data.items()}
    names = ("plain CNN", "converted CNN", "FNO", "input-output interpolation")
    err = {m: np.zeros((len(seeds), len(resolutions))) for m in names}
    gaps = {m: np.zeros((len(seeds), 3)) for m in names}
    curves: dict[str, list[list[float]]] = {"plain CNN": [], "FNO": []}
    for i, seed in enumerate(seeds):
        models: dict[str, nn.Module] = {}
        for j, name in enumerate(("plain CNN", "FNO")):
            torch.manual_seed(seed)
            net = GridCNN(width) if name == "plain CNN" else FNO(1, 1, width, 16, 4, projection_channels=128)
            model = Normalised(net, a_tr, u_tr)
            frac0 = (2 * i + j) / (2 * len(seeds))
            with fast_cpu_convs(1):
                curves[name].append(fit(model, a_tr, u_tr, epochs=epochs, batch_size=32, lr=1e-3, weight_decay=1e-4,
                                        seed=seed, progress=lambda f: run.progress(
                                            0.9 * (frac0 + f / (2 * len(seeds))), f"seed {i}: {name}")))
            models[name] = model
        models["converted CNN"] = to_operator(models["plain CNN"], BASE, in_channels=1)
        models["input-output interpolation"] = InputOutputInterpolation(models["plain CNN"], BASE)
        with fast_cpu_convs(1):
            for name, model in models.items():
                preds = {n: predict(model, tests[n][0]) for n in resolutions}
                for k, n in enumerate(resolutions):
                    err[name][i, k] = float(lp_loss(preds[n], tests[n][1], reduction="none").mean())
                for k, n in enumerate((64, 128, 256)):
                    gaps[name][i, k] = _gap(preds, n)
    i64, i256 = resolutions.index(BASE), resolutions.index(256)
    ratio = {m: err[m][:, i256] / err[m][:, i64] for m in names}
    ci = {m: bootstrap_ci(ratio[m]) for m in names}
    passed = bool(ci["FNO"].high <= 1.5 and ci["converted CNN"].high <= 1.5 and ci["plain CNN"].low >= 2.0)
    baseline = mean_predictor_error(u_tr, tests[BASE][1])
    pre = {f"{m} learned at N=64": Check(f"{m} err(64) / mean-predictor err(64)", float(err[m][:, i64].mean())
                                         / baseline, "<=", 0.5) for m in ("plain CNN", "FNO")}

    fig = Figure(figsize=(11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for m, mk in zip(names, "osd^"):
        mean = err[m].mean(0)
        ax1.errorbar(resolutions, mean, yerr=err[m].std(0), fmt=mk + "-", capsize=3, label=m)
    ax1.axvline(BASE, color="gray", ls=":", label="training resolution")
    ax1.set(xscale="log", yscale="log", xlabel="test resolution N", ylabel="test relative L2 error",
            title="1-D Darcy, trained at N = 64")
    ax1.legend(fontsize=8)
    ax2.bar(range(len(names)), [ratio[m].mean() for m in names],
            yerr=[[ratio[m].mean() - ci[m].low for m in names], [ci[m].high - ratio[m].mean() for m in names]],
            capsize=4, color=["C0", "C1", "C2", "C3"])
    ax2.axhline(1.5, color="k", ls="--", label="operators: <= 1.5")
    ax2.axhline(2.0, color="r", ls=":", label="plain CNN: >= 2")
    ax2.set_xticks(range(len(names)), [m.replace(" ", "\n", 1) for m in names], fontsize=8)
    ax2.set(ylabel="err(256) / err(64)", title="Error ratio at 4x the training resolution (95% CI)")
    ax2.legend(fontsize=8)

    metrics = {"resolutions": resolutions, "mean_predictor_err_64": baseline}
    for m in names:
        key = m.replace(" ", "_").replace("-", "_")
        metrics[f"err_{key}"] = err[m].mean(0).tolist()
        metrics[f"err_{key}_per_seed"] = err[m].tolist()
        metrics[f"ratio_256_64_{key}"] = ratio[m].tolist()
        metrics[f"ratio_ci_{key}"] = ci[m].to_json()
        metrics[f"gap_64_128_256_{key}"] = gaps[m].mean(0).tolist()
    return Evidence(
        metrics=metrics,
        criterion="bootstrap CI over seeds of err(256)/err(64): upper bound <= 1.5 for FNO and for the converted CNN "
                  "(to_operator: kernel interpolation), lower bound >= 2 for the plain CNN",
        passed=passed,
        preconditions=pre,
        headline=(Check("FNO err(256)/err(64) (CI high)", ci["FNO"].high, "<=", 1.5),
                  Check("converted CNN err(256)/err(64) (CI high)", ci["converted CNN"].high, "<=", 1.5),
                  Check("plain CNN err(256)/err(64) (CI low)", ci["plain CNN"].low, ">=", 2.0)),
        figures={"resolution_sweep": fig},
        notes=f"-(a u')' = 1, u(0)=u(1)=0, a = 12/3 thresholded GRF *functions* (same function at every N), FV "
              f"reference with sub-cell harmonic face coefficients. {n_train} training functions at N=64, {n_test} "
              f"test functions at every N. Plain CNN: [a, x] -> 6 x Conv1d(k=5, {width} ch, GELU) -> 1x1. Converted "
              "CNN: the same trained weights through to_operator (kernels resampled to s*k-s+1 taps, divided by s). "
              f"FNO: width {width}, 16 modes, 4 layers, grid embedding. Input-output interpolation of the plain CNN "
              f"is reported, not judged. Adam lr 1e-3, wd 1e-4, OneCycle, {epochs} epochs, relative L2 loss, "
              "scalar normalisers. gap_* = ||G(a_N) - R G(a_2N)|| / ||G(a_N)|| for N = 64, 128, 256.",
    )
