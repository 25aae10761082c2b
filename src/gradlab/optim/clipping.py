"""Coordinate-wise clipping of update directions, as a transform and as a wrapper around any optimizer.

Pan & Li, "Toward Understanding Why Adam Converges Faster Than SGD for Transformers" (arXiv 2306.00204).
SGD's update directions on transformers are sharp (large :math:`u^\\top \\nabla^2 f\\, u`) because of a few
large coordinates; clipping them lowers the directional sharpness and raises the achievable one-step loss
reduction. For an update :math:`u` and a fraction :math:`k`:

.. math::
    \\operatorname{clip}_\\tau(u)_i = \\operatorname{sign}(u_i)\\,\\min(|u_i|, \\tau),

where :math:`\\tau` is the magnitude below which the top ``fraction`` of coordinates lie: with :math:`n`
coordinates and :math:`j = \\lfloor k n \\rfloor`, :math:`\\tau` is the :math:`(n-j)`-th smallest
:math:`|u_i|` (so the :math:`j` largest coordinates are clipped to it; ``fraction=0`` changes nothing).
``scope="per_tensor"`` takes one threshold per parameter tensor, ``scope="global"`` one threshold over all
coordinates of the update. A threshold of exactly 0 (more than ``1 - fraction`` of a tensor's coordinates are
zero, e.g. a sparse update) is not applied, so that clipping never erases an update.

Like optax's gradient transformations, the clipping composes with any update rule instead of being copied
into each optimizer: :func:`coordinate_clip` wraps a ``torch.optim.Optimizer`` (SGD, Adam, Lion, ...) and
clips the *update* :math:`\\Delta\\theta` the wrapped optimizer makes at each step (weight decay included).

The clipping does not fuse into the wrapped optimizer's single pass (``fused=True``, see
:mod:`gradlab.optim._fused`): :math:`\\tau` is an order statistic (``kthvalue``) of the whole update, known only
after every coordinate of it has been computed, so clipping needs the update materialised and a second pass. The
wrapped optimizer itself may be fused, and ``torch.compile(wrapper.step)`` works.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence, overload

import torch
from torch import Tensor
from torch.optim import Optimizer

from gradlab.core import check_choice, check_range, check_type

__all__ = ["CoordinateClip", "clip_coordinates", "coordinate_clip"]

SCOPES = ("per_tensor", "global")


def _num_clipped(n: int, fraction: float) -> int:
    return min(n, int(math.floor(fraction * n)))


def _clipped(updates: Sequence[Tensor], fraction: float, scope: str) -> list[Tensor]:
    """``clip_tau(u)`` for each update (new tensors), with per-tensor or global thresholds."""
    out: list[Tensor | None] = [None] * len(updates)
    if scope == "global":
        buckets = _bucket(updates, key=lambda u: (u.device, u.dtype))
        if len(buckets) > 1:
            raise ValueError("scope='global' needs every update on one device with one dtype")
        flat = torch.cat([u.reshape(-1) for u in updates])
        clipped = _clip_rows(flat.unsqueeze(0), fraction).squeeze(0)
        for i, (part, u) in enumerate(zip(clipped.split([u.numel() for u in updates]), updates)):
            out[i] = part.view_as(u)
        return out  # type: ignore[return-value]
    # per tensor: tensors with the same size share one batched kthvalue
    for idx in _bucket(updates, key=lambda u: (u.device, u.dtype, u.numel())).values():
        rows = torch.stack([updates[i].reshape(-1) for i in idx])
        clipped = _clip_rows(rows, fraction)
        for row, i in zip(clipped.unbind(0), idx):
            out[i] = row.view_as(updates[i])
    return out  # type: ignore[return-value]


def _bucket(updates: Sequence[Tensor], key: Callable[[Tensor], Any]) -> dict[Any, list[int]]:
    buckets: dict[Any, list[int]] = {}
    for i, u in enumerate(updates):
        buckets.setdefault(key(u), []).append(i)
    return buckets


def _clip_rows(rows: Tensor, fraction: float) -> Tensor:
    """Row-wise ``clip_tau(u)`` with each row's threshold from its own magnitudes."""
    n = rows.shape[1]
    j = _num_clipped(n, fraction)
    if j == 0 or n == 0:
        return rows.clone()
    mags = rows.abs()
    tau = mags.kthvalue(n - j, dim=1, keepdim=True).values
    tau = torch.where(tau > 0, tau, torch.full_like(tau, math.inf))
    return rows.clamp(-tau, tau)


def _check_fraction_scope(fraction: Any, scope: Any) -> tuple[float, str]:
    fraction = check_range("fraction", fraction, 0.0, 1.0, low_inclusive=True, high_inclusive=False)
    check_type("scope", scope, str)
    check_choice("scope", scope, SCOPES)
    return fraction, scope


def clip_coordinates(updates: Sequence[Tensor], fraction: float = 0.1, scope: str = "per_tensor") -> list[Tensor]:
    """Return clipped copies of ``updates``: the top ``fraction`` of coordinates clipped to the threshold.

    Args:
        updates: update directions (any shapes; real floating point).
        fraction: fraction of coordinates to clip, in [0, 1).
        scope: ``"per_tensor"`` (one threshold per tensor) or ``"global"`` (one over all coordinates).
    """
    fraction, scope = _check_fraction_scope(fraction, scope)
    updates = list(updates)
    for i, u in enumerate(updates):
        check_type(f"updates[{i}]", u, Tensor)
        if not u.is_floating_point():
            raise TypeError(f"updates[{i}] must be a real floating-point tensor; got {u.dtype}")
    if not updates:
        return []
    return _clipped(updates, fraction, scope)


