"""Captum's call shape in full: tuple inputs, ``additional_forward_args`` and multi-dimensional targets.

Captum's attribution methods take ``inputs`` as a tensor or a tuple of tensors (one per argument of the model,
all with the same batch size; a tuple of attributions comes back for a tuple, a tensor for a tensor), extra
arguments ``additional_forward_args`` that are passed to the model after the inputs, ``model(*inputs, *args)``,
and are not attributed, and ``target`` as an int, a tuple of ints (one index into a multi-dimensional output
``out[:, i, j]`` shared by every example), an integer tensor of shape () or (N,), a list of N ints or a list of
N tuples (one index per example). This module validates and normalises these forms once, for every method:

* inputs: every tensor of a tuple is checked as a single input is (floating, finite, batch first, the model's
  dtype), all with the same batch size; messages name the position (``inputs[1]``).
* additional_forward_args: a value or a tuple of values. As in Captum, a tensor with at least one dimension is
  per-example (its first dimension is the batch): it must have the inputs' batch size, it is sliced with the
  chunks a method evaluates and expanded alongside the inputs where a method replicates them (noise samples,
  integration steps); a 0-d tensor or a non-tensor is passed unchanged to every call. Floating tensors must be
  finite.
* target: normalised to a LongTensor of shape (N,) (a class per example) or (N, k) (a k-dimensional output
  index per example), or ``None`` for a model with one output per example.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import numpy as np
import torch

from gradlab.explain._common import (
    check_finite_tensor,
    check_inputs,
    check_model_output,
    check_target_range,
    grad_wrt,
    hook_guard,
    normalize_target,
    not_differentiable,
    select_output,
)

InputsType = torch.Tensor | tuple[torch.Tensor, ...]


def check_input_tuple(inputs: Any, model: Any = None, name: str = "inputs",
                      min_ndim: int = 2) -> tuple[tuple[torch.Tensor, ...], bool]:
    """Validate ``inputs`` (a tensor or a non-empty tuple of tensors); return (detached tensors, was a tuple).

    Each tensor is checked with :func:`~gradlab.explain._common.check_inputs` under the name ``inputs[i]``; all
    must share the first (batch) dimension.
    """
    if isinstance(inputs, list):
        raise TypeError(f"{name} must be a torch.Tensor or a tuple of tensors (one per model argument); got list "
                        "(convert data with torch.as_tensor; give several inputs as a tuple, not a list)")
    if not isinstance(inputs, tuple):
        return (check_inputs(inputs, model, name, min_ndim).detach(),), False
    if not inputs:
        raise ValueError(f"{name} is an empty tuple; give a tensor or a tuple of tensors (one per model argument)")
    xs = tuple(check_inputs(x, model, f"{name}[{i}]", min_ndim).detach() for i, x in enumerate(inputs))
    n = xs[0].shape[0]
    for i, x in enumerate(xs[1:], 1):
        if x.shape[0] != n:
            raise ValueError(f"{name}[{i}] has batch size {x.shape[0]} (shape {tuple(x.shape)}) but {name}[0] has "
                             f"{n}; every tensor of {name} needs one row per example")
    return xs, True


def format_additional_args(args: Any, n: int, name: str = "additional_forward_args") -> tuple | None:
    """``None``, or the extra model arguments as a tuple (a single value becomes a 1-tuple, as in Captum).

    Tensors with at least one dimension are per-example: their first dimension must be ``n`` (``ValueError``
    naming ``additional_forward_args[i]`` otherwise). Floating tensors must be finite.
    """
    if args is None:
        return None
    single = not isinstance(args, tuple)
    tup = (args,) if single else args
    for i, v in enumerate(tup):
        label = name if single else f"{name}[{i}]"
        if isinstance(v, torch.Tensor):
            check_finite_tensor(label, v)
            if v.ndim >= 1 and v.shape[0] != n:
                raise ValueError(
                    f"{label} has shape {tuple(v.shape)}; a tensor in {name} is per-example (Captum slices and "
                    f"expands it along its first dimension), so it needs {n} rows (the inputs' batch size) -- "
                    "pass a 0-d tensor or a plain number for a value shared by all examples"
                )
    return tup


def slice_args(args: tuple | None, sl: slice) -> tuple | None:
    """The rows ``sl`` of every per-example tensor of ``args`` (others unchanged)."""
    if args is None:
        return None
    return tuple(v[sl] if isinstance(v, torch.Tensor) and v.ndim >= 1 else v for v in args)


def expand_args(args: tuple | None, k: int) -> tuple | None:
    """Every per-example tensor of ``args`` with each row repeated ``k`` times (``repeat_interleave``)."""
    if args is None:
        return None
    return tuple(v.repeat_interleave(k, dim=0) if isinstance(v, torch.Tensor) and v.ndim >= 1 else v for v in args)


def as_inputs(xs: Sequence[torch.Tensor], is_tuple: bool) -> InputsType:
    """``xs`` as the caller gave them: a tuple of tensors, or the one tensor."""
    return tuple(xs) if is_tuple else xs[0]


def slice_inputs(xs: Sequence[torch.Tensor], sl: slice, is_tuple: bool) -> InputsType:
    """The rows ``sl`` of every input, in the caller's form (a tuple or one tensor)."""
    return as_inputs([x[sl] for x in xs], is_tuple)


