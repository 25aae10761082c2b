"""Helpers shared by gradlab's optimizers: gradient checks, foreach selection and device/dtype grouping.

``torch._foreach_*`` ops take lists of tensors that share a device and dtype. The optimizers collect the
parameters that have a gradient, check those gradients once, and then run one foreach op per math step on
each ``(device, dtype)`` bucket built by :func:`group_by_device_and_dtype`.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from gradlab.core import check_positive, check_range, check_type

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
        g = p.grad
        if g is None:
            continue
        if g.layout is not torch.strided or not p.is_floating_point():  # the common case costs two checks
            check_dense_real_grad(optimizer_name, p, g)
        params.append(p)
        grads.append(g)
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


def new_step_tensor(device: torch.device | None = None) -> Tensor:
    """A fresh per-parameter step counter: 0-dim, float32 (float64 under a float64 default dtype), on the CPU
    or, for ``capturable=True``, on the parameter's ``device``, as in ``torch.optim``."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    return torch.zeros((), dtype=dtype, device=device)


def capturable_device_types() -> list[str]:
    """The device types on which ``torch.optim`` supports ``capturable=True`` (CUDA graphs and the like)."""
    from torch.optim.optimizer import _get_capturable_supported_devices

    return list(_get_capturable_supported_devices())


def check_capturable_group(optimizer_name: str, group_index: int, group: dict[str, Any], params: Sequence[Tensor],
                           steps: Sequence[Tensor]) -> None:
    """``capturable=True`` (checked before anything changes, reading no tensor on the host): every parameter
    on a device type ``torch.optim`` can capture, its step counter on the same device, and a tensor ``lr`` on
    the parameters' device (a CPU ``lr`` would be baked into a captured graph as a constant)."""
    where = f"{optimizer_name}: capturable=True, param group {group_index}"
    supported = capturable_device_types()
    for i, (p, st) in enumerate(zip(params, steps)):
        if p.device.type not in supported:
            raise ValueError(f"{where}: parameter {i} is on {p.device}; capturable steps (CUDA graphs) exist on "
                             f"the device types {supported}, as in torch.optim")
        if st.device != p.device:
            raise ValueError(f"{where}: the step counter of parameter {i} is on {st.device}, the parameter on "
                             f"{p.device}; it must live on the parameter's device (load the state dict into an "
                             "optimizer created with capturable=True, which places it there)")
    lr = group["lr"]
    if isinstance(lr, Tensor) and params and lr.device != params[0].device:
        raise ValueError(f"{where}: a tensor lr must be on the parameters' device {params[0].device}; got "
                         f"{lr.device}")


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


class NonFiniteGradientError(FloatingPointError, ValueError):
    """A gradient holds NaN or inf; raised before any parameter or state changed."""


def check_finite_grads(optimizer_name: str, group_index: int, grads: Sequence[Tensor]) -> None:
    """Raise :class:`NonFiniteGradientError` naming the first non-finite gradient of a group.

    One ``torch._foreach_norm`` per device (a read of each gradient) and one host transfer per device: a norm is
    finite exactly when every entry is.
    """
    if not grads:
        return
    by_device: dict[torch.device, list[int]] = {}
    for i, g in enumerate(grads):
        by_device.setdefault(g.device, []).append(i)
    for idx in by_device.values():
        norms = torch._foreach_norm([grads[i] for i in idx])
        finite = torch.isfinite(torch.stack([n.to(torch.float32) for n in norms]))
        if not bool(finite.all()):
            bad = idx[int((~finite).nonzero()[0, 0])]
            raise NonFiniteGradientError(
                f"{optimizer_name}: the gradient of parameter {bad} in param group {group_index} contains NaN or "
                "inf; nothing was updated (unscale with torch.amp.GradScaler, which skips such steps, or clip)")


def lr_value(lr: Any) -> float:
    """The learning rate as a Python float (a 0-dim tensor lr, as schedulers may hold, is read once)."""
    return float(lr.item()) if isinstance(lr, Tensor) else float(lr)


