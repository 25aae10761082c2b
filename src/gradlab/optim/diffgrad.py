"""diffGrad: Adam whose step is damped where the gradient barely changes.

Dubey, Chakraborty, Roy, Mukherjee, Singh, Chaudhuri, "diffGrad: An Optimization Method for Convolutional
Neural Networks", IEEE TNNLS 2020 (arXiv 1909.11015).

With gradient :math:`g_t` (plus :math:`\\lambda\\theta_{t-1}` for L2 weight decay), per coordinate:

.. math::
    m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\qquad v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2

    \\xi_t = \\operatorname{sigmoid}(|g_{t-1} - g_t|) \\in [0.5, 1)   \\quad (g_0 = 0)

    \\theta_t = \\theta_{t-1} - \\alpha\\, \\xi_t\\, \\hat m_t / (\\sqrt{\\hat v_t} + \\epsilon),
    \\qquad \\hat m_t = m_t/(1-\\beta_1^t),\\ \\hat v_t = v_t/(1-\\beta_2^t)

The friction coefficient :math:`\\xi_t` ("DFC") halves Adam's step where the gradient is nearly constant
(flat regions near an optimum) and keeps it where the gradient changes fast. :math:`\\epsilon` is added to
the bias-corrected :math:`\\sqrt{\\hat v_t}` as in the paper and in ``torch.optim.Adam``, so that with
:math:`\\xi_t = 1` this optimizer performs exactly Adam's step (the official code adds it before the bias
correction; the difference is O(eps)).

Implementation notes:

* :math:`g_{t-1}` is stored as a *copy*. The original code kept a reference to ``p.grad``; with in-place
  ``zero_grad`` the "previous" gradient was then the current one and :math:`\\xi` was frozen at 0.5
  (shivram1987/diffGrad#2).
* Weight decay is explicit: ``decoupled_weight_decay=False`` adds :math:`\\lambda\\theta` to the gradient
  (L2, as the original code, before the moments and the friction coefficient);
  ``decoupled_weight_decay=True`` shrinks :math:`\\theta \\leftarrow \\theta(1-\\alpha\\lambda)` (AdamW style).
* ``p.grad`` is never modified.
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
    lr_value,
    group_by_device_and_dtype,
    new_step_tensor,
    params_with_grad,
    restore_state_defaults,
    step_values,
)

__all__ = ["DiffGrad"]


class DiffGrad(ValidatedOptimizer):
    """diffGrad (Dubey et al., 2020): Adam scaled by the friction coefficient ``sigmoid(|g_prev - g|)``.

    Args:
        params: parameters or parameter groups.
        lr: learning rate :math:`\\alpha` (default 1e-3).
        betas: :math:`(\\beta_1, \\beta_2)` for the first and second moments (default (0.9, 0.999)).
        eps: added to :math:`\\sqrt{\\hat v_t}` (default 1e-8).
        weight_decay: :math:`\\lambda` (default 0).
        decoupled_weight_decay: ``False`` adds :math:`\\lambda\\theta` to the gradient (L2, the paper's code);
            ``True`` multiplies :math:`\\theta` by :math:`1-\\alpha\\lambda` (AdamW style).
        maximize: maximize the objective instead of minimizing it.
        foreach: use the grouped ``torch._foreach_*`` path (``None``: see ``fused``); bit-identical to the
            for-loop path.
        fused: one pass over memory per tensor (:mod:`gradlab.optim._fused`: numba kernels on the CPU,
            ``torch.compile`` on CUDA). ``None`` (default): fused for CPU float32/float64 parameters when numba is
            installed, else torch.optim's foreach rule; ``True`` raises ``ValueError`` where it is unavailable.
            Equal to the for-loop path up to a few ulps per step: ``sqrt`` and the sigmoid differ (1 and 1.5 ulp)
            and ``sigmoid * m / (sqrt(v) / c2 + eps)`` takes one division instead of three (see
            :mod:`gradlab.optim._fused_numba`).
        capturable: a step that never synchronises with the device, so that it can be captured in a CUDA graph
            (``torch.optim``'s meaning; parameters on a device type it supports, see
            :func:`~gradlab.optim._foreach.capturable_device_types`, else ``ValueError``). The step counters live on
            the parameters' device, the bias corrections are computed there, and the update runs as tensor ops; a
            tensor ``lr`` must be on that device and is never read on the host (a float ``lr`` is a constant of a
            captured graph). Not with ``fused=True``.

    State per parameter: ``step`` (0-dim tensor), ``exp_avg``, ``exp_avg_sq`` and ``prev_grad`` (a copy of the
    last gradient used, including the L2 term and the sign flip of ``maximize``).

    Every param group is validated (in ``__init__``, ``add_param_group``, ``load_state_dict`` and each step);
    ``lr`` may be a float or a 0-dim tensor.
    """

    _STATE_LIKE_PARAM = ("exp_avg", "exp_avg_sq", "prev_grad")

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
    ) -> None:
        self._check_group(dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                               decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach,
                               fused=fused, capturable=capturable))
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, foreach=foreach, fused=fused,
            capturable=capturable, differentiable=False,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        restore_state_defaults(self, decoupled_weight_decay=False, maximize=False, foreach=None, fused=None,
                               capturable=False)

    def _check_group(self, group: dict[str, Any]) -> None:
        check_lr_any(group["lr"], host_read=not check_capturable_flag(group))
        check_betas(group["betas"])
        check_positive("eps", group["eps"])
        check_positive("weight_decay", group["weight_decay"], allow_zero=True)
        check_type("decoupled_weight_decay", group["decoupled_weight_decay"], bool)
        check_type("maximize", group["maximize"], bool)
        if group["foreach"] is not None:
            check_type("foreach", group["foreach"], bool)
        _fused.check_fused_flag(group.get("fused"), group["foreach"])

    def _prepare_group(self, group: dict[str, Any]) -> tuple[list[Tensor], ...]:
        params, grads = params_with_grad("DiffGrad", group)
        exp_avgs, exp_avg_sqs, prev_grads, steps = [], [], [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = new_step_tensor(p.device if group.get("capturable") else None)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["prev_grad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            prev_grads.append(state["prev_grad"])
            steps.append(state["step"])
        return params, grads, exp_avgs, exp_avg_sqs, prev_grads, steps

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # validate everything before changing anything
        for group, tensors, impl, plan in _fused.prepare_groups(self, "DiffGrad", torch.compiler.is_compiling()):
            if not tensors[0]:
                continue
            beta1, beta2 = group["betas"]
            kw = dict(beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                      decoupled=group["decoupled_weight_decay"], maximize=group["maximize"])
            if impl in ("traceable", "capturable"):
                _diffgrad_traceable(*tensors, lr=group["lr"], **kw)
            elif impl == "fused":
                _diffgrad_fused(*tensors, plan=plan, lr=lr_value(group["lr"]), **kw)
            else:
                fn = _diffgrad_foreach if impl == "foreach" else _diffgrad_loop
                fn(*tensors, lr=lr_value(group["lr"]), **kw)
        return loss


def _diffgrad_loop(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
    prev_grads: list[Tensor], steps: list[Tensor], *, lr: float, beta1: float, beta2: float, eps: float,
    weight_decay: float, decoupled: bool, maximize: bool,
) -> None:
    """Reference path: one parameter at a time (the foreach path must match it bit for bit)."""
    for p, grad, exp_avg, exp_avg_sq, prev_grad, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, prev_grads, steps):
        if maximize:
            grad = -grad
        if weight_decay != 0:
            if decoupled:
                p.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(p, alpha=weight_decay)
        step_t += 1
        step = step_t.item()
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        # the friction coefficient is formed in the g_prev buffer (no allocation), then g is copied in
        friction_m = prev_grad.sub_(grad).abs_().sigmoid_().mul_(exp_avg)
        step_size = lr / (1 - beta1**step)
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        p.addcdiv_(friction_m, denom, value=-step_size)
        prev_grad.copy_(grad)


def _diffgrad_foreach(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
    prev_grads: list[Tensor], steps: list[Tensor], *, lr: float, beta1: float, beta2: float, eps: float,
    weight_decay: float, decoupled: bool, maximize: bool,
) -> None:
    """Grouped path: one ``torch._foreach_*`` call per math op and (device, dtype) bucket."""
    for p, g, m, v, prev, st in group_by_device_and_dtype([params, grads, exp_avgs, exp_avg_sqs, prev_grads, steps]):
        if maximize:
            g = torch._foreach_neg(g)
        if weight_decay != 0:
            if decoupled:
                torch._foreach_mul_(p, 1 - lr * weight_decay)
            else:
                g = torch._foreach_add(g, p, alpha=weight_decay)
        torch._foreach_add_(st, 1.0)
        step = step_values(st)
        torch._foreach_lerp_(m, g, 1 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, 1 - beta2)
        torch._foreach_sub_(prev, g)  # prev now holds the friction coefficient times m, then g again
        torch._foreach_abs_(prev)
        torch._foreach_sigmoid_(prev)
        torch._foreach_mul_(prev, m)
        step_size = [-(lr / (1 - beta1**s)) for s in step]
        bias_correction2_sqrt = [(1 - beta2**s) ** 0.5 for s in step]
        denom = torch._foreach_sqrt(v)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(p, prev, denom, step_size)
        torch._foreach_copy_(prev, g)


def _diffgrad_fused(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
    prev_grads: list[Tensor], steps: list[Tensor], *, plan: _fused.Plan, lr: float, beta1: float, beta2: float,
    eps: float, weight_decay: float, decoupled: bool, maximize: bool,
) -> None:
    """Single-pass path: one kernel call per (dtype, step dtype) bucket of the plan; parameters outside the
    kernels' contract take the loop path on the CPU, the compiled path on CUDA."""
    kw = dict(beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, decoupled=decoupled, maximize=maximize)
    l2 = weight_decay if weight_decay != 0 and not decoupled else 0.0
    decay = 1 - lr * weight_decay if weight_decay != 0 and decoupled else 1.0
    for b in plan.kernel.values():
        c = b.one
        k = _fused.kernels()
        k.diffgrad_step(*b.ptrs, b.sizes, b.step_one(), c(1.0), c(-1.0 if maximize else 1.0), c(l2), c(decay),
                        float(lr), float(beta1), float(beta2), 0.5, c(1 - beta1), c(beta2), c(1 - beta2), float(eps),
                        k.sigmoid_constants(_fused._NP[b.dtype]))
    if plan.kernel:
        _fused.mark_modified(params, exp_avgs, exp_avg_sqs, prev_grads, steps)
    if not plan.rest:
        return
    rest = _fused.subset([params, grads, exp_avgs, exp_avg_sqs, prev_grads, steps], plan.rest)
    for bucket in group_by_device_and_dtype(rest):
        device = bucket[0][0].device
        if _fused.backend_for(device) == "compile":
            h = lambda x: _fused.hyper_tensor(x, device)  # noqa: E731
            _fused.compiled(_diffgrad_traceable)(
                *bucket, lr=h(lr), beta1=h(beta1), beta2=h(beta2), eps=h(eps), weight_decay=h(weight_decay),
                decoupled=decoupled, maximize=maximize)
        else:
            _diffgrad_loop(*bucket, lr=lr, **kw)


def _diffgrad_traceable(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
    prev_grads: list[Tensor], steps: list[Tensor], *, lr: Any, beta1: Any, beta2: Any, eps: Any,
    weight_decay: Any, decoupled: bool, maximize: bool,
) -> None:
    """The update in tensor ops whose hyperparameters may be 0-dim tensors: what ``torch.compile`` traces (under
    ``torch.compile(opt.step)``, as the CUDA fused path, and eagerly for ``capturable=True``). The bias corrections are computed from the step
    tensors in float64 on the device, never read on the host."""
    has_wd = isinstance(weight_decay, Tensor) or weight_decay != 0
    for p, grad, m, v, prev, st in zip(params, grads, exp_avgs, exp_avg_sqs, prev_grads, steps):
        if maximize:
            grad = -grad
        if has_wd:
            if decoupled:
                p.mul_(1 - lr * weight_decay)
            else:  # the decay in p's dtype: a float64 0-dim tensor would promote a 0-dim float32 parameter's grad
                grad = grad + p * _fused.weight_like(weight_decay, p)
        st.add_(1)
        step = st.to(device=p.device, dtype=torch.float64)
        m.lerp_(grad, _fused.weight_like(1 - beta1, m))
        v.mul_(beta2).add_(grad * grad * (1 - beta2))
        friction_m = (prev - grad).abs_().sigmoid_().mul_(m)
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = (1 - beta2**step).sqrt()
        denom = v.sqrt().div_(bias_correction2_sqrt).add_(eps)
        p.sub_(friction_m.div_(denom).mul_(lr / bias_correction1))
        prev.copy_(grad)
