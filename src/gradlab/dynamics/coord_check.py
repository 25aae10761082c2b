"""Coordinate checks and learning-rate transfer sweeps across widths (Yang & Hu 2021; Yang et al. 2022).

*Coordinate check.* For each width ``n``, train a few steps on a fixed batch and record, for every watched
module, the per-coordinate size of the feature update ``mean |h_t(x) - h_0(x)|``. Fitting
``log mean|Δh| = slope * log n + const`` across widths gives the exponent: muP keeps every slope near 0
(features move Theta(1)); NTK gives about -1/2 (features freeze); SP with a width-independent lr gives positive
slopes (blow-up). Recording the *change* rather than the raw activation keeps the init contribution out (see the
``mup`` package's ``get_coord_data``, which records raw sizes).

*Learning-rate transfer.* Train each width over a grid of learning rates and compare the best lr across widths;
under muP the optimum stays put, under SP it drifts with width.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator
from torch import nn

from gradlab.core import check_choice, check_int, check_positive, check_tensor
from gradlab.dynamics._validation import (
    check_bool, check_callable, check_int_list, check_positive_list, check_real,
)
from gradlab.dynamics.parametrization import AbcParametrization, abc_param_groups

__all__ = ["CoordCheckResult", "coord_check", "LrSweepResult", "lr_transfer_sweep", "fit_width_slope"]

ModelFactory = Callable[[int], nn.Module]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OUTPUT = "<output>"


def fit_width_slope(widths: Sequence[float], values: Sequence[float]) -> float:
    """Least-squares slope of ``log values`` against ``log widths`` (NaN if any value is not positive/finite)."""
    widths = check_positive_list("widths", widths, min_len=2)
    if len(set(widths)) < 2:
        raise ValueError(f"widths must contain at least two distinct widths; got {widths}")
    if isinstance(values, (str, bytes)):
        raise TypeError("values must be a sequence of numbers; got str")
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"values must be a sequence of numbers; got {type(values).__name__}") from None
    if v.shape != (len(widths),) or len(widths) < 2:
        raise ValueError(f"need one value per width and at least two widths; got {len(widths)} widths, {v.shape}")
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
        return float("nan")
    return float(np.polyfit(np.log(np.asarray(widths, dtype=float)), np.log(v), 1)[0])


def _check_common(x: torch.Tensor, y: torch.Tensor, parametrization: str | AbcParametrization, seeds: Sequence[int],
                  base_width: int | None, zero_readout: bool) -> None:
    """Arguments shared by :func:`coord_check` and :func:`lr_transfer_sweep`, checked before any training."""
    check_tensor("x", x, finite=True)
    check_tensor("y", y, finite=True)
    if x.ndim < 1 or y.ndim < 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of samples (first dim); got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[0] < 1:
        raise ValueError("x and y must hold at least one sample")
    if not isinstance(parametrization, (str, AbcParametrization)):
        raise TypeError(f"parametrization must be a preset name or an AbcParametrization; got "
                        f"{type(parametrization).__name__}")
    check_int_list("seeds", seeds, min_len=1)
    if base_width is not None:
        check_int("base_width", base_width, minimum=1)
    check_bool("zero_readout", zero_readout)


def _make_optimizer(groups: list[dict], optimizer: str) -> torch.optim.Optimizer:
    if optimizer == "sgd":
        return torch.optim.SGD(groups, foreach=True)
    return torch.optim.Adam(groups, foreach=True)


def _setup(
    make_model: ModelFactory, width: int, parametrization: str | AbcParametrization, lr: float, optimizer: str,
    base_width: int | None, zero_readout: bool,
) -> tuple[nn.Module, torch.optim.Optimizer]:
    model = make_model(width)
    base = delta = None
    if base_width is not None:
        base, delta = make_model(base_width), make_model(2 * base_width)
    groups = abc_param_groups(model, parametrization, lr, optimizer=optimizer, base=base, delta=delta,
                              absolute_widths=base is None, zero_readout=zero_readout)
    return model, _make_optimizer(groups, optimizer)


@dataclass
class CoordCheckResult:
    """``deltas[i, j, t]`` = mean over seeds of ``mean |h_{t+1} - h_0|`` for module ``layers[i]`` at ``widths[j]``."""

    widths: list[int]
    layers: list[str]
    deltas: np.ndarray
    parametrization: str

    def slopes(self, step: int = -1) -> dict[str, float]:
        """Width exponent of every watched module's update after ``step`` (default: the last step)."""
        n_steps = self.deltas.shape[-1]
        step = check_int("step", step, minimum=-n_steps, maximum=n_steps - 1)
        return {name: fit_width_slope(self.widths, self.deltas[i, :, step]) for i, name in enumerate(self.layers)}

    def plot(self, ax=None, step: int = -1, title: str | None = None) -> Figure | None:
        """Log-log plot of ``mean|Δh|`` vs width, one line per module."""
        fig = None
        if ax is None:
            fig = Figure(figsize=(5, 4))
            ax = fig.subplots()
        slopes = self.slopes(step)
        for i, name in enumerate(self.layers):
            ax.loglog(self.widths, self.deltas[i, :, step], "o-", label=f"{name} ({slopes[name]:+.2f})")
        ax.set_xticks(self.widths)
        ax.set_xticklabels([str(w) for w in self.widths])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("width")
        ax.set_ylabel("mean |h_t - h_0| per coordinate")
        ax.set_title(title or f"coordinate check: {self.parametrization}")
        ax.legend(fontsize=7)
        return fig