def _is_int(v: Any) -> bool:
    return isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, (bool, np.bool_))


def normalize_captum_target(target: Any, n: int, name: str = "target") -> torch.Tensor | None:
    """Captum's target forms as a LongTensor of shape (n,) (one class per example) or (n, k) (an output index).

    * ``None``; an int or an integer tensor of shape (), (1,) or (n,); a list of n ints (as
      :func:`~gradlab.explain._common.normalize_target`) -> (n,);
    * a tuple of k ints: one index ``out[:, i_1, ..., i_k]`` shared by all examples -> (n, k) (a 1-tuple -> (n,));
    * a list of n tuples of k ints each: one index per example, ``out[e, i_1, ..., i_k]`` -> (n, k).
    """
    if isinstance(target, tuple):
        if not target or not all(_is_int(v) for v in target):
            raise TypeError(f"{name} as a tuple is one index into a multi-dimensional output shared by all examples "
                            f"(Captum's convention) and must hold ints; got {target!r} (give one class per example "
                            "as a list or a tensor)")
        if any(int(v) < 0 for v in target):
            raise ValueError(f"{name} indices must be non-negative; got {target!r}")
        t = torch.tensor([int(v) for v in target], dtype=torch.long).expand(n, len(target)).clone()
        return t[:, 0].clone() if len(target) == 1 else t
    if isinstance(target, list) and target and isinstance(target[0], tuple):
        if len(target) != n:
            raise ValueError(f"{name} as a list of tuples must give one output index per example ({n}); got "
                             f"{len(target)}")
        k = len(target[0])
        for i, v in enumerate(target):
            if not isinstance(v, tuple) or len(v) != k or not v or not all(_is_int(u) for u in v):
                raise TypeError(f"{name}[{i}] must be a tuple of {k} ints like {name}[0] (one index into the "
                                f"model's output per example); got {v!r}")
        t = torch.tensor([[int(u) for u in v] for v in target], dtype=torch.long)
        if bool((t < 0).any()):
            raise ValueError(f"{name} indices must be non-negative; got {int(t.min())}")
        return t[:, 0].clone() if k == 1 else t
    return normalize_target(target, n, name=name)


def check_target_shape(t: torch.Tensor | None, out: torch.Tensor, name: str = "target") -> None:
    """An (n, k) index ``t`` must select one in-range score per example of the model's output ``out``."""
    if t is None or t.ndim == 1:
        return
    k = t.shape[1]
    if out.ndim != 1 + k:
        raise ValueError(f"{name} indexes {k} output dimensions but the model's output has shape "
                         f"{tuple(out.shape)}; give one index per dimension after the batch (a tuple, or a list "
                         "of tuples with one per example)")
    for j in range(k):
        check_target_range(t[:, j], out.shape[1 + j], f"{name} (output dimension {j + 1})")


