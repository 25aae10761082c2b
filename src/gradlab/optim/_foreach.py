"""Helpers shared by gradlab's optimizers: gradient checks, foreach selection and device/dtype grouping.

``torch._foreach_*`` ops take lists of tensors that share a device and dtype. The optimizers collect the
parameters that have a gradient, check those gradients once, and then run one foreach op per math step on
each ``(device, dtype)`` bucket built by :func:`group_by_device_and_dtype`.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from gradlab.core import check_positive, check_range

_FOREACH_DEVICES = ("cuda", "xpu")


def check_dense_real_grad(optimizer_name: str, param: Tensor, grad: Tensor) -> None:
    """Raise ``TypeError`` for a sparse or complex gradient or parameter, which ``optimizer_name`` does not support."""
    if grad.is_sparse or grad.layout != torch.strided:
        raise TypeError(f"{optimizer_name} does not support sparse gradients (got layout {grad.layout})")
    if torch.is_complex(param) or torch.is_complex(grad):
        raise TypeError(f"{optimizer_name} does not support complex parameters or gradients (got {param.dtype})")
    if not param.is_floating_point():
        raise TypeError(f"{optimizer_name} needs floating-point parameters; got {param.dtype}")


def params_with_grad(optimizer_name: str, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
    """The parameters of ``group`` that have a gradient, and those gradients (checked, never modified)."""
    params: list[Tensor] = []
    grads: list[Tensor] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        check_dense_real_grad(optimizer_name, p, p.grad)
        params.append(p)
        grads.append(p.grad)
    return params, grads


def resolve_foreach(foreach: bool | None, tensors: Sequence[Tensor], differentiable: bool = False) -> bool:
    """Whether to take the foreach path.

    ``foreach=None`` (the default) follows ``torch.optim``: the foreach path when every tensor is a plain tensor
    on an accelerator with native multi-tensor kernels (CUDA, XPU) and ``differentiable`` is off; the for-loop
    path on the CPU, where it is faster (each parameter's update stays in cache; see
    ``benchmarks/optim_step.py``). ``foreach=True`` forces the grouped path on any device.
    """
    if foreach is not None:
        return bool(foreach) and not differentiable
    if differentiable or torch.jit.is_scripting():
        return False
    return all(t.device.type in _FOREACH_DEVICES and type(t) in (torch.Tensor, torch.nn.Parameter) for t in tensors)


def group_by_device_and_dtype(tensorlists: Sequence[Sequence[Tensor]]) -> list[list[list[Tensor]]]:
    """Split parallel tensor lists into buckets whose tensors share device and dtype.

    ``tensorlists[j][i]`` is the j-th tensor (param, grad, state buffer, ...) of parameter ``i``; the bucket
    key is taken from the first list (the parameters). Each bucket is returned as parallel lists in the same
    order, ready for ``torch._foreach_*``. Step counters (float32 scalars) may sit in a list too; they are
    carried along with their parameter.
    """
    if not tensorlists or not tensorlists[0]:
        return []
    n = len(tensorlists[0])
    if any(len(tl) != n for tl in tensorlists):
        raise ValueError("tensorlists must all have the same length")
    if torch.compiler.is_compiling():
        return [[list(tl) for tl in tensorlists]]
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(tensorlists[0]):
        buckets.setdefault((p.device, p.dtype), []).append(i)
    if len(buckets) == 1:
        return [[list(tl) for tl in tensorlists]]
    return [[[tl[i] for i in idx] for tl in tensorlists] for idx in buckets.values()]


def step_values(steps: Iterable[Tensor]) -> list[float]:
    """The per-parameter step counters as Python floats, read in one host transfer."""
    steps = list(steps)
    if not steps:
        return []
    return torch.stack(steps).tolist()


def new_step_tensor() -> Tensor:
    """A fresh per-parameter step counter: 0-dim on the CPU, float32 (float64 under a float64 default dtype),
    as in ``torch.optim``."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.tensor(0.0, dtype=dtype)


def check_lr(lr: Any) -> float:
    """A learning rate: a finite real number >= 0 (a tensor learning rate is not supported)."""
    if isinstance(lr, Tensor):
        raise TypeError("lr must be a float; tensor learning rates are not supported")
    return check_positive("lr", lr, allow_zero=True)


def check_betas(betas: Any) -> tuple[float, float]:
    """A pair ``(beta1, beta2)`` with both values in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
    return (check_range("betas[0]", betas[0], 0.0, 1.0), check_range("betas[1]", betas[1], 0.0, 1.0))


def restore_state_defaults(optimizer: torch.optim.Optimizer, **group_defaults: Any) -> None:
    """Upgrade state unpickled from an older version (call from ``__setstate__`` after ``super().__setstate__``).

    Missing param-group keys get ``group_defaults``; a per-parameter ``step`` stored as a Python number becomes a
    0-dim tensor of :func:`new_step_tensor`'s dtype, as ``torch.optim`` does.
    """
    for group in optimizer.param_groups:
        for key, value in group_defaults.items():
            group.setdefault(key, value)
        for p in group["params"]:
            p_state = optimizer.state.get(p, {})
            if "step" in p_state and not torch.is_tensor(p_state["step"]):
                p_state["step"] = torch.tensor(float(p_state["step"]), dtype=new_step_tensor().dtype)
