"""The validation layer of :mod:`gradlab.incontext`, built on :mod:`gradlab.core.validation`.

Every public entry point of the package checks its arguments here before it computes or mutates anything, so
that a wrong shape, dtype or a NaN names the argument, what was expected and what was received (instead of a
torch broadcasting error naming an internal variable). The NaN/inf policy is stated in the package docstring.
The generic tensor checks live in :mod:`gradlab.core.validation` (shared with :mod:`gradlab.dynamics`); this
module adds the in-context-learning shapes (prompts, labels, initial weights) and complex-capable scalars.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from gradlab.core.validation import (
    check_bool, check_callable, check_data, check_finite, check_float_dtype, check_generator, check_int_list,
    check_same_dtype, check_shape, under_transform,
)

__all__ = [
    "under_transform", "check_data", "check_shape", "check_same_dtype", "check_float_dtype",
    "check_complex_or_float_dtype", "check_bool", "check_xy", "check_w0", "check_step_list", "check_callable",
    "check_scalar", "check_generator",
]


def check_complex_or_float_dtype(name: str, dtype: Any) -> torch.dtype:
    """A real floating-point or complex ``torch.dtype``."""
    return check_float_dtype(name, dtype, complex_ok=True)


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
    return check_int_list(name, steps, minimum=0)
