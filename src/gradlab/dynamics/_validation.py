"""The validation layer of :mod:`gradlab.dynamics`, built on :mod:`gradlab.core.validation`.

Every public entry point of the package checks its arguments here before it computes, trains or re-initialises
anything: a wrong shape, dtype or a NaN names the argument, what was expected and what was received. The NaN/inf
policy is stated in the package docstring.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from gradlab.core.validation import check_finite, check_int, check_positive, check_tensor, check_type

__all__ = [
    "under_transform", "check_data", "check_shape", "check_same_dtype", "check_float_dtype", "check_bool", "check_real",
    "check_callable", "check_generator", "check_int_list", "check_positive_list", "check_module",
    "check_features", "check_labels",
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


def check_data(name: str, value: Any, ndim: int | Sequence[int] | None = None, finite: bool = True) -> torch.Tensor:
    """A real floating-point data tensor of the given rank that (by the package's NaN/inf policy) is finite."""
    check_tensor(name, value, ndim=ndim)
    if not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {value.dtype}")
    if finite and not under_transform(value):
        check_finite(name, value)
    return value


def check_shape(name: str, value: torch.Tensor, expected: Sequence[int | None], meaning: str = "") -> None:
    """Raise ``ValueError`` unless ``value.shape`` matches ``expected`` (``None`` matches any size)."""
    shape = tuple(value.shape)
    if len(shape) != len(expected) or any(e is not None and s != e for s, e in zip(shape, expected)):
        what = f" {meaning}" if meaning else ""
        raise ValueError(f"{name} must have shape {_fmt(expected)}{what}; got {shape}")


def check_same_dtype(name: str, value: torch.Tensor, dtype: torch.dtype, reference: str) -> None:
    if value.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} ({reference}); got {value.dtype}")


def check_float_dtype(name: str, dtype: Any, allow_none: bool = False) -> torch.dtype | None:
    """A real floating-point ``torch.dtype`` (``None`` with ``allow_none``: the default dtype)."""
    if dtype is None and allow_none:
        return None
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{name} must be a torch.dtype; got {type(dtype).__name__}")
    if not dtype.is_floating_point:
        raise TypeError(f"{name} must be a floating-point torch.dtype (e.g. torch.float64); got {dtype}")
    return dtype


def check_bool(name: str, value: Any) -> bool:
    return bool(check_type(name, value, bool))


def check_real(name: str, value: Any) -> float:
    """A finite real number (or one-element real tensor), returned as float."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number; got a {value.dtype} tensor of shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}")
    return v


def check_callable(name: str, value: Any) -> Callable:
    if not callable(value):
        raise TypeError(f"{name} must be callable; got {type(value).__name__}")
    return value


def check_generator(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None; got {type(value).__name__}")


def _as_list(name: str, values: Any, what: str) -> list:
    is_array = isinstance(values, (torch.Tensor, np.ndarray))
    sequence = isinstance(values, (Sequence, range)) or (is_array and values.ndim == 1)
    if isinstance(values, (str, bytes)) or not sequence:
        raise TypeError(f"{name} must be a sequence of {what}; got {type(values).__name__}")
    return values.tolist() if is_array else list(values)


def check_int_list(name: str, values: Any, minimum: int | None = None, min_len: int = 1,
                   maximum: int | None = None) -> list[int]:
    """A sequence of at least ``min_len`` ints within bounds; each bad entry is named ``name[i]``."""
    items = _as_list(name, values, "ints")
    if len(items) < min_len:
        raise ValueError(f"{name} must contain at least {min_len} entr{'y' if min_len == 1 else 'ies'}; got "
                         f"{len(items)}")
    return [check_int(f"{name}[{i}]", v, minimum=minimum, maximum=maximum) for i, v in enumerate(items)]


def check_positive_list(name: str, values: Any, min_len: int = 1) -> list[float]:
    """A sequence of at least ``min_len`` finite numbers > 0."""
    items = _as_list(name, values, "positive numbers")
    if len(items) < min_len:
        raise ValueError(f"{name} must contain at least {min_len} entr{'y' if min_len == 1 else 'ies'}; got "
                         f"{len(items)}")
    return [check_positive(f"{name}[{i}]", v) for i, v in enumerate(items)]


def check_module(name: str, value: Any) -> nn.Module:
    return check_type(name, value, nn.Module)


def check_features(name: str, x: Any, features: int, dtype: torch.dtype | None = None, reference: str = "") -> None:
    """A finite float batch ``(n, features)`` (of ``dtype`` when given)."""
    check_data(name, x, ndim=2)
    if x.shape[1] != features:
        raise ValueError(f"{name} must have shape (n, {features}) ({features} features{reference}); got "
                         f"{tuple(x.shape)}")
    if dtype is not None:
        check_same_dtype(name, x, dtype, "the model's parameter dtype; convert with .to(...)")


def check_labels(name: str, y: Any, n: int) -> None:
    """Labels ``(n,)`` in ``{-1, +1}``."""
    check_data(name, y, ndim=1)
    check_shape(name, y, (n,), "(one label per sample)")
    if not under_transform(y) and not bool(((y == 1) | (y == -1)).all()):
        raise ValueError(f"{name} must hold labels in {{-1, +1}}")