class CoordinateClip(Optimizer):
    """Wrap ``optimizer`` so that each step's parameter update is coordinate-wise clipped.

    The wrapper shares ``param_groups`` and ``state`` with the wrapped optimizer, so learning-rate schedulers,
    ``zero_grad`` and ``state_dict`` work on either object. At each step it records the parameters that have
    gradients, lets the wrapped optimizer step, and replaces each update :math:`\\Delta = \\theta_{new} -
    \\theta_{old}` by :math:`\\operatorname{clip}_\\tau(\\Delta)` (see the module docstring). Unclipped
    coordinates keep exactly the wrapped optimizer's result. The wrapped optimizer's own state (momentum,
    second moments) is not altered: the clipping acts on the applied update only. Memory: one copy of the
    updated parameters during ``step``.
    """

    def __init__(self, optimizer: Optimizer, fraction: float = 0.1, scope: str = "per_tensor") -> None:
        check_type("optimizer", optimizer, Optimizer)
        fraction, scope = _check_fraction_scope(fraction, scope)
        super().__init__([p for g in optimizer.param_groups for p in g["params"]], dict(optimizer.defaults))
        self.fraction, self.scope = fraction, scope
        self.optimizer = optimizer
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state

    def __getstate__(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer, "fraction": self.fraction, "scope": self.scope,
                "defaults": self.defaults}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["optimizer"], state["fraction"], state["scope"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"CoordinateClip(fraction={self.fraction}, scope={self.scope!r}, optimizer={self.optimizer!r})"

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "optimizer" not in self.__dict__:  # during Optimizer.__init__
            super().add_param_group(param_group)
            return
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict)
        self.param_groups = self.optimizer.param_groups
        self.state = self.optimizer.state

    def _check_clippable(self, params: list[Tensor]) -> None:
        for i, p in enumerate(params):
            if not p.is_floating_point():
                raise TypeError(f"coordinate_clip needs real floating-point parameters; parameter {i} is {p.dtype} "
                                "(complex parameters: clip torch.view_as_real views instead)")
        if self.scope == "global" and len({(p.device, p.dtype) for p in params}) > 1:
            raise ValueError("scope='global' needs every parameter on one device with one dtype; got "
                             f"{sorted({(str(p.device), str(p.dtype)) for p in params})}")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Step the wrapped optimizer, then clip the update it applied (parameters are checked first)."""
        if closure is None:
            params = [p for g in self.param_groups for p in g["params"] if p.grad is not None]
        else:
            params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
        self._check_clippable(params)  # before the wrapped optimizer changes anything
        old = torch._foreach_clone(params) if params else []
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        if closure is not None:
            keep = [i for i, p in enumerate(params) if p.grad is not None]
            params, old = [params[i] for i in keep], [old[i] for i in keep]
        if not params or self.fraction == 0:
            return loss
        delta = torch._foreach_sub(params, old)
        del old
        # theta_new - (delta - clip(delta)): the excess is exactly 0 where nothing is clipped
        excess = torch._foreach_sub(delta, _clipped(delta, self.fraction, self.scope))
        torch._foreach_sub_(params, excess)
        return loss


@overload
def coordinate_clip(optimizer_or_update: Optimizer, fraction: float = ..., scope: str = ...) -> CoordinateClip: ...
@overload
def coordinate_clip(optimizer_or_update: Tensor, fraction: float = ..., scope: str = ...) -> Tensor: ...
@overload
def coordinate_clip(optimizer_or_update: Sequence[Tensor], fraction: float = ..., scope: str = ...) -> list[Tensor]: ...


def coordinate_clip(
    optimizer_or_update: Optimizer | Tensor | Sequence[Tensor], fraction: float = 0.1, scope: str = "per_tensor"
) -> CoordinateClip | Tensor | list[Tensor]:
    """Coordinate-wise clipping (Pan & Li, 2023) of an optimizer's updates or of given update tensors.

    * an optimizer -> a :class:`CoordinateClip` wrapper (``opt = coordinate_clip(torch.optim.SGD(...), 0.1)``);
    * a tensor -> its clipped copy; a list of tensors -> a list of clipped copies (:func:`clip_coordinates`).

    ``fraction`` is the share of coordinates clipped (the largest ones, in [0, 1)); ``scope`` is
    ``"per_tensor"`` or ``"global"``.
    """
    if isinstance(optimizer_or_update, Optimizer):
        return CoordinateClip(optimizer_or_update, fraction, scope)
    if isinstance(optimizer_or_update, Tensor):
        return clip_coordinates([optimizer_or_update], fraction, scope)[0]
    if isinstance(optimizer_or_update, (list, tuple)):
        return clip_coordinates(optimizer_or_update, fraction, scope)
    raise TypeError(
        "optimizer_or_update must be a torch.optim.Optimizer, a Tensor or a list of Tensors; "
        f"got {type(optimizer_or_update).__name__}"
    )
