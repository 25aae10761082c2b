"""The validation layer of :mod:`gradlab.dynamics`, built on :mod:`gradlab.core.validation`.

Every public entry point of the package checks its arguments here before it computes, trains or re-initialises
anything: a wrong shape, dtype or a NaN names the argument, what was expected and what was received. The NaN/inf
policy is stated in the package docstring. The generic tensor checks live in :mod:`gradlab.core.validation`
(shared with :mod:`gradlab.incontext`); this module adds real scalars, modules, feature batches and labels.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

from gradlab.core.validation import (
    check_bool, check_callable, check_data, check_float_dtype, check_generator, check_int_list, check_positive_list,
    check_same_dtype, check_shape, check_type, under_transform,
)

__all__ = [
    "under_transform", "check_data", "check_shape", "check_same_dtype", "check_float_dtype", "check_bool", "check_real",
    "check_callable", "check_generator", "check_int_list", "check_positive_list", "check_module",
    "check_features", "check_labels",
]


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
