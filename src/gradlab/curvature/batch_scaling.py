"""Batch-size-aware learning rates from the spectrum of the mini-batch Hessian (Granziol, Zohren & Roberts,
"Learning Rates as a Function of Batch Size: A Random Matrix Theory Approach to Neural Network Training", JMLR 2022,
arXiv 2006.09092).

**Model.** The mini-batch Hessian is the full (empirical) Hessian plus a noise matrix whose variance scales like
:math:`1/B - 1/N`. Spiked random-matrix theory then predicts that the top eigenvalue of the batch-``B`` Hessian
exceeds the full-batch one by an amount that shrinks like :math:`1/B`:

.. math:: \\lambda_{max}(H_B) \\approx \\lambda_{full} + c / B .

Since gradient descent on a quadratic is stable for :math:`\\eta < 2/\\lambda_{max}`, the largest stable learning rate
grows with :math:`B` while the :math:`c/B` term dominates: **linearly for SGD** and, by the paper's analysis of adaptive
preconditioning, **like** :math:`\\sqrt{B}` **for adaptive methods (Adam)**; it saturates once
:math:`\\lambda_{full}` dominates.

This module provides

* :func:`batch_hessian_top_eigenvalues` measures :math:`\\lambda_{max}(H_B)` (Lanczos on HVPs, averaged over random
  batches) for several batch sizes, plus the full-batch value;
* :func:`fit_batch_law` least-squares fits :math:`\\lambda_{full} + c/B`;
* :func:`scale_learning_rate` applies the ``linear`` (SGD) or ``sqrt`` (adaptive) scaling rule;
* :func:`bisect_max_stable_lr` finds the largest stable learning rate of a training routine by log-scale bisection;
* :class:`LanczosLR` is the on-the-fly learner: a ``torch.optim.lr_scheduler.LRScheduler`` that every ``interval``
  steps runs Lanczos on a fresh mini-batch Hessian and sets the learning rate (and optionally heavy-ball momentum)
  from its extreme eigenvalues. Without momentum :math:`\\eta = s/\\lambda_{max}` (``s = lr_scale``, ``s < 2`` is the
  quadratic stability region; ``s = 1`` is the per-direction optimal step for the sharpest direction). With momentum it
  uses Polyak's optimal heavy-ball parameters for a quadratic with spectrum in :math:`[\\mu, L]`:
  :math:`\\eta = s \\cdot 4/(\\sqrt L + \\sqrt\\mu)^2`, :math:`\\rho = ((\\sqrt L - \\sqrt\\mu)/(\\sqrt L + \\sqrt\\mu))^2`,
  with :math:`L = \\lambda_{max}` and :math:`\\mu = \\max(\\lambda_{min}, L/\\kappa_{max})` (the Hessian of a network is
  indefinite, so the condition number is capped). The paper describes such a learner; its exact formulas could not be
  checked against the PDF, so these are the classical quadratic rules, stated here explicitly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from gradlab.core import check_choice, check_int, check_positive, check_range
from gradlab.curvature.hvp import CurvatureOperator, HessianOperator, LossFn, as_operator
from gradlab.curvature.lanczos import lanczos

SCALING_RULES = ("linear", "sqrt")


def scale_learning_rate(base_lr: float, base_batch_size: int, batch_size: int, rule: str = "linear") -> float:
    """Scale a learning rate tuned at ``base_batch_size`` to ``batch_size``.

    ``linear`` (SGD): :math:`\\eta_B = \\eta_0 B/B_0`; ``sqrt`` (Adam and other adaptive methods):
    :math:`\\eta_B = \\eta_0 \\sqrt{B/B_0}`. Valid in the noise-dominated regime (small ``B``).
    """
    lr = check_positive("base_lr", base_lr)
    b0 = check_int("base_batch_size", base_batch_size, minimum=1)
    b = check_int("batch_size", batch_size, minimum=1)
    check_choice("rule", rule, SCALING_RULES)
    ratio = b / b0
    return lr * (ratio if rule == "linear" else math.sqrt(ratio))


@dataclass(frozen=True)
class BatchSpectrum:
    """Top Hessian eigenvalue per batch size: ``lambdas[i, j]`` is batch ``j`` of size ``batch_sizes[i]``."""

    batch_sizes: list[int]
    lambdas: np.ndarray
    lambda_full: float

    @property
    def mean(self) -> np.ndarray:
        return self.lambdas.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        return self.lambdas.std(axis=1, ddof=1) if self.lambdas.shape[1] > 1 else np.zeros(len(self.batch_sizes))

    @property
    def excess_times_batch(self) -> np.ndarray:
        """:math:`(\\lambda_B - \\lambda_{full}) B`, constant under the :math:`c/B` law."""
        return (self.mean - self.lambda_full) * np.asarray(self.batch_sizes, dtype=float)


def top_eigenvalue(operator: Any, num_iters: int = 20, generator: torch.Generator | None = None) -> float:
    """Largest eigenvalue by Lanczos (signed; not the largest magnitude)."""
    return float(lanczos(as_operator(operator), num_iters, generator=generator).top[0])


def batch_hessian_top_eigenvalues(
    model: nn.Module,
    loss_fn: LossFn,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_sizes: Sequence[int],
    *,
    num_batches: int = 4,
    num_iters: int = 20,
    full_batch: bool = True,
    generator: torch.Generator | None = None,
    progress: Callable[[float, str], None] | None = None,
    **operator_kwargs: Any,
) -> BatchSpectrum:
    """Measure :math:`\\lambda_{max}(H_B)` on ``num_batches`` random batches (without replacement) per batch size.

    ``operator_kwargs`` go to :class:`~gradlab.curvature.hvp.HessianOperator` (``dtype``, ``eval_mode``, ...).
    The full-batch value uses all of ``inputs`` (set ``full_batch=False`` to skip it; it is then ``nan``).
    """
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError("inputs and targets must be tensors")
    n = inputs.shape[0]
    if targets.shape[0] != n:
        raise ValueError(f"inputs and targets must have the same length; got {n} and {targets.shape[0]}")
    sizes = [check_int("batch_sizes[i]", int(b), minimum=1, maximum=n) for b in batch_sizes]
    if not sizes:
        raise ValueError("batch_sizes must not be empty")
    nb = check_int("num_batches", num_batches, minimum=1)
    lam = np.zeros((len(sizes), nb))
    total = len(sizes) * nb + 1
    for i, b in enumerate(sizes):
        for j in range(nb):
            idx = torch.randperm(n, generator=generator)[:b]
            op = HessianOperator(model, loss_fn, (inputs[idx], targets[idx]), **operator_kwargs)
            lam[i, j] = top_eigenvalue(op, num_iters, generator)
            if progress is not None:
                progress((i * nb + j + 1) / total, f"lambda_max at B={b}")
    full = math.nan
    if full_batch:
        full = top_eigenvalue(HessianOperator(model, loss_fn, (inputs, targets), **operator_kwargs), num_iters, generator)
    return BatchSpectrum(sizes, lam, full)


@dataclass(frozen=True)
class BatchLawFit:
    """:math:`\\lambda_B \\approx \\lambda_{full} + c/B` fitted by least squares."""

    lambda_full: float
    c: float
    rmse: float

    def predict(self, batch_size: Any) -> Any:
        return self.lambda_full + self.c / np.asarray(batch_size, dtype=float)

    def max_stable_lr(self, batch_size: Any) -> Any:
        """:math:`2/\\lambda_B`, the gradient-descent stability limit on the batch quadratic."""
        return 2.0 / self.predict(batch_size)


def fit_batch_law(batch_sizes: Sequence[float], lambdas: Sequence[float], lambda_full: float | None = None) -> BatchLawFit:
    """Least-squares fit of :math:`\\lambda_B = a + c/B` (``a`` fixed to ``lambda_full`` if given)."""
    B = np.asarray(batch_sizes, dtype=float)
    y = np.asarray(lambdas, dtype=float)
    if B.ndim != 1 or B.shape != y.shape:
        raise ValueError(f"batch_sizes and lambdas must be 1-D of equal length; got {B.shape} and {y.shape}")
    if not (np.isfinite(B).all() and np.isfinite(y).all()) or (B <= 0).any():
        raise ValueError("batch_sizes must be positive and finite, lambdas finite")
    if lambda_full is None:
        if B.size < 2:
            raise ValueError("need at least two batch sizes to fit both lambda_full and c")
        X = np.stack([np.ones_like(B), 1.0 / B], axis=1)
        (a, c), *_ = np.linalg.lstsq(X, y, rcond=None)
    else:
        a = float(lambda_full)
        c = float(((y - a) / B).sum() / (1.0 / B**2).sum())
    rmse = float(np.sqrt(np.mean((a + c / B - y) ** 2)))
    return BatchLawFit(float(a), float(c), rmse)


def bisect_max_stable_lr(
    is_stable: Callable[[float], bool], low: float, high: float, num_steps: int = 10
) -> float:
    """Largest learning rate with ``is_stable(lr) == True`` by bisection on :math:`\\log \\eta` in ``[low, high]``.

    Assumes stability is monotone in the learning rate. Returns ``low`` if even ``low`` is unstable (checked first)
    and ``high`` if ``high`` is stable.
    """
    lo, hi = check_positive("low", low), check_positive("high", high)
    if hi <= lo:
        raise ValueError(f"high must be > low; got low={low}, high={high}")
    check_int("num_steps", num_steps, minimum=1)
    if not is_stable(lo):
        return lo
    if is_stable(hi):
        return hi
    for _ in range(num_steps):
        mid = math.sqrt(lo * hi)
        if is_stable(mid):
            lo = mid
        else:
            hi = mid
    return lo


class LanczosLR(LRScheduler):
    """On-the-fly learning-rate (and heavy-ball momentum) learner from periodic Lanczos estimates.

    Args:
        optimizer: any ``torch.optim`` optimizer.
        curvature_fn: called every ``interval`` steps; returns a fresh :class:`CurvatureOperator` (typically a
            :class:`HessianOperator` on a new mini-batch of the training batch size, so that the estimate is
            :math:`\\lambda_{max}(H_B)` for the ``B`` in use).
        interval: steps between estimates.
        num_iters: Lanczos steps per estimate.
        lr_scale: ``s`` in :math:`\\eta = s/\\lambda_{max}` (or ``s`` times Polyak's heavy-ball step).
        momentum: also set heavy-ball momentum (``group['momentum']`` for SGD-like optimizers, ``betas[0]`` for
            Adam-like ones).
        kappa_max: cap on the condition number used for momentum.
        max_lr: optional upper bound on the learning rate (guards tiny or negative curvature estimates).
        ema: exponential smoothing of the eigenvalue estimates across refreshes (0 = use the latest).

    Use like any scheduler: ``sched.step()`` after ``optimizer.step()``. ``history`` records
    ``(step, lambda_max, lambda_min, lr, momentum)`` at each refresh.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        curvature_fn: Callable[[], CurvatureOperator],
        *,
        interval: int = 100,
        num_iters: int = 20,
        lr_scale: float = 1.0,
        momentum: bool = False,
        kappa_max: float = 1e3,
        max_lr: float | None = None,
        ema: float = 0.0,
        generator: torch.Generator | None = None,
        last_epoch: int = -1,
    ) -> None:
        if not callable(curvature_fn):
            raise TypeError("curvature_fn must be a callable returning a CurvatureOperator")
        self.curvature_fn = curvature_fn
        self.interval = check_int("interval", interval, minimum=1)
        self.num_iters = check_int("num_iters", num_iters, minimum=1)
        self.lr_scale = check_positive("lr_scale", lr_scale)
        self.momentum = bool(momentum)
        self.kappa_max = check_positive("kappa_max", kappa_max)
        if self.kappa_max < 1:
            raise ValueError(f"kappa_max must be >= 1; got {kappa_max}")
        self.max_lr = None if max_lr is None else check_positive("max_lr", max_lr)
        self.ema = check_range("ema", ema, 0.0, 1.0)
        self.generator = generator
        self.lambda_max: float | None = None
        self.lambda_min: float | None = None
        self.current_momentum: float | None = None
        self.history: list[tuple[int, float, float, float, float | None]] = []
        super().__init__(optimizer, last_epoch)

    def _estimate(self) -> None:
        op = self.curvature_fn()
        res = lanczos(as_operator(op), self.num_iters, generator=self.generator)
        top, bottom = float(res.top[0]), float(res.bottom[0])
        if not (math.isfinite(top) and math.isfinite(bottom)):
            raise ValueError("the curvature estimate is not finite (NaN/inf in the Hessian products)")
        if self.lambda_max is None or self.ema == 0.0:
            self.lambda_max, self.lambda_min = top, bottom
        else:
            assert self.lambda_min is not None
            self.lambda_max = self.ema * self.lambda_max + (1 - self.ema) * top
            self.lambda_min = self.ema * self.lambda_min + (1 - self.ema) * bottom

    def _rates(self) -> tuple[float, float | None]:
        assert self.lambda_max is not None and self.lambda_min is not None
        L = self.lambda_max
        if L <= 0:
            lr = self.max_lr if self.max_lr is not None else float(self.base_lrs[0])
            return lr, (0.0 if self.momentum else None)
        if not self.momentum:
            lr, mom = self.lr_scale / L, None
        else:
            mu = min(max(self.lambda_min, L / self.kappa_max), L)
            sl, sm = math.sqrt(L), math.sqrt(mu)
            lr = self.lr_scale * 4.0 / (sl + sm) ** 2
            mom = ((sl - sm) / (sl + sm)) ** 2
        if self.max_lr is not None:
            lr = min(lr, self.max_lr)
        return lr, mom

    def get_lr(self) -> list[float]:  # type: ignore[override]
        if self.last_epoch % self.interval != 0 and self.lambda_max is not None:
            return [group["lr"] for group in self.optimizer.param_groups]
        self._estimate()
        lr, mom = self._rates()
        self.current_momentum = mom
        if mom is not None:
            for group in self.optimizer.param_groups:
                if "momentum" in group:
                    group["momentum"] = mom
                elif "betas" in group:
                    group["betas"] = (mom, group["betas"][1])
                else:
                    raise ValueError("momentum=True needs an optimizer with a 'momentum' or 'betas' hyperparameter")
        assert self.lambda_max is not None and self.lambda_min is not None
        self.history.append((self.last_epoch, self.lambda_max, self.lambda_min, lr, mom))
        return [lr for _ in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "curvature_fn", "generator")}