def select_target(out: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
    """The score per example selected by ``t`` ((n,) or (n, k) indices) from the model's output."""
    if t is None or t.ndim == 1:
        return select_output(out, t)
    check_target_shape(t, out)
    t = t.to(out.device)
    rows = torch.arange(out.shape[0], device=out.device)
    return out[(rows,) + tuple(t[:, j] for j in range(t.shape[1]))]


def captum_target(t: torch.Tensor | None, sl: slice | None = None) -> Any:
    """``t`` (rows ``sl``) in a form Captum accepts: a LongTensor (n,) or a list of index tuples."""
    if t is None:
        return None
    t = t if sl is None else t[sl]
    return t if t.ndim == 1 else [tuple(r) for r in t.tolist()]


def call_model(model: Callable, xs: Sequence[torch.Tensor], args: tuple | None,
               differentiable: bool = False) -> torch.Tensor:
    """``model(*xs, *args)`` with the output checked; a shape/dtype failure names the input shapes."""
    try:
        out = model(*xs, *(args or ()))
    except RuntimeError as err:
        msg = str(err)
        if any(k in msg for k in ("shape", "size", "dimension", "dtype", "expected", "Expected")):
            shapes = ", ".join(str(tuple(x.shape)) for x in xs)
            raise ValueError(f"the model rejected inputs of shape {shapes} and dtype {xs[0].dtype}: {msg}") from err
        raise
    return check_model_output(out, xs[0].shape[0], differentiable)


def probe_call(model: Callable, xs: Sequence[torch.Tensor], args: tuple | None, t: torch.Tensor | None,
               differentiable: bool, name: str = "inputs") -> torch.Tensor:
    """One forward (and backward, when ``differentiable``) pass on the first example of every input.

    Checks the model's output, that ``t`` selects one in-range score per example and, for gradient methods, that
    the score depends differentiably on every input (``inputs[i]`` named). Returns the output. Hooks removed.
    """
    x1 = [x[:1].detach().clone().requires_grad_(differentiable) for x in xs]
    with hook_guard(model), torch.set_grad_enabled(differentiable):
        out = call_model(model, x1, slice_args(args, slice(0, 1)), differentiable)
        if t is not None and t.ndim == 1 and out.ndim == 2:
            check_target_range(t, out.shape[1])
        check_target_shape(t, out)
        s = select_target(out, None if t is None else t[:1])
        if differentiable and len(x1) == 1:
            grad_wrt(s, x1[0], f"`{name}`")
        elif differentiable:
            if not s.requires_grad:
                raise not_differentiable(f"`{name}`")
            grads = torch.autograd.grad(s.sum(), x1, allow_unused=True)
            for i, g in enumerate(grads):
                if g is None:
                    raise not_differentiable(f"`{name}[{i}]`")
    return out.detach()


def merge_chunks(parts: list, is_tuple: bool, with_delta: bool) -> Any:
    """Concatenate per-chunk results of a Captum call (tensor or tuple of tensors; with a delta when asked)."""
    attrs = [p[0] if with_delta else p for p in parts]
    cols = [a if isinstance(a, tuple) else (a,) for a in attrs]
    merged = tuple(torch.cat([c[i].detach() for c in cols]) for i in range(len(cols[0])))
    a = merged if is_tuple else merged[0]
    if with_delta:
        return a, torch.cat([p[1].detach() for p in parts])
    return a


__all__ = [
    "InputsType", "check_input_tuple", "format_additional_args", "slice_args", "expand_args", "as_inputs",
    "slice_inputs", "normalize_captum_target", "check_target_shape", "select_target", "captum_target",
    "call_model", "probe_call", "merge_chunks",
]
