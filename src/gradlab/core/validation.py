"""Argument validation that fails loudly with the argument's name and what was expected.

Every public entry point of gradlab checks its inputs with these helpers, so that bad input gives a clear
``ValueError``/``TypeError`` instead of a silent wrong answer.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Iterable, Sequence

import numpy as np
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


# --- tensor-data helpers shared by the packages' validation layers (incontext, dynamics, ...) -------------------


def _fmt_shape(shape: Sequence[Any]) -> str:
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
    with ``finite`` (outside ``torch.func`` transforms), free of NaN/inf."""
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
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        what = f" {meaning}" if meaning else ""
        raise ValueError(f"{name} must have shape {_fmt_shape(expected)}{what}; got {shape}")


def check_same_dtype(name: str, value: torch.Tensor, dtype: torch.dtype, reference: str) -> None:
    """Raise ``TypeError`` unless ``value.dtype == dtype`` (``reference`` says where ``dtype`` comes from)."""
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} ({reference}); got {value.dtype}")


def check_float_dtype(name: str, dtype: Any, allow_none: bool = False, complex_ok: bool = False) -> torch.dtype | None:
    """A real floating-point ``torch.dtype`` (or complex with ``complex_ok``; ``None`` with ``allow_none``: the
    default dtype). An integer dtype would truncate every value silently."""
    if dtype is None and allow_none:
        return None
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype; got {type(dtype).__name__}")
    if not (dtype.is_floating_point or (complex_ok and dtype.is_complex)):
        kind = "a floating-point or complex" if complex_ok else "a floating-point"
        raise TypeError(f"{name} must be {kind} torch.dtype (e.g. torch.float32); got {dtype}")
    return dtype


def check_bool(name: str, value: Any) -> bool:
    """A real ``bool`` (``0``/``1``/``"no"`` are refused: they usually mean a swapped positional argument)."""
    return bool(check_type(name, value, bool))


def check_callable(name: str, value: Any) -> Callable:
    """Raise ``TypeError`` unless ``value`` is callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable; got {type(value).__name__}")
    return value


def check_generator(name: str, value: Any) -> None:
    """``None`` or a ``torch.Generator``."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None; got {type(value).__name__}")


def _as_list(name: str, values: Any, what: str, min_len: int) -> list:
    is_array = isinstance(values, (torch.Tensor, np.ndarray))
    sequence = isinstance(values, (Sequence, range)) or (is_array and values.ndim == 1)
    if isinstance(values, (str, bytes)) or not sequence:
        raise TypeError(f"{name} must be a sequence of {what}; got {type(values).__name__}")
    items = values.tolist() if is_array else list(values)
    if len(items) < min_len:
        raise ValueError(f"{name} must contain at least {min_len} entr{'y' if min_len == 1 else 'ies'}; got "
                         f"{len(items)}")
    return items


def check_int_list(name: str, values: Any, minimum: int | None = None, min_len: int = 1,
                   maximum: int | None = None) -> list[int]:
    """A sequence (or 1-d array) of at least ``min_len`` ints within bounds; a bad entry is named ``name[i]``."""
    items = _as_list(name, values, "ints (e.g. [0, 1, 5])", min_len)
    return [check_int(f"{name}[{i}]", v, minimum=minimum, maximum=maximum) for i, v in enumerate(items)]


def check_positive_list(name: str, values: Any, min_len: int = 1) -> list[float]:
    """A sequence (or 1-d array) of at least ``min_len`` finite numbers > 0."""
    items = _as_list(name, values, "positive numbers", min_len)
    return [check_positive(f"{name}[{i}]", v) for i, v in enumerate(items)]