def coord_check(
    make_model: ModelFactory,
    widths: Sequence[int],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    parametrization: str | AbcParametrization,
    lr: float,
    steps: int = 3,
    optimizer: str = "sgd",
    seeds: Sequence[int] = (0,),
    base_width: int | None = None,
    modules: Sequence[str] | None = None,
    zero_readout: bool = False,
) -> CoordCheckResult:
    """Record per-coordinate feature updates across widths.

    Args:
        make_model: ``width -> nn.Module``; module names must not depend on the width.
        widths: the widths to check (>= 2).
        x, y: one fixed batch; training repeats it for ``steps`` steps.
        loss_fn: ``loss_fn(model(x), y)``.
        parametrization: preset name or :class:`AbcParametrization`, applied with :func:`abc_param_groups`.
        lr: base learning rate; optimizer: ``sgd`` | ``adam``.
        seeds: model seeds to average over.
        base_width: use shape-based width inference against ``make_model(base_width)`` (mup style); without it,
            positional roles and absolute widths.
        modules: names (``model.named_modules()``) whose outputs are watched; default every module that owns a
            parameter directly, plus the model output (``"<output>"``).
    """
    check_callable("make_model", make_model)
    check_callable("loss_fn", loss_fn)
    if isinstance(widths, (list, tuple, range)) and len(widths) < 2:
        raise ValueError("widths must contain at least two widths")
    widths = check_int_list("widths", widths, minimum=1, min_len=2)
    steps = check_int("steps", steps, minimum=1)
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    lr = check_positive("lr", lr)
    _check_common(x, y, parametrization, seeds, base_width, zero_readout)
    if modules is not None:
        if isinstance(modules, str) or not isinstance(modules, Sequence):
            raise TypeError(f"modules must be a sequence of module names; got {type(modules).__name__}")
        if len(modules) == 0:
            raise ValueError("modules must name at least one module (or be None for all)")
        probe = make_model(widths[0])
        names = {n for n, _ in probe.named_modules()} | {OUTPUT}
        missing = [m for m in modules if m not in names]
        if missing:
            raise ValueError(f"modules names {missing} that the model does not have; available: "
                             f"{sorted(n for n in names if n)}")
    name = parametrization if isinstance(parametrization, str) else parametrization.name
    layers: list[str] | None = None
    deltas: list[np.ndarray] = []  # per width: (layers, steps)
    for width in widths:
        per_seed = []
        for seed in seeds:
            torch.manual_seed(int(seed))
            model, opt = _setup(make_model, width, parametrization, lr, optimizer, base_width, zero_readout)
            if layers is None:
                layers = list(modules) if modules is not None else [
                    n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))
                ] + [OUTPUT]
            watched = [n for n in layers if n != OUTPUT]
            acts: dict[str, torch.Tensor] = {}
            handles = []
            for n in watched:
                mod = model.get_submodule(n)
                handles.append(mod.register_forward_hook(
                    lambda _m, _i, out, n=n: acts.__setitem__(n, (out[0] if isinstance(out, tuple) else out).detach())
                ))
            try:
                with torch.no_grad():
                    out0 = model(x)
                h0 = {**acts, OUTPUT: out0.detach()}
                rec = np.zeros((len(layers), steps))
                for t in range(steps):
                    opt.zero_grad(set_to_none=True)
                    loss_fn(model(x), y).backward()
                    opt.step()
                    with torch.no_grad():
                        out = model(x)
                    ht = {**acts, OUTPUT: out.detach()}
                    for i, n in enumerate(layers):
                        rec[i, t] = float((ht[n] - h0[n]).abs().mean())
            finally:
                for h in handles:
                    h.remove()
            per_seed.append(rec)
        deltas.append(np.mean(per_seed, axis=0))
    return CoordCheckResult(widths=widths, layers=list(layers or []), deltas=np.stack(deltas, axis=1),
                            parametrization=name)


