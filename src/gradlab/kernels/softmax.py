r"""Softmax kernels from "The Two-Pass Softmax Algorithm" (Dukhan & Ablavatski, arXiv 2001.04438).

Softmax of every row of a float32 array, :math:`y_i = e^{x_i} / \sum_j e^{x_j}`, by three numba kernels
(single-threaded, vectorised, no torch operations inside):

``softmax_three_pass_recompute``
    the usual safe softmax: pass 1 :math:`\mu = \max_i x_i`; pass 2 :math:`\sigma = \sum_i e^{x_i - \mu}`;
    pass 3 :math:`y_i = e^{x_i - \mu} / \sigma` (two exponentials per element).
``softmax_three_pass_reload``
    pass 1 the maximum; pass 2 stores :math:`y_i = e^{x_i - \mu}` and sums it; pass 3 :math:`y_i \leftarrow
    y_i / \sigma` in place (one exponential per element, one more read and write of ``y``).
``softmax_two_pass``
    the paper's algorithm, which never computes the maximum. Each exponential is produced in extended-exponent
    form :math:`e^{x_i} = m_i \, 2^{n_i}` with :math:`n_i = \operatorname{round}(x_i \log_2 e)` kept as a
    *float* (so no finite input overflows) and :math:`m_i = e^{x_i - n_i \ln 2} \in [2^{-1/2}, 2^{1/2}]`.
    Pass 1 accumulates :math:`\sum_i m_i 2^{n_i}` as a pair :math:`(m_\Sigma, n_\Sigma)`: adding
    :math:`(m, n)` sets :math:`n' = \max(n_\Sigma, n)` and
    :math:`m_\Sigma \leftarrow m_\Sigma 2^{n_\Sigma - n'} + m\, 2^{n - n'}` (in 32 independent lanes, merged the
    same way at the end). Pass 2 recomputes :math:`(m_i, n_i)` and writes
    :math:`y_i = (m_i / m_\Sigma)\, 2^{n_i - n_\Sigma}`.

Memory traffic (the physical limit out of cache; float32, 4 bytes per element read or written):

============================  ======  ===================================  ================================
kernel                        passes  bytes per element (streaming store)  with write-allocate (plain store)
============================  ======  ===================================  ================================
two-pass                      2       12 (R x; R x + W y)                   16
three-pass, recomputing       3       16 (R x; R x; R x + W y)              20
three-pass, reloading         3       20 (R x; R x + W y; R y + W y)        24
============================  ======  ===================================  ================================

so a bandwidth-bound two-pass kernel can be at most 16/12 = 1.33x (20/16 = 1.25x with write-allocate) faster than
the recomputing and 20/12 = 1.67x (24/16 = 1.5x) faster than the reloading three-pass kernel; in cache, where the
kernels are compute-bound, the reloading kernel (one exponential per element) is the fastest.

Numerics: every kernel is within about 5e-6 relative error of a float64 softmax (exp by Cody-Waite range
reduction and a degree-5 polynomial). Results below the smallest normal float32 (about 1.2e-38) are flushed to 0.
``-inf`` entries give exactly 0; a NaN or ``+inf`` anywhere in a row makes that row NaN, and so does a row of
only ``-inf`` (like :func:`torch.softmax`). The two-pass kernel handles any finite input without overflow up to
:math:`|x| \approx 2 \cdot 10^{38}` (entries below about :math:`-2 \cdot 10^{38}` count as ``-inf``).

Inputs are float32 numpy arrays or CPU torch tensors with 1 dimension (one vector) or 2 (softmax of each row);
the result has the input's type and shape. ``out=`` (same type, shape, dtype, C-contiguous; may be the input
itself) receives the result. numba is the ``kernels`` extra and is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Callable, TypeVar

import numpy as np
import torch

__all__ = ["softmax_two_pass", "softmax_three_pass_recompute", "softmax_three_pass_reload", "KERNEL_BYTES_PER_ELEMENT"]

ArrayLike = TypeVar("ArrayLike", np.ndarray, torch.Tensor)

KERNEL_BYTES_PER_ELEMENT: dict[str, tuple[int, int]] = {
    "two_pass": (12, 16),
    "three_pass_recompute": (16, 20),
    "three_pass_reload": (20, 24),
}
"""DRAM bytes per element of each kernel, as (with streaming stores, with write-allocate on plain stores)."""


def _numba_module():
    """The compiled kernels module; raises ImportError naming the ``kernels`` extra when numba is missing."""
    try:
        _softmax_numba = importlib.import_module("gradlab.kernels._softmax_numba")
    except ImportError as exc:  # numba or llvmlite missing
        raise ImportError(
            "gradlab.kernels.softmax needs numba: install the 'kernels' extra (pip install 'gradlab[kernels]')"
        ) from exc
    return _softmax_numba


def _as_array(name: str, value: object) -> np.ndarray:
    """A float32 numpy view of ``value`` (ndarray or CPU tensor) after checking type, dtype and rank."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "cpu":
            raise ValueError(f"{name} must be on the CPU (numba kernels); got device {value.device}")
        if value.dtype != torch.float32:
            raise TypeError(f"{name} must have dtype torch.float32; got {value.dtype}")
        arr = value.detach().numpy()
    elif isinstance(value, np.ndarray):
        if value.dtype != np.float32:
            raise TypeError(f"{name} must have dtype float32; got {value.dtype}")
        arr = value
    else:
        raise TypeError(f"{name} must be a numpy.ndarray or a torch.Tensor of float32; got {type(value).__name__}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{name} must have 1 or 2 dimensions (a vector or rows); got shape {arr.shape}")
    return arr


