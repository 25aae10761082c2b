"""Krylov solvers with arbitrary search directions: the Deep Conjugate Direction Method (DCDM), plus IC(0) and AMG
preconditioners for its baselines.

**DCDM** (Kaneda, Akar, Chen, Kala, Hyde, Teran; "A Deep Conjugate Direction Method for Iteratively Solving Linear
Systems", ICML 2023, arXiv 2205.10763). For a symmetric positive definite :math:`A` and any map :math:`f` (in the
paper a network trained so that :math:`f(r) \\approx c(r) A^{-1} r`), iteration :math:`k` is

.. math::
    q &= f\\big(r_{k-1} / \\lVert r_{k-1} \\rVert\\big), \\qquad
    q \\leftarrow q - \\sum_{i \\in \\text{last } n_o} \\frac{q^\\top A p_i}{p_i^\\top A p_i}\\, p_i,\\\\
    \\alpha &= \\frac{q^\\top r_{k-1}}{q^\\top A q}, \\qquad x_k = x_{k-1} + \\alpha q,
    \\qquad r_k = r_{k-1} - \\alpha A q, \\qquad p_k = q .

Each step is an exact line search in the :math:`A`-norm, so :math:`\\lVert x_k - x^\\star \\rVert_A` never increases
whatever :math:`f` is. With :math:`f = \\mathrm{id}` the direction is the residual :math:`A`-orthogonalised against the
previous direction(s), which is conjugate gradients: the iteration counts equal :func:`scipy.sparse.linalg.cg`'s.
A product :math:`A p_i` is kept for each remembered direction, so one matrix-vector product is done per step.

Conventions follow :func:`scipy.sparse.linalg.cg`: ``A`` is a sparse matrix/array, a dense array or a
``LinearOperator``; the iteration stops when :math:`\\lVert r \\rVert < \\max(\\text{atol}, \\text{rtol}\\,
\\lVert b \\rVert)` (checked before each step), ``maxiter`` defaults to ``10 n``, ``callback(xk)`` is called after
each step, and ``info`` is 0 on convergence, ``maxiter`` when the budget ran out and negative on breakdown
(:math:`q^\\top A q \\le 0`: ``A`` is not positive definite along ``q``, or ``q`` lies in the span of the remembered
directions); ``info = -k`` names the step ``k`` that broke down. Krylov arithmetic is float64 whatever ``direction``
computes in (the paper runs its network in float32).

**IC(0)** (Meijerink & van der Vorst 1977): the lower-triangular :math:`L` with the sparsity pattern of
:math:`\\mathrm{tril}(A)` such that :math:`(L L^\\top)_{ij} = A_{ij}` on that pattern, computed row by row
(up-looking):

.. math::
    L_{ij} = \\Big(A_{ij} - \\sum_{k < j} L_{ik} L_{jk}\\Big) / L_{jj}\\ \\ (j < i), \\qquad
    L_{ii} = \\Big(A_{ii} - \\sum_{k < i} L_{ik}^2\\Big)^{1/2},

with the sums over the pattern only. The preconditioner applies :math:`M^{-1} r = L^{-\\top} L^{-1} r`. SciPy has no
incomplete Cholesky (``spilu`` is a non-symmetric ILUTP).

**AMG**: pyamg's smoothed-aggregation hierarchy (Vanek, Mandel, Brezina 1996) applied as one V-cycle per
preconditioner call.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, aslinearoperator, splu

from gradlab.core import check_int, check_positive

__all__ = ["IncompleteCholesky", "amg_preconditioner", "dcdm", "ichol0"]


def _as_operator(A: Any) -> LinearOperator:
    if isinstance(A, LinearOperator):
        op = A
    elif sp.issparse(A) or isinstance(A, np.ndarray):
        op = aslinearoperator(A)
    elif hasattr(A, "__array__"):
        arr = np.asarray(A)
        if arr.dtype == object:
            raise TypeError(f"A must be a sparse matrix, a dense array or a LinearOperator; got {type(A).__name__}")
        op = aslinearoperator(arr)
    else:
        raise TypeError(f"A must be a sparse matrix, a dense array or a LinearOperator; got {type(A).__name__}")
    if len(op.shape) != 2 or op.shape[0] != op.shape[1]:
        raise ValueError(f"A must be square; got shape {op.shape}")
    if op.shape[0] == 0:
        raise ValueError("A must not be empty")
    return op


def _as_vector(name: str, v: Any, n: int) -> np.ndarray:
    try:
        arr = np.asarray(v)
    except Exception as err:  # e.g. a CUDA tensor
        raise TypeError(f"{name} must be an array-like of real numbers; got {type(v).__name__}") from err
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}")
    if arr.shape not in ((n,), (n, 1)):
        raise ValueError(f"{name} must have shape ({n},) or ({n}, 1) to match A; got {arr.shape}")
    out = np.array(arr, dtype=np.float64).reshape(n)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf")
    return out


def dcdm(
    A: Any,
    b: Any,
    x0: Any = None,
    *,
    direction: Callable[[np.ndarray], Any],
    rtol: float = 1e-5,
    atol: float = 0.0,
    maxiter: int | None = None,
    n_orth: int = 2,
    callback: Callable[[np.ndarray], Any] | None = None,
) -> tuple[np.ndarray, int]:
    """Solve :math:`A x = b` (``A`` SPD) by conjugate directions ``q = direction(r / ||r||)`` (arXiv 2205.10763).

    Args:
        A: ``(n, n)`` sparse matrix/array, dense array or ``scipy.sparse.linalg.LinearOperator``; must be symmetric
            positive definite (only ``A @ v`` is used).
        b: right-hand side, ``(n,)`` or ``(n, 1)``.
        x0: starting guess (default zeros).
        direction: any callable mapping the normalised residual (float64 ``(n,)`` numpy array) to a search
            direction of ``n`` numbers (numpy array, torch tensor, any dtype); e.g. a trained
            :class:`~gradlab.operators.dcdm.DCDMNet` through :func:`~gradlab.operators.dcdm.net_direction`.
        rtol, atol: stop when ``||r|| < max(atol, rtol * ||b||)``.
        maxiter: maximum number of steps, >= 1 (default ``10 n``).
        n_orth: number of previous directions ``q`` is ``A``-orthogonalised against (the paper uses 2; 0 disables).
        callback: called as ``callback(xk)`` after every step.

    Returns:
        ``(x, info)``: the float64 solution and 0 (converged), ``maxiter`` (not converged) or ``-k`` (breakdown at
        step ``k``: ``q^T A q <= 0``).

    Raises:
        ValueError: bad shapes, NaN/inf in ``b`` or ``x0``, bad tolerances.
        FloatingPointError: ``direction`` or ``A q`` produced NaN/inf (the message names the step).
    """
    op = _as_operator(A)
    n = op.shape[0]
    if not callable(direction):
        raise TypeError(f"direction must be callable r -> q; got {type(direction).__name__}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None; got {type(callback).__name__}")
    rtol = check_positive("rtol", rtol, allow_zero=True)
    atol = check_positive("atol", atol, allow_zero=True)
    if rtol == 0 and atol == 0:
        raise ValueError("rtol and atol must not both be 0 (the iteration could never stop)")
    maxiter = 10 * n if maxiter is None else check_int("maxiter", maxiter, minimum=1)
    n_orth = check_int("n_orth", n_orth, minimum=0)
    bb = _as_vector("b", b, n)
    x = np.zeros(n) if x0 is None else _as_vector("x0", x0, n)

    bnorm = float(np.linalg.norm(bb))
    if bnorm == 0.0:
        return np.zeros(n), 0
    tol = max(atol, rtol * bnorm)
    if x.any():
        Ax = np.asarray(op.matvec(x), dtype=np.float64).reshape(n)
        if not np.isfinite(Ax).all():
            raise FloatingPointError("A @ x0 contains NaN or inf")
        r = bb - Ax
    else:
        r = bb.copy()
    dirs: list[np.ndarray] = []  # remembered directions p_i
    adirs: list[np.ndarray] = []  # A p_i
    pap: list[float] = []  # p_i^T A p_i
    for k in range(1, maxiter + 1):
        rnorm = float(np.linalg.norm(r))
        if rnorm < tol:
            return x, 0
        q = _direction_vector(direction, r / rnorm, n, k)
        for p, ap, d in zip(dirs, adirs, pap):
            q -= (float(q @ ap) / d) * p
        Aq = np.asarray(op.matvec(q), dtype=np.float64).reshape(n)
        if not np.isfinite(Aq).all():
            raise FloatingPointError(f"A @ q contains NaN or inf at iteration {k}")
        qAq = float(q @ Aq)
        if not qAq > 0.0 or not math.isfinite(qAq):
            return x, -k
        alpha = float(q @ r) / qAq
        x += alpha * q
        r -= alpha * Aq
        if n_orth:
            dirs.append(q)
            adirs.append(Aq)
            pap.append(qAq)
            if len(dirs) > n_orth:
                del dirs[0], adirs[0], pap[0]
        if callback is not None:
            callback(x)
    if float(np.linalg.norm(r)) < tol:
        return x, 0
    return x, maxiter


def _direction_vector(direction: Callable[[np.ndarray], Any], r: np.ndarray, n: int, k: int) -> np.ndarray:
    out = direction(r.copy())
    if hasattr(out, "detach"):  # torch tensor
        out = out.detach().cpu().double().numpy()
    q = np.asarray(out)
    if q.size != n:
        raise ValueError(f"direction must return {n} numbers; got shape {q.shape} at iteration {k}")
    if not (np.issubdtype(q.dtype, np.floating) or np.issubdtype(q.dtype, np.integer)):
        raise TypeError(f"direction must return real numbers; got dtype {q.dtype} at iteration {k}")
    q = np.array(q, dtype=np.float64).reshape(n)
    if not np.isfinite(q).all():
        raise FloatingPointError(f"direction returned NaN or inf at iteration {k}")
    return q


# ---------------------------------------------------------------------------------------------------------------
# Preconditioners
# ---------------------------------------------------------------------------------------------------------------


def _symmetric_csr(name: str, A: Any) -> sp.csr_array:
    if isinstance(A, LinearOperator):
        raise TypeError(f"{name} must be a sparse matrix or a dense array (its entries are needed); got a LinearOperator")
    if sp.issparse(A):
        M = sp.csr_array(A, dtype=np.float64)
    else:
        arr = np.asarray(A)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"{name} must be a real sparse matrix or dense array; got {type(A).__name__}")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D; got shape {arr.shape}")
        M = sp.csr_array(arr.astype(np.float64))
    if M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise ValueError(f"{name} must be square and non-empty; got shape {M.shape}")
    M.sum_duplicates()
    M.sort_indices()
    if not np.isfinite(M.data).all():
        raise ValueError(f"{name} contains NaN or inf")
    asym = abs(M - M.T)
    scale = float(abs(M).max()) if M.nnz else 0.0
    if asym.nnz and float(asym.max()) > 1e-12 * max(scale, 1.0):
        raise ValueError(f"{name} must be symmetric; max |A - A^T| = {float(asym.max()):.3g}")
    return M


class IncompleteCholesky(LinearOperator):
    """IC(0) preconditioner :math:`M^{-1} = L^{-\\top} L^{-1}` as a ``LinearOperator`` (use as ``cg(A, b, M=...)``).

    Attributes:
        L: the lower-triangular factor (``scipy.sparse.csr_array``) with the pattern of ``tril(A)``.
    """

    def __init__(self, L: sp.csr_array) -> None:
        n = L.shape[0]
        super().__init__(dtype=np.float64, shape=(n, n))
        self.L = L
        # SuperLU of a triangular matrix with natural ordering and diagonal pivots is the matrix itself (no fill):
        # its compiled triangular solves are reused for every application.
        self._lu = splu(sp.csc_matrix(L), permc_spec="NATURAL", diag_pivot_thresh=0.0)

    def _matvec(self, x: np.ndarray) -> np.ndarray:
        v = np.asarray(x, dtype=np.float64).reshape(self.shape[0])
        y = self._lu.solve(v)  # L y = x
        return self._lu.solve(y, trans="T").reshape(np.shape(x))  # L^T z = y

    def _rmatvec(self, x: np.ndarray) -> np.ndarray:
        return self._matvec(x)


def ichol0(A: Any) -> IncompleteCholesky:
    """Zero-fill incomplete Cholesky factorisation of a symmetric positive definite sparse ``A``.

    Returns an :class:`IncompleteCholesky` ``LinearOperator`` applying :math:`(L L^\\top)^{-1}`; ``.L`` holds the
    factor, whose product :math:`L L^\\top` equals ``A`` on the pattern of ``A``.

    The factorisation is a one-off set-up cost of :math:`O(\\mathrm{nnz}\\cdot w)` (``w`` the row width): it is a
    sequential recurrence (each row needs the rows before it), computed here row by row on CSR rows; the
    preconditioner's applications are compiled sparse triangular solves.

    Raises:
        TypeError: ``A`` is not a real square symmetric matrix.
        ValueError: ``A`` is not square or symmetric, or holds NaN/inf.
        ValueError: a non-positive pivot (``A`` is not SPD, or IC(0) breaks down for it), naming the row.
    """
    M = _symmetric_csr("A", A)
    n = M.shape[0]
    T = sp.tril(M, format="csr")
    T.sort_indices()
    indptr, indices, data = T.indptr, T.indices, T.data
    vals = np.zeros_like(data)
    # row i of L as {column: position in vals}
    pos_of: list[dict[int, int]] = []
    for i in range(n):
        lo, hi = int(indptr[i]), int(indptr[i + 1])
        cols = indices[lo:hi]
        if hi == lo or int(cols[-1]) != i:
            raise ValueError(f"A must have a stored diagonal entry in every row (IC(0)); row {i} has none")
        row_pos = {int(c): lo + t for t, c in enumerate(cols)}
        for t in range(hi - lo - 1):  # off-diagonal entries j < i, ascending
            j = int(cols[t])
            s = float(data[lo + t])
            prev = pos_of[j]
            for c, pj in prev.items():  # k in pattern(row j), k < j, also in pattern(row i)
                if c < j:
                    pi = row_pos.get(c)
                    if pi is not None:
                        s -= vals[pi] * vals[pj]
            vals[lo + t] = s / vals[prev[j]]
        d = float(data[hi - 1]) - float(np.dot(vals[lo:hi - 1], vals[lo:hi - 1]))
        if not d > 0.0 or not math.isfinite(d):
            raise ValueError(f"IC(0) met a non-positive pivot {d:.3g} at row {i}: A is not positive definite "
                             "(or incomplete Cholesky breaks down for this matrix)")
        vals[hi - 1] = math.sqrt(d)
        pos_of.append(row_pos)
    L = sp.csr_array((vals, indices.copy(), indptr.copy()), shape=(n, n))
    return IncompleteCholesky(L)


def amg_preconditioner(A: Any, *, cycle: str = "V", **solver_options: Any) -> LinearOperator:
    """pyamg smoothed-aggregation AMG, one ``cycle`` per application, as a ``LinearOperator`` for ``cg(M=...)``.

    ``solver_options`` are passed to :func:`pyamg.smoothed_aggregation_solver`. Needs the ``operators`` extra
    (``pip install 'gradlab[operators]'``).
    """
    if cycle not in ("V", "W", "F", "AMLI"):
        raise ValueError(f"cycle must be one of ['V', 'W', 'F', 'AMLI']; got {cycle!r}")
    M = _symmetric_csr("A", A)
    try:
        import pyamg
    except ImportError as err:
        raise ImportError("amg_preconditioner needs pyamg: install the operators extra, "
                          "pip install 'gradlab[operators]'") from err
    ml = pyamg.smoothed_aggregation_solver(sp.csr_matrix(M), **solver_options)
    return ml.aspreconditioner(cycle=cycle)
