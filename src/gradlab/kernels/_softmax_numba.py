"""The numba kernels behind :mod:`gradlab.kernels.softmax` and :mod:`gradlab.kernels.bandwidth`.

This module imports numba at import time; the public modules import it lazily (numba is the ``kernels`` extra).
Everything here works on C-contiguous float32 arrays, 2-D ``(rows, n)`` for the softmax kernels, and is written so
that LLVM vectorises every hot loop:

* every constant is a float32/int32 global (a Python float would promote the arithmetic to float64);
* reductions (sums, the extended-exponent accumulator) are kept in ``lanes`` independent accumulators updated by
  an inner ``for lane in range(lanes)`` loop over a slice, i.e. element-wise vector code rather than a scalar
  chain (float reductions do not vectorise without re-association, which would also break the Cody-Waite split).
  ``lanes`` (:data:`LANES`) is a run-time argument on purpose: with a compile-time trip count LLVM fully unrolls
  the inner loop into scalar code instead of vectorising it;
* the maximum is taken over an order-preserving int32 key of the float bits (integer max reductions vectorise,
  float ones do not);
* int<->float bit casts and the 2^k construction are LLVM intrinsics (``_pow2``, ``_order_key``, ``_from_key``),
  because numba's integer typing would widen int32 arithmetic to int64.

The exponential is the classic range reduction exp(x) = 2^n * exp(t), n = round(x log2 e), t = x - n ln 2 with
ln 2 split into a 9-bit head (n * head is exact for |n| < 2^15) and a tail, and exp(t) on |t| <= ln(2)/2 by a
degree-5 polynomial: the Chebyshev interpolant of exp on that interval (coefficients computed below with numpy;
relative error about 1e-7). 2^k is built from the float32 exponent field; k <= -127 gives exactly 0 (results
below the smallest normal float are flushed to zero).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

LANES = 32
"""Independent accumulators per reduction (4 AVX2 or 2 AVX-512 registers)."""

_f32 = np.float32
_LOG2E = _f32(1.4426950408889634)
_HALF = _f32(0.5)
_LN2_HI = _f32(0.693359375)  # 355/512: 9 significant bits, so n * _LN2_HI is exact for |n| < 2^15
_LN2_LO = _f32(0.6931471805599453 - 0.693359375)
_T_MAX = _f32(1.0)  # |t| <= ln2/2 for every meaningful input; the clamp only keeps garbage (|x| > ~1e7) finite
_T_MIN = _f32(-1.0)
_N_MIN = _f32(-3.0e38)  # n of -inf (and of x < ~-2.08e38) is clamped here: such entries get weight 0
_K_MIN = _f32(-127.0)  # 2^k with k <= -127 is 0
_D_MIN = _f32(-104.0)  # exp(d) for d <= -104 underflows to 0 (three-pass kernels)
_ZERO = _f32(0.0)
_ONE = _f32(1.0)
_NEG_INF = _f32(-np.inf)
_NAN = _f32(np.nan)
# FMA contraction only: re-association would undo the Cody-Waite split, nnan/ninf would break the NaN rules
_FASTMATH = {"contract"}


def _exp_coefficients() -> tuple[np.float32, ...]:
    """Monomial coefficients c0..c5 of the degree-5 Chebyshev interpolant of exp on [-ln2/2, ln2/2]."""
    from numpy.polynomial import Chebyshev, Polynomial

    a = np.log(2.0) / 2.0
    cheb = Chebyshev.interpolate(np.exp, 5, domain=[-a, a])
    coef = cheb.convert(kind=Polynomial, domain=[-1.0, 1.0], window=[-1.0, 1.0]).coef
    return tuple(_f32(c) for c in coef)


_C0, _C1, _C2, _C3, _C4, _C5 = _exp_coefficients()


# ----------------------------------------------------------------------------------------------- bit intrinsics
@intrinsic
def _pow2(typingctx, k):
    """2^k for an integer-valued float32 k in [-127, 127] (k = -127 gives +0.0), via the exponent field."""
    if k != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        ki = builder.fptosi(args[0], i32)
        biased = builder.add(ki, ir.Constant(i32, 127))
        bits = builder.shl(biased, ir.Constant(i32, 23))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.float32), codegen


@intrinsic
def _order_key(typingctx, x):
    """An int32 whose signed order equals the float order of ``x`` (positive NaN sorts above +inf)."""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        v = builder.bitcast(args[0], i32)
        sign = builder.ashr(v, ir.Constant(i32, 31))
        return builder.xor(v, builder.and_(sign, ir.Constant(i32, 0x7FFFFFFF)))

    return types.int32(types.float32), codegen


@intrinsic
def _from_key(typingctx, key):
    """Inverse of :func:`_order_key` (the map is an involution on the bits)."""
    if key != types.int32:
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        v = args[0]
        sign = builder.ashr(v, ir.Constant(i32, 31))
        bits = builder.xor(v, builder.and_(sign, ir.Constant(i32, 0x7FFFFFFF)))
        return builder.bitcast(bits, ir.FloatType())

    return types.float32(types.int32), codegen


# ----------------------------------------------------------------------------------------------- scalar pieces
@njit(inline="always")
def _poly(t):
    return ((((_C5 * t + _C4) * t + _C3) * t + _C2) * t + _C1) * t + _C0


@njit(inline="always")
def _exp_ext(x):
    """exp(x) = m * 2^n in extended-exponent form: (m, n), m in ~[0.71, 1.42], n an integer-valued float32.

    NaN gives m = NaN; +inf gives m = NaN (t = inf - inf); -inf gives n = _N_MIN (weight 0 after scaling).
    """
    n = np.floor(x * _LOG2E + _HALF)
    n = _N_MIN if n < _N_MIN else n  # NaN stays NaN
    t = (x - n * _LN2_HI) - n * _LN2_LO
    t = _T_MIN if t < _T_MIN else t
    t = _T_MAX if t > _T_MAX else t
    return _poly(t), n


@njit(inline="always")
def _scale2(m, k):
    """m * 2^k for integer-valued k <= 127; k <= -127 (or NaN) scales to 0."""
    k = k if k > _K_MIN else _K_MIN
    return m * _pow2(k)


@njit(inline="always")
def _exp_nonpos(d):
    """exp(d) for d <= 0 (the shifted inputs of the three-pass kernels); d = -inf gives 0, NaN gives NaN."""
    d = _D_MIN if d < _D_MIN else d  # NaN stays NaN
    n = np.floor(d * _LOG2E + _HALF)
    t = (d - n * _LN2_HI) - n * _LN2_LO
    return _scale2(_poly(t), n)


@njit(inline="always")
def _row_max(xr):
    """max(xr) through the int32 order key (vectorised integer reduction); NaN (positive) wins."""
    best = _order_key(xr[0])
    for i in range(1, xr.shape[0]):
        k = _order_key(xr[i])
        best = k if k > best else best
    return _from_key(best)


# ----------------------------------------------------------------------------------------------- softmax kernels
@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def two_pass_rows(x, y, lanes):
    """Two-pass softmax of every row of ``x`` into ``y`` (the paper's Algorithm: no maximum is computed).

    Pass 1 accumulates sum_i m_i 2^{n_i} as an extended pair (m_sum, n_sum) per lane: with e' = max(e, n_i),
    m <- m 2^{e - e'} + m_i 2^{n_i - e'}, e <- e'; the lanes are then merged the same way.
    Pass 2 recomputes (m_i, n_i) and writes y_i = (m_i / m_sum) 2^{n_i - n_sum}.
    """
    rows, n = x.shape
    nb = n // lanes
    accm = np.empty(lanes, np.float32)
    acce = np.empty(lanes, np.float32)
    for r in range(rows):
        xr = x[r]
        yr = y[r]
        accm[:] = _ZERO
        acce[:] = _NEG_INF
        for b in range(nb):
            xb = xr[b * lanes:(b + 1) * lanes]
            for lane in range(lanes):
                m, e = _exp_ext(xb[lane])
                a = acce[lane]
                emax = e if e > a else a
                accm[lane] = _scale2(accm[lane], a - emax) + _scale2(m, e - emax)
                acce[lane] = emax
        xt = xr[nb * lanes:]
        for lane in range(xt.shape[0]):
            m, e = _exp_ext(xt[lane])
            a = acce[lane]
            emax = e if e > a else a
            accm[lane] = _scale2(accm[lane], a - emax) + _scale2(m, e - emax)
            acce[lane] = emax
        e_sum = _NEG_INF
        for lane in range(lanes):
            e_sum = acce[lane] if acce[lane] > e_sum else e_sum
        m_sum = _ZERO
        for lane in range(lanes):
            m_sum += _scale2(accm[lane], acce[lane] - e_sum)
        if not e_sum > _N_MIN:  # every entry is -inf (or below -2e38): no normaliser, like 0/0
            m_sum = _NAN
        inv = _ONE / m_sum
        for i in range(n):
            m, e = _exp_ext(xr[i])
            yr[i] = _scale2(m * inv, e - e_sum)


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def three_pass_recompute_rows(x, y, lanes):
    """Three-pass softmax recomputing exp: mu = max x; s = sum exp(x - mu); y = exp(x - mu) / s."""
    rows, n = x.shape
    nb = n // lanes
    acc = np.empty(lanes, np.float32)
    for r in range(rows):
        xr = x[r]
        yr = y[r]
        mu = _row_max(xr)
        acc[:] = _ZERO
        for b in range(nb):
            xb = xr[b * lanes:(b + 1) * lanes]
            for lane in range(lanes):
                acc[lane] += _exp_nonpos(xb[lane] - mu)
        xt = xr[nb * lanes:]
        for lane in range(xt.shape[0]):
            acc[lane] += _exp_nonpos(xt[lane] - mu)
        s = _ZERO
        for lane in range(lanes):
            s += acc[lane]
        inv = _ONE / s
        for i in range(n):
            yr[i] = _exp_nonpos(xr[i] - mu) * inv


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def three_pass_reload_rows(x, y, lanes):
    """Three-pass softmax reloading exp: mu = max x; y = exp(x - mu), s = sum y; y <- y / s."""
    rows, n = x.shape
    nb = n // lanes
    acc = np.empty(lanes, np.float32)
    for r in range(rows):
        xr = x[r]
        yr = y[r]
        mu = _row_max(xr)
        acc[:] = _ZERO
        for b in range(nb):
            xb = xr[b * lanes:(b + 1) * lanes]
            yb = yr[b * lanes:(b + 1) * lanes]
            for lane in range(lanes):
                v = _exp_nonpos(xb[lane] - mu)
                yb[lane] = v
                acc[lane] += v
        xt = xr[nb * lanes:]
        yt = yr[nb * lanes:]
        for lane in range(xt.shape[0]):
            v = _exp_nonpos(xt[lane] - mu)
            yt[lane] = v
            acc[lane] += v
        s = _ZERO
        for lane in range(lanes):
            s += acc[lane]
        inv = _ONE / s
        for i in range(n):
            yr[i] = yr[i] * inv


# ----------------------------------------------------------------------------------------------- bandwidth sweeps
@njit(cache=True, fastmath={"reassoc", "contract"})
def read_sum(x):
    """sum(x) of a 1-D float32 array: one streaming read of x (re-association lets LLVM vectorise the sum)."""
    s = _ZERO
    for i in range(x.shape[0]):
        s += x[i]
    return s


@njit(cache=True)
def scale_into(x, y, c):
    """y = c * x (one read of x, one write of y)."""
    for i in range(x.shape[0]):
        y[i] = x[i] * c


@njit(cache=True)
def scale_inplace(y, c):
    """y *= c (one read and one write of y)."""
    for i in range(y.shape[0]):
        y[i] = y[i] * c