def check_lr_any(lr: Any, name: str = "lr", host_read: bool = True) -> float | None:
    """A learning rate: a finite real number >= 0, or a 0-dim real tensor holding one. ``host_read=False``
    (``capturable=True``): a tensor has its shape and dtype checked but its value is not read (on a device that
    would synchronise, which a CUDA graph capture forbids); ``None`` is returned then."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or lr.is_complex() or not lr.is_floating_point():
            raise TypeError(f"{name} as a tensor must be a 0-dim real floating tensor; got shape {tuple(lr.shape)} "
                            f"dtype {lr.dtype}")
        if not host_read:
            return None
        lr = float(lr.item())
    return check_positive(name, lr, allow_zero=True)


def check_capturable_flag(group: dict[str, Any]) -> bool:
    """``capturable`` must be a bool, and not ``True`` together with ``fused=True`` (the capturable step is the
    tensor-op update run eagerly; see :mod:`gradlab.optim._fused`)."""
    capturable = group.get("capturable", False)
    check_type("capturable", capturable, bool)
    if capturable and group.get("fused"):
        raise ValueError("capturable=True and fused=True cannot be used together: the capturable step is the "
                         "tensor-op update (fused=None or False)")
    return capturable


def check_state_dict_shapes(optimizer: torch.optim.Optimizer, state_dict: Any,
                            like_param: Sequence[str], scalars: Sequence[str] = ("step",)) -> None:
    """Check a state dict against this optimizer's parameters before ``load_state_dict`` changes anything.

    Every saved per-parameter state must hold the keys ``like_param`` (tensors shaped like the parameter) and
    ``scalars`` (one-element tensors or numbers); a saved state from another optimizer, another model or a
    different parameter order raises ``ValueError`` naming the group, the parameter and the key.
    """
    name = type(optimizer).__name__
    if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
        raise TypeError(f"{name}.load_state_dict expects the dict returned by state_dict() (keys 'state' and "
                        f"'param_groups'); got {type(state_dict).__name__}")
    saved_groups = state_dict["param_groups"]
    if not isinstance(saved_groups, (list, tuple)) or len(saved_groups) != len(optimizer.param_groups):
        n = len(saved_groups) if isinstance(saved_groups, (list, tuple)) else "no list of"
        raise ValueError(f"{name}.load_state_dict: the state has {n} param groups, the optimizer "
                         f"{len(optimizer.param_groups)}")
    state = state_dict["state"]
    for gi, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        ids = saved.get("params", []) if isinstance(saved, dict) else []
        if len(ids) != len(group["params"]):
            raise ValueError(f"{name}.load_state_dict: param group {gi} has {len(ids)} parameters in the state and "
                             f"{len(group['params'])} in the optimizer")
        for pi, (pid, p) in enumerate(zip(ids, group["params"])):
            st = state.get(pid)
            if st is None:
                continue
            where = f"{name}.load_state_dict: param group {gi}, parameter {pi} (shape {tuple(p.shape)})"
            missing = [k for k in (*like_param, *scalars) if k not in st]
            if missing:
                raise ValueError(f"{where}: saved state lacks {missing} (saved keys {sorted(st)}); is it the state "
                                 f"of another optimizer?")
            for k in like_param:
                t = st[k]
                if not isinstance(t, Tensor) or tuple(t.shape) != tuple(p.shape):
                    got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                    raise ValueError(f"{where}: saved {k!r} has shape {got}, expected {tuple(p.shape)} (the state of "
                                     "another model or parameter order?)")
                if not t.is_floating_point():
                    raise ValueError(f"{where}: saved {k!r} must be floating point; got {t.dtype}")
            for k in scalars:
                t = st[k]
                if isinstance(t, Tensor):
                    if t.numel() != 1:
                        raise ValueError(f"{where}: saved {k!r} must hold one number; got shape {tuple(t.shape)}")
                    if not torch.isfinite(t.to(torch.float64)).all():
                        raise ValueError(f"{where}: saved {k!r} is not finite")
                elif isinstance(t, bool) or not isinstance(t, (int, float)):
                    raise ValueError(f"{where}: saved {k!r} must be a number; got {type(t).__name__}")


class ValidatedOptimizer(torch.optim.Optimizer):
    """Base of gradlab's optimizers: every param group's hyperparameters are validated, in ``__init__``,
    ``add_param_group``, ``load_state_dict`` and at each ``step`` (a group edited by hand is caught too).

    Subclasses implement :meth:`_check_group` (raise ``ValueError``/``TypeError`` naming the key) and list their
    per-parameter state in ``_STATE_LIKE_PARAM`` / ``_STATE_SCALARS`` for the load-time check.
    """

    _STATE_LIKE_PARAM: tuple[str, ...] = ()
    _STATE_SCALARS: tuple[str, ...] = ("step",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_check_group" not in cls.__dict__ and not any("_check_group" in b.__dict__ for b in cls.__mro__[1:-1]
                                                          if b is not ValidatedOptimizer):
            raise TypeError(f"{cls.__name__} must define _check_group(group) to validate its hyperparameters")

    def _check_group(self, group: dict[str, Any]) -> None:
        """Validate one param group's hyperparameters (subclasses define it; enforced at class creation)."""
        raise TypeError(f"{type(self).__name__} does not define _check_group")

    def _check_group_named(self, group: dict[str, Any], where: str) -> None:
        try:
            self._check_group(group)
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where}: {err}") from None

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict; got {type(param_group).__name__}")
        merged = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self._check_group_named(merged, f"param group {len(self.param_groups)}")
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        check_state_dict_shapes(self, state_dict, self._STATE_LIKE_PARAM, self._STATE_SCALARS)
        for gi, saved in enumerate(state_dict["param_groups"]):
            merged = {**self.defaults, **{k: v for k, v in saved.items() if k != "params"}}
            self._check_group_named(merged, f"saved param group {gi}")
        super().load_state_dict(state_dict)

    def _checked_groups(self) -> list[dict[str, Any]]:
        for gi, group in enumerate(self.param_groups):
            self._check_group_named(group, f"param group {gi}")
        return self.param_groups
