"""AdaGrad-Norm: AdaGrad with one scalar step size per parameter group.

Ward, Wu & Bottou, "AdaGrad stepsizes: sharp convergence over nonconvex landscapes" (ICML 2019), the inner
optimizer of "AdAdaGrad-Norm" in Lau, Liu & Kolar, "AdAdaGrad: Adaptive Batch Size Schemes for Adaptive Gradient
Methods" (arXiv 2402.11215). With the (stochastic) gradient ``g_k`` of *all* parameters of a group,

.. math::

    b_{k+1}^2 = b_k^2 + \\lVert g_k \\rVert_2^2, \\qquad
    x_{k+1} = x_k - \\frac{\\alpha}{b_{k+1} + \\epsilon}\\, g_k ,

with ``b_0^2 = initial_accumulator_value``. ``b_{k+1}^2`` is one scalar for the whole group (not per tensor and
not per row). Because ``b_k^2 = b_0^2 + \\sum_p \\sum_{j<k} \\lVert g_{j,p} \\rVert^2``, every parameter ``p`` stores
only its own running sum of squared gradient norms (a 0-dim tensor ``sum_sq``) and the group's accumulator is
their sum; this keeps the state per parameter, so ``state_dict`` and param groups work as in torch.optim.

Weight decay is either L2 (``g <- g + wd * x``, entering the norm, like ``torch.optim.Adagrad``) or decoupled
(``x <- x (1 - lr * wd)``); both use the *parameter*, unlike the official AdAdaGrad code, which decays with the
gradient. Every parameter (1-D ones included) uses its own gradient.

The accumulator and the squared norms are kept in at least float32 (``promote_types(param.dtype, float32)``)
and the step ``g / (b + eps)`` is formed in that precision before it is cast to the parameter's dtype: in
float16, ``b^2`` overflows after a few hundred steps of unit gradients and the update would become exactly 0.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from gradlab.core.validation import check_positive, check_type
from gradlab.optim import _fused
from gradlab.optim._foreach import (
    ValidatedOptimizer,
    check_capturable_flag,
    check_lr_any,
    lr_value,
    params_with_grad,
    restore_state_defaults,
)

__all__ = ["AdaGradNorm"]

ParamsT = Iterable[torch.Tensor] | Iterable[dict[str, Any]]


class AdaGradNorm(ValidatedOptimizer):
    """Scalar-step-size AdaGrad (AdaGrad-Norm); see the module docstring for the equations.

    Args:
        params: parameters or param-group dicts.
        lr: the step size ``alpha`` (> 0); a float, so any ``torch.optim.lr_scheduler`` can change it.
        initial_accumulator_value: ``b_0^2`` (>= 0).
        eps: added to ``b_{k+1}`` before dividing (> 0 guards the first step when ``b_0 = 0`` and ``g = 0``).
        weight_decay: decay coefficient (>= 0).
        decoupled_weight_decay: ``False`` adds ``weight_decay * x`` to the gradient (L2, enters the norm);
            ``True`` multiplies ``x`` by ``1 - lr * weight_decay`` (AdamW-style).
        maximize: ascend instead of descend.
        foreach: use ``torch._foreach_*`` kernels grouped by device and dtype (``None``: see ``fused``).
        fused: the squared norms in one read of the gradients (and of the parameters with L2 decay), then the
            update in one pass (:mod:`gradlab.optim._fused`: numba kernels on the CPU, ``torch.compile`` on
            CUDA). ``None`` (default): fused for CPU float32/float64 parameters when numba is installed, else
            torch.optim's foreach rule; ``True`` raises ``ValueError`` where it is unavailable. The update equals
            the for-loop path bit for bit; the squared norms are summed in float64 in another order (the
            accumulator agrees to rounding, so the steps differ in the last bits).
        capturable: a step that never synchronises with the device, so that it can be captured in a CUDA graph
            (``torch.optim``'s meaning; parameters on a device type it supports, see
            :func:`~gradlab.optim._foreach.capturable_device_types`, else ``ValueError``). The step counters and
            the accumulator live on the parameters' device and the update runs as tensor ops; a tensor ``lr``
            must be on that device and is never read on the host (a float ``lr`` is a constant of a captured
            graph). Not with ``fused=True``.

    Every param group is validated (in ``__init__``, ``add_param_group``, ``load_state_dict`` and each step);
    a loaded state must hold a one-number ``sum_sq`` and ``step`` per parameter.
    """

    _STATE_LIKE_PARAM = ()
    _STATE_SCALARS = ("step", "sum_sq")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-2,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
    ) -> None:
        self._check_group(dict(lr=lr, initial_accumulator_value=initial_accumulator_value, eps=eps,
                               weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay,
                               maximize=maximize, foreach=foreach, fused=fused, capturable=capturable))
        defaults = dict(
            lr=lr,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            maximize=maximize,
            foreach=foreach,
            fused=fused,
            capturable=capturable,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        restore_state_defaults(self, decoupled_weight_decay=False, maximize=False, foreach=None, fused=None,
                               capturable=False)

    def _check_group(self, group: dict[str, Any]) -> None:
        lr = check_lr_any(group["lr"], host_read=not check_capturable_flag(group))
        if lr == 0:
            raise ValueError("lr must be > 0; got 0")
        check_positive("initial_accumulator_value", group["initial_accumulator_value"], allow_zero=True)
        check_positive("eps", group["eps"])
        check_positive("weight_decay", group["weight_decay"], allow_zero=True)
        check_type("decoupled_weight_decay", group["decoupled_weight_decay"], bool)
        check_type("maximize", group["maximize"], bool)
        if group["foreach"] is not None:
            check_type("foreach", group["foreach"], bool)
        _fused.check_fused_flag(group.get("fused"), group["foreach"])

    _FUSED_SCALAR_LISTS = (2,)  # the per-tensor sums of squares: one element each (gradlab.optim._fused.make_plan)

    def _prepare_group(self, group: dict[str, Any]) -> tuple[list, list, list, list]:
        params, grads = params_with_grad("AdaGradNorm", group)
        sums, steps = [], []
        for p in params:
            state = self.state[p]
            if len(state) == 0:
                state["step"] = torch.zeros((), dtype=torch.float32,
                                            device=p.device if group.get("capturable") else None)
                state["sum_sq"] = torch.zeros((), dtype=_acc_dtype(p.dtype), device=p.device)
            sums.append(state["sum_sq"])
            steps.append(state["step"])
        return params, grads, sums, steps

    def accumulator(self, group_index: int = 0) -> torch.Tensor:
        """The group's current ``b_k^2`` (``initial_accumulator_value`` plus every squared gradient norm seen)."""
        group = self.param_groups[group_index]
        sums = [self.state[p]["sum_sq"] for p in group["params"] if "sum_sq" in self.state.get(p, {})]
        return _group_accumulator(sums, float(group["initial_accumulator_value"]))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        """Perform one update; ``closure`` (re-evaluating the loss) is optional."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # validate everything before changing anything
        prepared = _fused.prepare_groups(self, "AdaGradNorm", torch.compiler.is_compiling())
        for group, (params, grads, sums, steps), impl, plan in prepared:
            if not params:
                continue
            # every parameter of the group with state enters b (also those without a gradient this step); when
            # every parameter has a gradient, that is ``sums`` itself (same tensors, same order)
            if len(params) == len(group["params"]):
                all_sums = sums
            else:
                all_sums = [self.state[p]["sum_sq"] for p in group["params"] if "sum_sq" in self.state.get(p, {})]
            fn = {"fused": _fused_adagradnorm, "foreach": _multi_tensor_adagradnorm, "loop": _single_tensor_adagradnorm,
                  "traceable": _traceable_adagradnorm, "capturable": _traceable_adagradnorm}[impl]
            extra = {"plan": plan} if impl == "fused" else {}
            fn(
                params, grads, sums, steps, all_sums, **extra,
                lr=group["lr"] if impl in ("traceable", "capturable") else lr_value(group["lr"]),
                initial_accumulator_value=float(group["initial_accumulator_value"]),
                eps=float(group["eps"]),
                weight_decay=float(group["weight_decay"]),
                decoupled=bool(group["decoupled_weight_decay"]),
                maximize=bool(group["maximize"]),
            )
        return loss


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in at least float32 (float16/bfloat16 sums of squares overflow or stall)."""
    return torch.promote_types(dtype, torch.float32)