def _prepare(x: ArrayLike, out: ArrayLike | None) -> tuple[np.ndarray, np.ndarray, ArrayLike]:
    xa = _as_array("x", x)
    if xa.shape[-1] == 0:
        raise ValueError(f"x must have at least one element per row; got shape {xa.shape}")
    if out is None:
        if isinstance(x, torch.Tensor):
            result = torch.empty(tuple(xa.shape), dtype=torch.float32)
            ya = result.numpy()
        else:
            result = ya = np.empty(xa.shape, dtype=np.float32)
    else:
        kind = torch.Tensor if isinstance(x, torch.Tensor) else np.ndarray
        if not isinstance(out, kind):
            raise TypeError(f"out must be a {kind.__module__}.{kind.__name__} like x; got {type(out).__name__}")
        ya = _as_array("out", out)
        if ya.shape != xa.shape:
            raise ValueError(f"out must have the shape of x {xa.shape}; got {ya.shape}")
        if not ya.flags.c_contiguous:
            raise ValueError("out must be C-contiguous")
        if not ya.flags.writeable:
            raise ValueError("out must be writeable")
        same = ya.__array_interface__["data"][0] == xa.__array_interface__["data"][0] and ya.strides == xa.strides
        if not same and np.may_share_memory(xa, ya):
            raise ValueError("out must be x itself or not overlap x")
        result = out
    if not xa.flags.c_contiguous:
        xa = np.ascontiguousarray(xa)
    return xa, ya, result


def _run(kernel_name: str, x: ArrayLike, out: ArrayLike | None) -> ArrayLike:
    xa, ya, result = _prepare(x, out)
    module = _numba_module()
    kernel: Callable = getattr(module, kernel_name)
    x2 = xa.reshape(1, -1) if xa.ndim == 1 else xa
    y2 = ya.reshape(1, -1) if ya.ndim == 1 else ya
    if x2.shape[0] > 0:
        kernel(x2, y2, module.LANES)
    return result


def softmax_two_pass(x: ArrayLike, out: ArrayLike | None = None) -> ArrayLike:
    """Two-pass softmax over the last axis (the paper's algorithm; no maximum is taken). See the module docstring.

    Args:
        x: float32 numpy array or CPU tensor, shape ``(n,)`` or ``(rows, n)`` with ``n >= 1``.
        out: optional output of the same kind, shape and dtype (C-contiguous; may be ``x``).

    Returns:
        the softmax, of ``x``'s type (``out`` when given). Raises ``TypeError`` for a non-float32 input and
        ``ImportError`` naming the ``kernels`` extra when numba is missing.
    """
    return _run("two_pass_rows", x, out)


def softmax_three_pass_recompute(x: ArrayLike, out: ArrayLike | None = None) -> ArrayLike:
    """Three-pass softmax that recomputes the exponentials in its third pass (max; sum of exp; exp / sum)."""
    return _run("three_pass_recompute_rows", x, out)


def softmax_three_pass_reload(x: ArrayLike, out: ArrayLike | None = None) -> ArrayLike:
    """Three-pass softmax that stores the exponentials and rescales them in place (max; exp and sum; scale)."""
    return _run("three_pass_reload_rows", x, out)
