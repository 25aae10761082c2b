"""The numba kernels behind the CPU ``fused=True`` paths of :mod:`gradlab.optim` (see :mod:`gradlab.optim._fused`).

This module imports numba at import time; :mod:`gradlab.optim._fused` imports it lazily (numba is the ``kernels``
extra). Each kernel takes one parameter group's tensors as arrays of raw addresses plus element counts (every tensor
dense and contiguous, all of one dtype, float32 or float64), so one call updates the whole group: the Python cost
per step is one call per (group, dtype), not one per tensor. Per element, a kernel reads each input once and writes
each output once.

Arithmetic follows ATen's CPU kernels operation by operation, so that the fused path rounds like the for-loop path:

* ``torch.lerp`` with a scalar weight ``w`` is ``fma(w, b - a, a)`` for ``|w| < 0.5`` and ``fma(w - 1, b - a, b)``
  otherwise (ATen's formula; ``1 - w`` is exact there);
* ``add(x, alpha=s)`` is ``fma(x, s, self)``; ``addcmul(t1, t2, value=s)`` is ``fma(s * t1, t2, self)``;
  ``addcdiv(t1, t2, value=s)`` is ``s * t1 / t2 + self``; ``mul`` and ``div`` by a scalar are one rounding each;
* FMAs are explicit ``llvm.fma`` calls (:func:`_fma`) and no fast-math flag is set, so LLVM neither contracts
  other products nor re-associates. Every scalar arrives in the tensor's dtype, rounded from the Python double
  exactly as ATen rounds a scalar argument.

diffGrad's step cannot match ATen bit for bit, and does not try to where the order costs time: ``sqrt`` (LLVM's is
correctly rounded; ATen's vectorised CPU sqrt is not always: 14 of 1003 random float64 values differ by one ulp on
the development machine), the sigmoid, whose exponential here is a vectorisable Cody-Waite reduction with a Taylor
polynomial (the sigmoid alone stays within 1.5 ulp, as does ``torch.sigmoid``) where ATen calls Sleef or libm, and
one division instead of two for ``sigmoid * m / denom`` (the kernel is compute-bound: divisions are its most
expensive instructions).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.extending import intrinsic

_JIT = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)

# ------------------------------------------------------------------------------------------------- intrinsics
@intrinsic
def _ptr(typingctx, addr, like):
    """The int64 address ``addr`` as a pointer to ``like``'s float type."""
    if not isinstance(like, types.Float) or not isinstance(addr, types.Integer):
        return None
    ptr_t = types.CPointer(like)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr_t))

    return ptr_t(addr, like), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` with one rounding (``llvm.fma``), for three values of one float type."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


@intrinsic
def _as(typingctx, x, like):
    """``x`` converted to ``like``'s float type (round to nearest, as ``np.float32(x)``)."""
    if not (isinstance(x, types.Float) and isinstance(like, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], x, like)

    return like(x, like), codegen


@intrinsic
def _pow2_neg(typingctx, n):
    """``2**-n`` for an integer-valued float ``n`` in [0, 100], built in the exponent field."""
    if not isinstance(n, types.Float):
        return None
    is64 = n.bitwidth == 64

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        k = builder.fptosi(args[0], i32)
        if is64:
            i64 = ir.IntType(64)
            biased = builder.sub(ir.Constant(i64, 1023), builder.sext(k, i64))
            return builder.bitcast(builder.shl(biased, ir.Constant(i64, 52)), ir.DoubleType())
        biased = builder.sub(ir.Constant(i32, 127), k)
        return builder.bitcast(builder.shl(biased, ir.Constant(i32, 23)), ir.FloatType())

    return n(n), codegen


# ------------------------------------------------------------------------------------------------- scalar pieces
@njit(inline="always")
def _lerp(a, b, w, one):
    """ATen's ``lerp(a, b, w)`` (one FMA; the branch on the scalar ``w`` is loop-invariant)."""
    d = b - a
    if abs(w) < 0.5:
        return _fma(w, d, a)
    return _fma(w - one, d, b)


@njit(inline="always")
def _sign(x, one):
    zero = one - one
    return (one if x > zero else zero) - (one if x < zero else zero)


@njit(inline="always")
def _one_plus_exp_neg(x, one, k):
    """``1 + exp(-x)`` for ``x >= 0`` (NaN stays NaN, +inf gives 1), the denominator of the sigmoid; ``k`` holds
    the dtype's constants
    ``(x_max, log2e, ln2_hi, ln2_lo, half, c_d, ..., c_2)`` with ``c_j = 1/j!`` (see :func:`sigmoid_constants`).

    ``exp(-x) = 2^-n exp(t)`` with ``n = round(x log2 e)`` and ``t = n ln2 - x`` in [-ln2/2, ln2/2] (Cody-Waite:
    ``n * ln2_hi`` is exact), ``exp(t)`` by Horner's rule on the Taylor polynomial of degree ``d``: 13 in float64
    (truncation error below 1e-17 relative), 7 in float32 (below 6e-9, a tenth of float32's unit roundoff)."""
    x_max, log2e, ln2_hi, ln2_lo, half = k[0], k[1], k[2], k[3], k[4]
    x = x_max if x > x_max else x  # sigmoid(x) rounds to 1 beyond x_max; NaN passes through
    n = np.floor(x * log2e + half)
    n_cap = x_max + x_max  # n <= x_max log2(e) + 1/2 < 2 x_max; the cap keeps NaN's n finite for the conversion
    n = n if n < n_cap else n_cap
    t = (ln2_hi * n - x) + ln2_lo * n  # -x - n ln2 (n * ln2_hi is exact), |t| <= ln2/2
    p = k[5]
    for j in range(6, len(k)):  # a compile-time trip count: unrolled
        p = _fma(p, t, k[j])
    p = _fma(p, t, one)
    p = _fma(p, t, one)
    return one + p * _pow2_neg(n)


@njit(inline="always")
def _sigmoid_nonneg(x, one, k):
    """``sigmoid(x) = 1 / (1 + exp(-x))`` for ``x >= 0``."""
    return one / _one_plus_exp_neg(x, one, k)


def sigmoid_constants(dtype: type) -> tuple:
    """The constants tuple ``k`` of :func:`_sigmoid_nonneg` for ``np.float32`` or ``np.float64``."""
    if dtype is np.float64:
        x_max, hi, lo, degree = 40.0, 6.93147180369123816490e-01, 1.90821492927058770002e-10, 13  # fdlibm's ln 2
    else:
        x_max, hi, lo, degree = 20.0, 0.693359375, math.log(2.0) - 0.693359375, 7
    head = (x_max, 1.0 / math.log(2.0), hi, lo, 0.5)
    return tuple(dtype(c) for c in head) + tuple(dtype(1.0 / math.factorial(j)) for j in range(degree, 1, -1))


# ------------------------------------------------------------------------------------------------- kernels
@njit(**dict(_JIT, fastmath={"reassoc"}))
def first_nonfinite(g_addr, sizes, like):
    """Index of the first tensor holding an inf or NaN, or -1: one read of every gradient.

    ``sum(g * 0)`` is 0 for finite entries and NaN as soon as one entry is inf or NaN, in any summation order;
    ``reassoc`` lets LLVM vectorise the sum (folding ``g * 0`` to 0 would need the ``nnan``/``nsz`` flags, which
    are not set). Each tensor is read as four interleaved streams (its quarters), one partial sum each: a single
    read stream is latency-bound in DRAM (measured 0.22 ns per float32 entry at 25M entries on the development
    CPU, 0.16 with four streams; the fused updates, with 5-9 streams, move an array in 0.13-0.14)."""
    zero = like - like
    for t in range(sizes.shape[0]):
        n = sizes[t]
        g = carray(_ptr(g_addr[t], like), (n,))
        q = n // 4
        a0 = zero
        a1 = zero
        a2 = zero
        a3 = zero
        for i in range(q):
            a0 += g[i] * zero
            a1 += g[i + q] * zero
            a2 += g[i + 2 * q] * zero
            a3 += g[i + 3 * q] * zero
        for i in range(4 * q, n):
            a0 += g[i] * zero
        acc = (a0 + a1) + (a2 + a3)
        if acc != acc:
            return t
    return -1


@njit(inline="always")
def _bump(st_addr, t, st_one):
    """``step += 1`` for the step counter of tensor ``t`` (``st_one``: 1 in its dtype); the new value as float64."""
    st = carray(_ptr(st_addr[t], st_one), (1,))
    st[0] += st_one
    return np.float64(st[0])


@njit(**_JIT)
def lion_step(p_addr, g_addr, m_addr, st_addr, sizes, st_one, one, gsign, decay, neg_lr, w1, w2):
    """Lion for every tensor: ``step += 1``; ``c = lerp(m, g, w1); p = p*decay + neg_lr*sign(c);
    m = lerp(m, g, w2)``, with ``g`` multiplied by ``gsign`` (+-1, for ``maximize``) on the fly."""
    for t in range(sizes.shape[0]):
        _bump(st_addr, t, st_one)
        n = sizes[t]
        p = carray(_ptr(p_addr[t], one), (n,))
        g = carray(_ptr(g_addr[t], one), (n,))
        m = carray(_ptr(m_addr[t], one), (n,))
        for i in range(n):
            gi = g[i] * gsign
            mi = m[i]
            u = _sign(_lerp(mi, gi, w1, one), one)
            p[i] = p[i] * decay + neg_lr * u  # neg_lr * u is exact (u in {-1, 0, 1}): ATen's fma gives the same
            m[i] = _lerp(mi, gi, w2, one)


@njit(**_JIT)
def diffgrad_step(p_addr, g_addr, m_addr, v_addr, prev_addr, st_addr, sizes, st_one, one, gsign, l2, decay,
                  lr, beta1, beta2, half, w1, beta2_t, value2, eps, k):
    """diffGrad for every tensor: ``step += 1``, then with ``c1 = -lr / (1 - beta1^step)`` and
    ``c2 = (1 - beta2^step)^half`` (Python-double arithmetic, then rounded to the tensor's dtype; ``half = 0.5``
    arrives at run time so that LLVM keeps ``pow`` instead of ``sqrt``, as Python's ``** 0.5`` does):

    ``g' = fma(p, l2, g)``; ``m = lerp(m, g', w1)``; ``v = fma(value2 * g', g', v * beta2_t)``;
    ``p = p * decay + (c1 * m) / ((1 + exp(-|prev - g'|)) * (sqrt(v) / c2 + eps))``; ``prev = g'``. The last line is
    ``c1 * sigmoid(|prev - g'|) * m / denom`` with one division instead of two (the loop path rounds the sigmoid
    and the product separately: a few ulps apart).
    """
    for t in range(sizes.shape[0]):
        step = _bump(st_addr, t, st_one)
        c1 = _as(-(lr / (1 - beta1 ** step)), one)
        c2 = _as((1 - beta2 ** step) ** half, one)
        n = sizes[t]
        p = carray(_ptr(p_addr[t], one), (n,))
        g = carray(_ptr(g_addr[t], one), (n,))
        m = carray(_ptr(m_addr[t], one), (n,))
        v = carray(_ptr(v_addr[t], one), (n,))
        prev = carray(_ptr(prev_addr[t], one), (n,))
        for i in range(n):
            pi = p[i]
            gi = g[i] * gsign
            if l2 != 0:  # loop-invariant: LLVM unswitches it
                gi = _fma(pi, l2, gi)
            mi = _lerp(m[i], gi, w1, one)
            vi = _fma(value2 * gi, gi, v[i] * beta2_t)
            denom = np.sqrt(vi) / c2 + eps
            # c1 * sigmoid(d) * m / denom with one division for both: c1 * m / ((1 + exp(-d)) * denom)
            p[i] = pi * decay + (c1 * mi) / (_one_plus_exp_neg(abs(prev[i] - gi), one, k) * denom)
            m[i] = mi
            v[i] = vi
            prev[i] = gi


@njit(**dict(_JIT, fastmath={"reassoc"}))
def sum_squares(p_addr, g_addr, s_addr, st_addr, sizes, st_one, gsign, l2):
    """Per tensor: ``step += 1`` and ``s += sum((g*gsign + l2*p)^2)``, the sum accumulated in float64 and rounded
    once to ``s``'s dtype (that of the tensor). The sum may be re-associated (``fastmath={"reassoc"}``, so that
    LLVM vectorises it with several partial sums); no other fast-math flag, so NaN/inf propagate. With ``l2 = 0``
    (two separate loops, so that each vectorises) the parameter is not read, and the gradient is read as four
    interleaved streams (see :func:`first_nonfinite`)."""
    for t in range(sizes.shape[0]):
        _bump(st_addr, t, st_one)
        n = sizes[t]
        g = carray(_ptr(g_addr[t], gsign), (n,))
        acc = 0.0
        if l2 == 0:
            q = n // 4
            a1 = 0.0
            a2 = 0.0
            a3 = 0.0
            for i in range(q):
                d0 = np.float64(g[i])
                d1 = np.float64(g[i + q])
                d2 = np.float64(g[i + 2 * q])
                d3 = np.float64(g[i + 3 * q])
                acc += d0 * d0
                a1 += d1 * d1
                a2 += d2 * d2
                a3 += d3 * d3
            for i in range(4 * q, n):
                d = np.float64(g[i])
                acc += d * d
            acc = (acc + a1) + (a2 + a3)
        else:
            p = carray(_ptr(p_addr[t], gsign), (n,))
            for i in range(n):
                d = np.float64(_fma(p[i], l2, g[i] * gsign))
                acc += d * d
        s = carray(_ptr(s_addr[t], gsign), (1,))
        s[0] += _as(acc, gsign)


@njit(**_JIT)
def adagradnorm_step(p_addr, g_addr, sizes, gsign, l2, decay, denom, neg_lr):
    """AdaGrad-Norm's update for every tensor: ``d = fma(p, l2, g*gsign)``; ``p = fma(d / denom, neg_lr,
    p * decay)`` (``denom = sqrt(b^2) + eps``, already in the tensor's dtype)."""
    for t in range(sizes.shape[0]):
        n = sizes[t]
        p = carray(_ptr(p_addr[t], gsign), (n,))
        g = carray(_ptr(g_addr[t], gsign), (n,))
        for i in range(n):
            pi = p[i]
            d = g[i] * gsign
            if l2 != 0:
                d = _fma(pi, l2, d)
            p[i] = _fma(d / denom, neg_lr, pi * decay)