def _group_accumulator(sums: list[torch.Tensor], initial: float) -> torch.Tensor:
    """``b^2 = initial + sum_p sum_sq_p``, summed in a fixed order in the widest dtype present."""
    if not sums:
        return torch.tensor(initial)
    if all(s.is_cpu for s in sums):  # one device: stack promotes to the widest dtype exactly like .to() would
        return torch.stack(sums).sum() + initial
    dtype = sums[0].dtype
    for s in sums[1:]:
        dtype = torch.promote_types(dtype, s.dtype)
    device = sums[0].device
    stacked = torch.stack([s.to(device=device, dtype=dtype) for s in sums])
    return stacked.sum() + initial


def _single_tensor_adagradnorm(
    params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor], steps: list[torch.Tensor],
    all_sums: list[torch.Tensor], *, lr: float, initial_accumulator_value: float, eps: float,
    weight_decay: float, decoupled: bool, maximize: bool,
) -> None:
    directions = []
    for p, g, s, st in zip(params, grads, sums, steps):
        d = -g if maximize else g
        if weight_decay != 0 and not decoupled:
            d = d.add(p, alpha=weight_decay)
        s.add_(torch.linalg.vector_norm(d, dtype=s.dtype).square())
        st.add_(1)
        directions.append(d)
    denom = _group_accumulator(all_sums, initial_accumulator_value).sqrt().add(eps)
    for p, d in zip(params, directions):
        if weight_decay != 0 and decoupled:
            p.mul_(1 - lr * weight_decay)
        acc = _acc_dtype(p.dtype)
        if acc == p.dtype:
            p.add_(d / denom.to(device=p.device, dtype=p.dtype), alpha=-lr)
        else:  # low precision: form the step in float32, then cast
            p.add_((d.to(acc) / denom.to(device=p.device, dtype=acc)).mul_(-lr).to(p.dtype))


