"""Argument validation that fails loudly with the argument's name and what was expected.

Every public entry point of gradlab checks its inputs with these helpers, so that bad input gives a clear
``ValueError``/``TypeError`` instead of a silent wrong answer.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence

import torch


def check_type(name: str, value: Any, types: type | tuple[type, ...]) -> Any:
    """Raise ``TypeError`` unless ``isinstance(value, types)`` (bools are not accepted as numbers)."""
    tup = types if isinstance(types, tuple) else (types,)
    is_bool_for_number = isinstance(value, bool) and bool not in tup and any(t in (int, float) for t in tup)
    if not isinstance(value, tup) or is_bool_for_number:
        expected = " or ".join(t.__name__ for t in tup)
        raise TypeError(f"{name} must be {expected}; got {type(value).__name__}")
    return value


def _as_real(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise TypeError(f"{name} must be a scalar; got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    v = float(value)
    if math.isnan(v):
        raise ValueError(f"{name} must not be NaN")
    return v


def check_positive(name: str, value: Any, allow_zero: bool = False) -> float:
    """Return ``value`` as float if > 0 (>= 0 with ``allow_zero``), else raise ``ValueError``."""
    v = _as_real(name, value)
    ok = v >= 0 if allow_zero else v > 0
    if not ok or math.isinf(v):
        rel = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {rel}; got {value!r}")
    return v


def check_range(
    name: str, value: Any, low: float, high: float, low_inclusive: bool = True, high_inclusive: bool = False
) -> float:
    """Return ``value`` as float if it lies in the interval, else raise ``ValueError`` naming the interval."""
    v = _as_real(name, value)
    lo_ok = v >= low if low_inclusive else v > low
    hi_ok = v <= high if high_inclusive else v < high
    if not (lo_ok and hi_ok):
        interval = f"{'[' if low_inclusive else '('}{low}, {high}{']' if high_inclusive else ')'}"
        raise ValueError(f"{name} must lie in {interval}; got {value!r}")
    return v


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Return ``value`` if it is an int within bounds, else raise ``TypeError``/``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {v}")
    return v


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` listing them."""
    options = list(choices)
    if value not in options:
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value


def check_tensor(
    name: str,
    value: Any,
    ndim: int | Sequence[int] | None = None,
    dtype: torch.dtype | Sequence[torch.dtype] | None = None,
    floating: bool = False,
    finite: bool = False,
) -> torch.Tensor:
    """Check a tensor argument's type, rank, dtype and (optionally) that it holds no NaN/inf."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.ndim not in allowed:
            raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions; got shape {tuple(value.shape)}")
    if dtype is not None:
        allowed_dt = (dtype,) if isinstance(dtype, torch.dtype) else tuple(dtype)
        if value.dtype not in allowed_dt:
            raise TypeError(f"{name} must have dtype {' or '.join(map(str, allowed_dt))}; got {value.dtype}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got {value.dtype}")
    if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return value


def check_finite(name: str, value: torch.Tensor | float) -> None:
    """Raise ``ValueError`` if ``value`` (tensor or number) contains NaN or inf."""
    if isinstance(value, torch.Tensor):
        if value.is_floating_point() or value.is_complex():
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} contains NaN or inf")
        return
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} is not finite: {value!r}")