@dataclass
class LrSweepResult:
    """``losses[j, i]``: final training loss (mean over seeds; inf if diverged) at ``widths[j]``, ``lrs[i]``."""

    widths: list[int]
    lrs: list[float]
    losses: np.ndarray
    parametrization: str

    def best_lrs(self) -> list[float]:
        """The loss-minimising learning rate for each width; NaN for a width at which every run diverged (no
        finite loss), so that no learning rate is reported as best by accident."""
        best = []
        for row in np.asarray(self.losses, dtype=float):
            finite = np.isfinite(row)
            best.append(float(self.lrs[int(np.argmin(np.where(finite, row, np.inf)))]) if finite.any() else float("nan"))
        return best

    def best_lr_shift(self) -> float:
        """``|log2(best lr at the largest width / best lr at the smallest width)|`` (octaves)."""
        best = self.best_lrs()
        return float(abs(np.log2(best[-1] / best[0])))

    def plot(self, ax=None, title: str | None = None) -> Figure | None:
        """Loss vs learning rate, one curve per width (diverged runs are not drawn)."""
        fig = None
        if ax is None:
            fig = Figure(figsize=(5, 4))
            ax = fig.subplots()
        for j, w in enumerate(self.widths):
            ax.plot(self.lrs, np.where(np.isfinite(self.losses[j]), self.losses[j], np.nan), "o-", label=f"width {w}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("base learning rate")
        ax.set_ylabel("final training loss")
        ax.set_title(title or f"lr sweep: {self.parametrization}")
        ax.legend(fontsize=7)
        return fig


def lr_transfer_sweep(
    make_model: ModelFactory,
    widths: Sequence[int],
    lrs: Sequence[float],
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    parametrization: str | AbcParametrization,
    steps: int = 100,
    batch_size: int | None = None,
    optimizer: str = "sgd",
    seeds: Sequence[int] = (0,),
    base_width: int | None = None,
    zero_readout: bool = False,
    diverge_factor: float = 10.0,
    progress: Callable[[float], None] | None = None,
) -> LrSweepResult:
    """Train every (width, lr) pair and record the final training loss.

    The loss is averaged over the last 10% of steps (at least one) on the minibatches seen. A run whose loss is
    non-finite or exceeds ``diverge_factor`` times its initial loss is marked diverged (``inf``). Minibatches
    are drawn with a generator seeded by ``seed`` so every (width, lr) sees the same data order.
    """
    check_callable("make_model", make_model)
    check_callable("loss_fn", loss_fn)
    widths = check_int_list("widths", widths, minimum=1, min_len=1)
    lrs = check_positive_list("lrs", lrs, min_len=1)
    steps = check_int("steps", steps, minimum=1)
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    _check_common(x, y, parametrization, seeds, base_width, zero_readout)
    diverge_factor = check_real("diverge_factor", diverge_factor)
    if diverge_factor <= 1:
        raise ValueError(f"diverge_factor must be > 1 (a multiple of the initial loss); got {diverge_factor}")
    if progress is not None:
        check_callable("progress", progress)
    n = x.shape[0]
    bs = n if batch_size is None else check_int("batch_size", batch_size, minimum=1, maximum=n)
    name = parametrization if isinstance(parametrization, str) else parametrization.name
    losses = np.zeros((len(widths), len(lrs)))
    tail = max(1, steps // 10)
    total, done = len(widths) * len(lrs) * len(seeds), 0
    for j, width in enumerate(widths):
        for i, lr in enumerate(lrs):
            finals = []
            for seed in seeds:
                torch.manual_seed(int(seed))
                model, opt = _setup(make_model, width, parametrization, lr, optimizer, base_width, zero_readout)
                gen = torch.Generator().manual_seed(int(seed))
                hist, first = [], None
                for _ in range(steps):
                    idx = torch.randperm(n, generator=gen)[:bs] if bs < n else slice(None)
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(model(x[idx]), y[idx])
                    v = float(loss.detach())
                    first = v if first is None else first
                    if not np.isfinite(v) or v > diverge_factor * max(first, 1e-12):
                        hist = [float("inf")]
                        break
                    hist.append(v)
                    loss.backward()
                    opt.step()
                finals.append(float(np.mean(hist[-tail:])))
                done += 1
                if progress is not None:
                    progress(done / total)
            losses[j, i] = float(np.mean(finals))
    return LrSweepResult(widths=widths, lrs=lrs, losses=losses, parametrization=name)
