"""Lion (EvoLved Sign Momentum), the update rule found by program search.

Chen, Liang, Huang, Real, Wang, Liu, Pham, Dong, Luong, Hsieh, Lu, Le, "Symbolic Discovery of Optimization
Algorithms", NeurIPS 2023 (arXiv 2302.06675).

With gradient :math:`g_t`, learning rate :math:`\\eta` and decoupled weight decay :math:`\\lambda`:

.. math::
    c_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t

    \\theta_t = \\theta_{t-1} - \\eta\\,(\\operatorname{sign}(c_t) + \\lambda\\,\\theta_{t-1})

    m_t = \\beta_2 m_{t-1} + (1-\\beta_2) g_t

The update direction interpolates momentum and gradient with :math:`\\beta_1`, but the momentum is tracked
with :math:`\\beta_2`. Every coordinate moves by exactly :math:`\\pm\\eta` (or 0 where :math:`c_t = 0`), so the
learning rate must be 3-10x smaller than AdamW's and :math:`\\lambda` 3-10x larger for the same effective
decay :math:`\\eta\\lambda`. The decay is applied *outside* the sign, scaled by the current learning rate
(as in the official code; some ports put it inside the sign or divide it by the initial learning rate).
There is a single state buffer, half of Adam's optimizer memory. The interpolations are computed with
``lerp`` (:math:`m + (1-\beta)(g - m)`), one pass over memory each; in float32 this rounds differently from
``beta*m + (1-beta)*g`` and can flip ``sign(c)`` where :math:`c \approx 0` (the official code uses the latter).
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor

from gradlab.core import check_positive, check_type
from gradlab.optim import _fused
from gradlab.optim._foreach import (
    ValidatedOptimizer,
    check_betas,
    check_capturable_flag,
    check_lr_any,
    group_by_device_and_dtype,
    lr_value,
    new_step_tensor,
    params_with_grad,
    restore_state_defaults,
)

__all__ = ["Lion"]


class Lion(ValidatedOptimizer):
    """Lion (Chen et al., 2023): ``theta -= lr * (sign(beta1*m + (1-beta1)*g) + weight_decay*theta)``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate :math:`\\eta` (default 1e-4, the official default).
        betas: :math:`(\\beta_1, \\beta_2)`: interpolation for the update and momentum decay (default (0.9, 0.99)).
        weight_decay: decoupled decay :math:`\\lambda`, multiplied by the current ``lr`` (default 0).
        maximize: maximize the objective instead of minimizing it.
        foreach: use the grouped ``torch._foreach_*`` path (``None``: see ``fused``). All paths give
            bit-identical results.
        fused: one pass over memory per tensor (:mod:`gradlab.optim._fused`: numba kernels on the CPU, bit-identical
            to the for-loop path; ``torch.compile`` on CUDA). ``None`` (default): fused for CPU float32/float64
            parameters when numba is installed, else torch.optim's foreach rule; ``True`` raises ``ValueError``
            where it is unavailable.
        check_finite: refuse a NaN/inf gradient before anything changes (default ``True``, see below). ``False``
            skips that check and its extra read of every gradient (the fused step then moves 5 arrays, not 6): for
            callers who guard against non-finite gradients themselves, e.g. with ``torch.amp.GradScaler``, which
            skips such steps. A non-finite gradient then freezes its coordinate's momentum at NaN, silently.
        capturable: a step that never synchronises with the device, so that it can be captured in a CUDA graph
            (``torch.optim``'s meaning; parameters on a device type it supports, see
            :func:`~gradlab.optim._foreach.capturable_device_types`, else ``ValueError``). The step counters live on
            the parameters' device and the update runs as tensor ops; a tensor ``lr`` must be on that device and is
            never read on the host (a float ``lr`` is a constant of a captured graph). Needs
            ``check_finite=False`` (raising on a NaN gradient needs a host read); not with ``fused=True``.

    State per parameter: ``step`` (0-dim tensor, counts updates) and ``exp_avg`` (the momentum :math:`m`).

    Every param group is validated (in ``__init__``, ``add_param_group``, ``load_state_dict`` and each step). A
    NaN/inf gradient raises :class:`~gradlab.optim._foreach.NonFiniteGradientError` before anything changes:
    ``sign`` maps NaN to 0, so the parameter would stay finite while its momentum turned NaN and froze that
    coordinate for good, silently. ``lr`` may be a float or a 0-dim tensor. That check reads every gradient
    once more before the update: the fused step moves 6 arrays per element (check: g; update: p, g, m in, p, m
    out) instead of 5, because no parameter may change before every gradient of every group is known finite.
    """

    _STATE_LIKE_PARAM = ("exp_avg",)

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        check_finite: bool = True,
        capturable: bool = False,
    ) -> None:
        self._check_group(dict(lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize, foreach=foreach,
                               fused=fused, check_finite=check_finite, capturable=capturable))
        defaults = dict(
            lr=lr, betas=tuple(betas), weight_decay=weight_decay, maximize=maximize, foreach=foreach,
            fused=fused, check_finite=check_finite, capturable=capturable, differentiable=False,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        restore_state_defaults(self, maximize=False, foreach=None, fused=None, check_finite=True, capturable=False)

    def _check_group(self, group: dict[str, Any]) -> None:
        capturable = check_capturable_flag(group)
        check_lr_any(group["lr"], host_read=not capturable)
        check_betas(group["betas"])
        check_positive("weight_decay", group["weight_decay"], allow_zero=True)
        check_type("maximize", group["maximize"], bool)
        check_type("check_finite", group.get("check_finite", True), bool)
        if capturable and group.get("check_finite", True):
            raise ValueError("capturable=True needs check_finite=False: refusing a NaN/inf gradient needs a host "
                             "read, which a captured step cannot make (torch.amp.GradScaler skips such steps)")
        if group["foreach"] is not None:
            check_type("foreach", group["foreach"], bool)
        _fused.check_fused_flag(group.get("fused"), group["foreach"])

    def _prepare_group(self, group: dict[str, Any]) -> tuple[list[Tensor], ...]:
        params, grads = params_with_grad("Lion", group)
        exp_avgs, steps = [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = new_step_tensor(p.device if group.get("capturable") else None)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            steps.append(state["step"])
        return params, grads, exp_avgs, steps

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # validate everything and check every gradient before changing anything
        prepared = _fused.prepare_groups(self, "Lion", torch.compiler.is_compiling(),
                                         check_finite=lambda group: group.get("check_finite", True))
        for group, tensors, impl, plan in prepared:
            if not tensors[0]:
                continue
            beta1, beta2 = group["betas"]
            kw = dict(beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], maximize=group["maximize"])
            if impl in ("traceable", "capturable"):
                _lion_traceable(*tensors, lr=group["lr"], **kw)
            elif impl == "fused":
                _lion_fused(*tensors, plan=plan, lr=lr_value(group["lr"]), **kw)
            else:
                fn = _lion_foreach if impl == "foreach" else _lion_loop
                fn(*tensors, lr=lr_value(group["lr"]), **kw)
        return loss


def _lion_loop(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], steps: list[Tensor], *,
    lr: float, beta1: float, beta2: float, weight_decay: float, maximize: bool,
) -> None:
    """Reference path: one parameter at a time (the foreach path must match it bit for bit)."""
    for p, grad, exp_avg, step_t in zip(params, grads, exp_avgs, steps):
        if maximize:
            grad = -grad
        step_t += 1
        if weight_decay != 0:
            p.mul_(1 - lr * weight_decay)
        update = exp_avg.lerp(grad, 1 - beta1).sign_()
        p.add_(update, alpha=-lr)
        exp_avg.lerp_(grad, 1 - beta2)


def _lion_foreach(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], steps: list[Tensor], *,
    lr: float, beta1: float, beta2: float, weight_decay: float, maximize: bool,
) -> None:
    """Grouped path: one ``torch._foreach_*`` call per math op and (device, dtype) bucket."""
    for p, g, m, st in group_by_device_and_dtype([params, grads, exp_avgs, steps]):
        if maximize:
            g = torch._foreach_neg(g)
        torch._foreach_add_(st, 1.0)
        if weight_decay != 0:
            torch._foreach_mul_(p, 1 - lr * weight_decay)
        update = torch._foreach_lerp(m, g, 1 - beta1)
        torch._foreach_sign_(update)
        torch._foreach_add_(p, update, alpha=-lr)
        torch._foreach_lerp_(m, g, 1 - beta2)


def _lion_fused(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], steps: list[Tensor], *, plan: _fused.Plan,
    lr: float, beta1: float, beta2: float, weight_decay: float, maximize: bool,
) -> None:
    """Single-pass path: one kernel call per (dtype, step dtype) bucket of the plan; parameters outside the
    kernels' contract take the loop path (bit-identical) on the CPU, the compiled path on CUDA."""
    kw = dict(beta1=beta1, beta2=beta2, weight_decay=weight_decay, maximize=maximize)
    for b in plan.kernel.values():
        c = b.one
        _fused.kernels().lion_step(*b.ptrs, b.sizes, b.step_one(), c(1.0), c(-1.0 if maximize else 1.0),
                                   c(1 - lr * weight_decay if weight_decay != 0 else 1.0), c(-lr), c(1 - beta1),
                                   c(1 - beta2))
    if plan.kernel:
        _fused.mark_modified(params, exp_avgs, steps)
    if not plan.rest:
        return
    for p, g, m, st in group_by_device_and_dtype(_fused.subset([params, grads, exp_avgs, steps], plan.rest)):
        device = p[0].device
        if _fused.backend_for(device) == "compile":
            h = lambda x: _fused.hyper_tensor(x, device)  # noqa: E731
            _fused.compiled(_lion_traceable)(p, g, m, st, lr=h(lr), beta1=h(beta1), beta2=h(beta2),
                                             weight_decay=h(weight_decay), maximize=maximize)
        else:
            _lion_loop(p, g, m, st, lr=lr, **kw)


def _lion_traceable(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], steps: list[Tensor], *,
    lr: Any, beta1: Any, beta2: Any, weight_decay: Any, maximize: bool,
) -> None:
    """The update in tensor ops whose hyperparameters may be 0-dim tensors: what ``torch.compile`` traces (under
    ``torch.compile(opt.step)``, as the CUDA fused path, and eagerly for ``capturable=True``). Never reads a
    tensor's value on the host."""
    for p, g, m, st in zip(params, grads, exp_avgs, steps):
        st.add_(1)
        if maximize:
            g = -g
        if isinstance(weight_decay, Tensor) or weight_decay != 0:
            p.mul_(1 - lr * weight_decay)
        update = torch.lerp(m, g, _fused.weight_like(1 - beta1, m)).sign_()
        p.sub_(update * lr)
        m.lerp_(g, _fused.weight_like(1 - beta2, m))