def _multi_tensor_adagradnorm(
    params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor], steps: list[torch.Tensor],
    all_sums: list[torch.Tensor], *, lr: float, initial_accumulator_value: float, eps: float,
    weight_decay: float, decoupled: bool, maximize: bool,
) -> None:
    grouped = Optimizer._group_tensors_by_device_and_dtype([params, grads, sums, steps])
    directions: list[tuple[list[torch.Tensor], list[torch.Tensor]]] = []
    for (dev_params, dev_grads, dev_sums, dev_steps), _ in grouped.values():
        d = torch._foreach_neg(dev_grads) if maximize else list(dev_grads)
        if weight_decay != 0 and not decoupled:
            d = torch._foreach_add(d, dev_params, alpha=weight_decay)
        norms = torch._foreach_norm(d, dtype=dev_sums[0].dtype)
        torch._foreach_add_(dev_sums, torch._foreach_mul(norms, norms))
        torch._foreach_add_(dev_steps, 1)
        directions.append((dev_params, d))
    denom = _group_accumulator(all_sums, initial_accumulator_value).sqrt().add(eps)
    for dev_params, d in directions:
        if weight_decay != 0 and decoupled:
            torch._foreach_mul_(dev_params, 1 - lr * weight_decay)
        pdtype = dev_params[0].dtype
        acc = _acc_dtype(pdtype)
        if acc == pdtype:
            scaled = torch._foreach_div(d, denom.to(device=dev_params[0].device, dtype=pdtype))
            torch._foreach_add_(dev_params, scaled, alpha=-lr)
        else:  # low precision: form the step in float32, then cast
            wide = torch._foreach_div([t.to(acc) for t in d], denom.to(device=dev_params[0].device, dtype=acc))
            torch._foreach_mul_(wide, -lr)
            torch._foreach_add_(dev_params, [t.to(pdtype) for t in wide])


