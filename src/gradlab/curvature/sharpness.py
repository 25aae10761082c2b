"""Directional sharpness of an update direction (Pan & Li, "Toward Understanding Why Adam Converges Faster Than SGD
for Transformers", arXiv 2306.00204).

For the loss :math:`f` at :math:`\\theta` and an update direction :math:`d` (the optimizer moves
:math:`\\theta \\leftarrow \\theta - \\eta d`; for SGD :math:`d = \\nabla f`), the second-order Taylor model is

.. math::  f(\\theta - \\eta d) \\approx f(\\theta) - \\eta \\langle \\nabla f, d\\rangle + \\tfrac12 \\eta^2 d^\\top \\nabla^2 f\\, d .

* **directional sharpness** :math:`S(d) = d^\\top \\nabla^2 f(\\theta)\\, d`,
* **gradient correlation** :math:`\\langle \\nabla f(\\theta), d\\rangle` (positive for a descent direction),
* **optimal step** :math:`\\eta^* = \\langle \\nabla f, d\\rangle / S(d)` and **optimal local loss reduction**
  :math:`\\langle \\nabla f, d\\rangle^2 / (2 S(d))` when :math:`S(d) > 0` (``inf`` when :math:`S(d) \\le 0` and the
  correlation is non-zero: the quadratic model is unbounded below along :math:`d`; ``0`` if the correlation is 0).

By default directions are normalised to unit Euclidean norm (``normalize=True``) so that directions of different
optimizers are comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gradlab.curvature.hvp import HessianOperator, LossFn


@dataclass(frozen=True)
class DirectionalSharpness:
    """Quadratic-model statistics of one direction (floats; directions normalised if asked)."""

    sharpness: float
    gradient_correlation: float
    optimal_reduction: float
    optimal_step: float
    direction_norm: float


def _stats(s: float, c: float, norm: float) -> DirectionalSharpness:
    if s > 0:
        red, step = c * c / (2.0 * s), c / s
    elif c == 0.0:
        red, step = 0.0, 0.0
    else:
        red, step = math.inf, math.copysign(math.inf, c)
    return DirectionalSharpness(s, c, red, step, norm)


def _flat_direction(op: HessianOperator, direction: Any) -> torch.Tensor:
    names = op.param_names
    if isinstance(direction, torch.Tensor):
        if direction.ndim not in (1, 2) or direction.shape[0] != op.size:
            raise ValueError(
                f"direction must be a flat tensor of shape ({op.size},) or ({op.size}, k); got {tuple(direction.shape)}"
            )
        return direction.to(dtype=op.dtype, device=op.device)
    if isinstance(direction, dict):
        missing = [n for n in names if n not in direction]
        if missing:
            raise ValueError(f"direction is missing parameters {missing}")
        return torch.cat([direction[n].reshape(-1) for n in names]).to(dtype=op.dtype, device=op.device)
    if isinstance(direction, (list, tuple)):
        if len(direction) != len(names):
            raise ValueError(f"direction must hold {len(names)} tensors (one per parameter); got {len(direction)}")
        return torch.cat([t.reshape(-1) for t in direction]).to(dtype=op.dtype, device=op.device)
    raise TypeError(f"direction must be a tensor, dict or list of tensors; got {type(direction).__name__}")


def directional_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batch: Any,
    direction: Any,
    *,
    normalize: bool = True,
    **operator_kwargs: Any,
) -> DirectionalSharpness | list[DirectionalSharpness]:
    """Directional sharpness :math:`d^\\top H d`, gradient correlation and optimal local loss reduction.

    Args:
        model, loss_fn, batch: the objective, as for :class:`~gradlab.curvature.hvp.HessianOperator`.
        direction: the update direction ``d`` (step ``theta - lr * d``): a flat ``(P,)`` tensor, a dict
            ``name -> tensor``, a list of tensors in parameter order, or a ``(P, k)`` matrix of ``k`` directions
            (evaluated in one batched Hessian product; a list of results is returned).
        normalize: scale each direction to unit Euclidean norm first.
        operator_kwargs: forwarded to :class:`HessianOperator` (``dtype``, ``eval_mode``, ``math_sdpa``, ``params``).

    Returns:
        :class:`DirectionalSharpness` (or a list of them for a ``(P, k)`` input).
    """
    op = HessianOperator(model, loss_fn, batch, **operator_kwargs)
    D = _flat_direction(op, direction)
    single = D.ndim == 1
    D = D[:, None] if single else D
    if not torch.isfinite(D).all():
        raise ValueError("direction contains NaN or inf")
    norms = D.norm(dim=0)
    if (norms == 0).any():
        raise ValueError("direction must be non-zero")
    if normalize:
        D = D / norms
    HD = op.matmat(D)
    s = (D * HD).sum(dim=0)
    c = op.gradient @ D
    out = [_stats(float(s[i]), float(c[i]), float(norms[i])) for i in range(D.shape[1])]
    return out[0] if single else out
