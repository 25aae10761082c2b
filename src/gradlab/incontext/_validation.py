"""The validation layer of :mod:`gradlab.incontext`, built on :mod:`gradlab.core.validation`.

Every public entry point of the package checks its arguments here before it computes or mutates anything, so
that a wrong shape, dtype or a NaN names the argument, what was expected and what was received (instead of a
torch broadcasting error naming an internal variable). The NaN/inf policy is stated in the package docstring.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch

from gradlab.core.validation import check_finite, check_int, check_tensor, check_type

__all__ = [
    "under_transform", "check_data", "check_shape", "check_same_dtype", "check_float_dtype",
    "check_complex_or_float_dtype", "check_bool", "check_xy", "check_w0", "check_step_list", "check_callable",
    "check_scalar", "check_generator",
]


def _fmt(shape: Sequence[Any]) -> str:
    return "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def under_transform(value: torch.Tensor) -> bool:
    """Whether ``value`` is wrapped by a ``torch.func`` transform (``vmap``, ``grad``, ``jacrev``, ...).

    Data-dependent checks (NaN/inf, value ranges) cannot run there (``bool(tensor)`` is not allowed under ``vmap``);
    they ran, or will run, on the unwrapped inputs of the public entry point that applied the transform.
    """
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(value))
    except AttributeError:  # pragma: no cover - very old torch
        return False


def check_data(name: str, value: Any, ndim: int | Sequence[int] | None = None, complex_ok: bool = False,
               finite: bool = True) -> torch.Tensor:
    """A data tensor: a ``torch.Tensor`` of the given rank, real floating (or complex with ``complex_ok``) and,
    by the package's NaN/inf policy, finite."""
    check_tensor(name, value, ndim=ndim)
    if not (value.is_floating_point() or (complex_ok and value.is_complex())):
        kind = "a floating-point or complex" if complex_ok else "a floating-point"
        raise TypeError(f"{name} must be {kind} tensor; got dtype {value.dtype}")
    if finite and not under_transform(value):
        check_finite(name, value)
    return value


def check_shape(name: str, value: torch.Tensor, expected: Sequence[int | None], meaning: str = "") -> None:
    """Raise ``ValueError`` unless ``value.shape`` matches ``expected`` (``None`` matches any size)."""
    shape = tuple(value.shape)
    ok = len(shape) == len(expected) and all(e is None or s == e for s, e in zip(shape, expected))
    if not ok:
        what = f" {meaning}" if meaning else ""
        raise ValueError(f"{name} must have shape {_fmt(expected)}{what}; got {shape}")


def check_same_dtype(name: str, value: torch.Tensor, dtype: torch.dtype, reference: str) -> None:
    """Raise ``TypeError`` unless ``value.dtype == dtype`` (``reference`` says where ``dtype`` comes from)."""
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} ({reference}); got {value.dtype}")


def check_float_dtype(name: str, dtype: Any) -> torch.dtype:
    """A real floating-point ``torch.dtype`` (an integer dtype would truncate every value silently)."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype; got {type(dtype).__name__}")
    if not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype (e.g. torch.float32); got {dtype}")
    return dtype


def check_complex_or_float_dtype(name: str, dtype: Any) -> torch.dtype:
    """A real floating-point or complex ``torch.dtype``."""
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype; got {type(dtype).__name__}")
    if not (dtype.is_floating_point or dtype.is_complex):
        raise TypeError(f"{name} must be a floating-point or complex torch.dtype; got {dtype}")
    return dtype


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (``0``/``1``/``"no"`` are refused: they usually mean a swapped positional argument)."""
    return bool(check_type(name, value, bool))


def check_scalar(name: str, value: Any, complex_ok: bool = False) -> Any:
    """A finite real (or complex with ``complex_ok``) number or one-element tensor; returned unchanged."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar; got a tensor of shape {tuple(value.shape)}")
        if value.dtype == torch.bool or (value.is_complex() and not complex_ok):
            raise TypeError(f"{name} must be a {'number' if complex_ok else 'real number'}; got dtype {value.dtype}")
        check_finite(name, value)
        return value
    allowed = numbers.Number if complex_ok else numbers.Real
    if isinstance(value, bool) or not isinstance(value, allowed):
        kind = "a real or complex number" if complex_ok else "a real number"
        raise TypeError(f"{name} must be {kind}; got {type(value).__name__}")
    c = complex(value)
    if not (math.isfinite(c.real) and math.isfinite(c.imag)):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return value


def check_generator(name: str, value: Any) -> None:
    """``None`` or a ``torch.Generator``."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None; got {type(value).__name__}")


def check_xy(xs: Any, ys: Any, x_name: str = "xs", y_name: str = "ys") -> tuple[int, int, int]:
    """Context inputs ``(B, N, d)`` and labels ``(B, N)`` of one dtype, finite; returns ``(B, N, d)``."""
    check_data(x_name, xs, ndim=3)
    check_data(y_name, ys, ndim=2)
    b, n, d = xs.shape
    if d < 1:
        raise ValueError(f"{x_name} must have at least one feature (shape (B, N, d) with d >= 1); got "
                         f"{tuple(xs.shape)}")
    if tuple(ys.shape) != (b, n):
        raise ValueError(f"{y_name} must have shape {(b, n)} to match {x_name} {tuple(xs.shape)} (B, N); "
                         f"got {tuple(ys.shape)}")
    check_same_dtype(y_name, ys, xs.dtype, f"the dtype of {x_name}")
    return b, n, d


def check_w0(w0: Any, b: int, d: int, name: str = "w0") -> None:
    """An initial weight vector ``(d,)`` shared by every prompt or one per prompt ``(B, d)``; finite."""
    check_data(name, w0, ndim=(1, 2))
    if tuple(w0.shape) not in ((d,), (b, d)):
        raise ValueError(f"{name} must have shape ({d},) or ({b}, {d}) (one weight per feature, optionally per "
                         f"prompt); got {tuple(w0.shape)}")


def check_step_list(name: str, steps: Any) -> list[int]:
    """A non-empty sequence of non-negative ints (iteration counts)."""
    is_array = isinstance(steps, (torch.Tensor, np.ndarray))
    if isinstance(steps, (str, bytes)) or not (isinstance(steps, (Sequence, range)) or (is_array and steps.ndim == 1)):
        raise TypeError(f"{name} must be a sequence of ints (e.g. [0, 1, 5]); got {type(steps).__name__}")
    items = steps.tolist() if is_array else list(steps)
    ks = [check_int(f"{name}[{i}]", k, minimum=0) for i, k in enumerate(items)]
    if not ks:
        raise ValueError(f"{name} must not be empty")
    return ks


def check_callable(name: str, value: Any) -> Callable:
    if not callable(value):
        raise TypeError(f"{name} must be callable; got {type(value).__name__}")
    return value