def _fused_adagradnorm(
    params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor], steps: list[torch.Tensor],
    all_sums: list[torch.Tensor], *, plan: _fused.Plan, lr: float, initial_accumulator_value: float, eps: float,
    weight_decay: float, decoupled: bool, maximize: bool,
) -> None:
    """Fused path: per kernel bucket one call summing the squared norms (one read of ``g``, and of ``p`` with L2
    decay), the scalar ``b`` (from that call when one bucket is the whole group, else as in the loop path), then
    one call updating ``p`` (read ``p``, ``g``; write ``p``).
    On CUDA the whole group is one compiled graph; other CPU layouts take the loop path's arithmetic."""
    kw = dict(weight_decay=weight_decay, decoupled=decoupled, maximize=maximize)
    rest = _fused.subset([params, grads, sums, steps], plan.rest)
    if any(_fused.backend_for(p.device) == "compile" for p in rest[0]):
        device = params[0].device
        _fused.compiled(_traceable_adagradnorm)(
            params, grads, sums, steps, all_sums, lr=_fused.hyper_tensor(lr, device),
            initial_accumulator_value=initial_accumulator_value, eps=eps, **kw)
        return
    l2 = weight_decay if weight_decay != 0 and not decoupled else 0.0
    gsign = -1.0 if maximize else 1.0
    denoms = [_fused.kernels().sum_squares(*b.ptrs, b.sizes, b.step_one(), b.one(gsign), b.one(l2),
                                           initial_accumulator_value, eps) for b in plan.kernel.values()]
    directions = _directions_and_accumulate(*rest, **kw) if plan.rest else []
    if all_sums is sums and len(plan.kernel) == 1 and not plan.rest:
        # one bucket holds the whole group: its kernel computed the denominator (no tensor ops: ~40 us less per
        # step); numba returns it as a Python float holding the dtype's value exactly
        denom_value = next(iter(plan.kernel.values())).one(denoms[0])
    else:
        denom = _group_accumulator(all_sums, initial_accumulator_value).sqrt().add(eps)
        if plan.rest:
            _apply_directions(rest[0], directions, denom, lr=lr, weight_decay=weight_decay, decoupled=decoupled)
        denom_value = None
    for b in plan.kernel.values():
        c = b.one
        _fused.kernels().adagradnorm_step(
            b.ptrs[0], b.ptrs[1], b.sizes, c(gsign), c(l2),
            c(1 - lr * weight_decay if weight_decay != 0 and decoupled else 1.0),
            denom_value if denom_value is not None else c(float(denom.to(dtype=b.dtype))), c(-lr))
    if plan.kernel:
        _fused.mark_modified(params, sums, steps)


def _traceable_adagradnorm(
    params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor], steps: list[torch.Tensor],
    all_sums: list[torch.Tensor], *, lr: Any, initial_accumulator_value: float, eps: float,
    weight_decay: float, decoupled: bool, maximize: bool,
) -> None:
    """Tensor-op update for ``torch.compile(opt.step)``, the CUDA fused path and ``capturable=True``: ``lr`` may be
    a 0-dim tensor and is never read on the host; the accumulator stays on the device."""
    directions = _directions_and_accumulate(params, grads, sums, steps, weight_decay=weight_decay,
                                            decoupled=decoupled, maximize=maximize)
    denom = _group_accumulator(all_sums, initial_accumulator_value).sqrt().add(eps)
    _apply_directions(params, directions, denom, lr=lr, weight_decay=weight_decay, decoupled=decoupled)


def _directions_and_accumulate(
    params: list[torch.Tensor], grads: list[torch.Tensor], sums: list[torch.Tensor], steps: list[torch.Tensor], *,
    weight_decay: float, decoupled: bool, maximize: bool,
) -> list[torch.Tensor]:
    directions = []
    for p, g, s, st in zip(params, grads, sums, steps):
        d = -g if maximize else g
        if weight_decay != 0 and not decoupled:
            d = d.add(p, alpha=weight_decay)
        s.add_(torch.linalg.vector_norm(d, dtype=s.dtype).square())
        st.add_(1)
        directions.append(d)
    return directions


def _apply_directions(params: list[torch.Tensor], directions: list[torch.Tensor], denom: torch.Tensor, *, lr: Any,
                      weight_decay: float, decoupled: bool) -> None:
    """``p <- p (1 - lr wd) - lr d / denom`` with the loop path's arithmetic (``lr`` a float), or in tensor ops
    that never read a tensor ``lr`` on the host."""
    for p, d in zip(params, directions):
        if weight_decay != 0 and decoupled:
            p.mul_(1 - lr * weight_decay)
        acc = _acc_dtype(p.dtype)
        den = denom.to(device=p.device, dtype=acc)
        if isinstance(lr, torch.Tensor):
            p.sub_((d.to(acc) / den * lr.to(device=p.device)).to(p.dtype))
        elif acc == p.dtype:
            p.add_(d / den, alpha=-lr)
        else:  # low precision: form the step in float32, then cast
            p.add_((d.to(acc) / den).mul_(-lr).to(p.dtype))
