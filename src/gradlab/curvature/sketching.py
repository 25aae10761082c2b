"""Randomized iterative sketching solvers for a square linear system ``K z = b`` (Gaussian and Kaczmarz).

Sketch-and-project (Gower & Richtarik, 2015) with a one-column sketch ``s``: the iterate is projected onto
the solution set of the sketched equation ``s^T K z = s^T b``::

    r_t     = K z_t - b
    z_{t+1} = z_t - (s_t^T r_t / ||K^T s_t||^2) K^T s_t

* ``"gaussian"``: ``s_t ~ N(0, I)`` (the "GV" sketch of Hong, Na, Mahoney & Kolar, ICML 2023);
* ``"kaczmarz"``: ``s_t = e_i`` with ``i`` uniform (randomized Kaczmarz: project onto one row's hyperplane).

Both converge in expectation for any nonsingular ``K`` (symmetric indefinite KKT matrices included), at a rate
governed by ``sigma_min(K)^2 / ||K||_F^2``.

Implementation: ``T`` consecutive steps are computed at once, exactly (up to rounding) as the sequential
recursion would. With ``W = K^T S``, ``V = K W`` and ``C = S^T V`` the step coefficients ``a_t`` satisfy
``C_tt a_t + sum_{j<t} C_tj a_j = s_t^T r_0``, a lower-triangular system solved by forward substitution;
the residual after each step, ``r_0 - V[:, :t] a[:t]``, gives the exact stopping index inside the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import solve_triangular

from gradlab.core.validation import check_choice, check_int, check_positive

SKETCH_METHODS: tuple[str, ...] = ("gaussian", "kaczmarz")


@dataclass(frozen=True)
class SketchSolveResult:
    """Outcome of :func:`sketch_solve`.

    Attributes:
        z: the final iterate.
        residual_norm: ``||K z - b||_2`` recomputed at ``z``.
        n_iter: number of one-column sketch steps taken.
        converged: whether ``residual_norm <= tol``.
    """

    z: np.ndarray
    residual_norm: float
    n_iter: int
    converged: bool


def _as_generator(rng: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be an int seed, a numpy Generator or None; got {type(rng).__name__}")


def sketch_solve(
    K: np.ndarray,
    b: np.ndarray,
    tol: float,
    method: str = "gaussian",
    z0: np.ndarray | None = None,
    max_iter: int = 1_000_000,
    rng: int | np.random.Generator | None = None,
    block_size: int = 128,
) -> SketchSolveResult:
    """Solve ``K z = b`` by randomized iterative sketching until ``||K z - b||_2 <= tol``.

    Args:
        K: square ``(N, N)`` matrix (need not be symmetric or definite; must be nonsingular to converge).
        b: right-hand side of shape ``(N,)``.
        tol: absolute residual target (``>= 0``).
        method: ``"gaussian"`` (Gaussian-vector sketch) or ``"kaczmarz"`` (uniform row sketch).
        z0: warm start (zeros if ``None``).
        max_iter: cap on the number of sketch steps.
        rng: seed or ``numpy.random.Generator`` drawing the sketches.
        block_size: number of sketch steps evaluated together (an implementation detail: the sketches are drawn
            in sequence and the iterates are those of the sequential method whatever the block size; memory and
            time per block grow as ``block_size**2``).

    Returns:
        :class:`SketchSolveResult`.
    """
    check_choice("method", method, SKETCH_METHODS)
    tol = check_positive("tol", tol, allow_zero=True)
    max_iter = check_int("max_iter", max_iter, minimum=0)
    block_size = check_int("block_size", block_size, minimum=1)
    K = np.asarray(K, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square matrix; got shape {K.shape}")
    n = K.shape[0]
    if b.shape != (n,):
        raise ValueError(f"b must have shape ({n},) to match K; got {b.shape}")
    z = np.zeros(n) if z0 is None else np.array(z0, dtype=np.float64, copy=True)
    if z.shape != (n,):
        raise ValueError(f"z0 must have shape ({n},); got {z.shape}")
    if not (np.isfinite(K).all() and np.isfinite(b).all() and np.isfinite(z).all()):
        raise ValueError("K, b and z0 must be finite (found NaN or inf)")
    gen = _as_generator(rng)

    KKt = K @ K.T
    row_sq = np.diag(KKt).copy()
    if method == "kaczmarz" and np.any(row_sq <= 0):
        raise ValueError("K has a zero row, so the system is singular and Kaczmarz steps are undefined")
    r = K @ z - b
    rnorm = float(np.linalg.norm(r))
    done = 0
    while rnorm > tol and done < max_iter:
        t_block = min(block_size, max_iter - done)
        if method == "gaussian":
            S = gen.standard_normal((t_block, n)).T  # row t is sketch t: draws independent of blocking
            W = K.T @ S
            V = KKt @ S
            C = S.T @ V
            rhs = S.T @ r
        else:
            idx = gen.integers(0, n, size=t_block)
            W = K[idx, :].T
            V = KKt[:, idx]
            C = KKt[np.ix_(idx, idx)]
            rhs = r[idx]
        coef = solve_triangular(C, rhs, lower=True, check_finite=False)
        traj = r[:, None] - np.cumsum(V * coef, axis=1)
        norms = np.linalg.norm(traj, axis=0)
        hits = np.flatnonzero(norms <= tol)
        used = int(hits[0]) + 1 if hits.size else t_block
        z -= W[:, :used] @ coef[:used]
        done += used
        r = K @ z - b
        rnorm = float(np.linalg.norm(r))
        if not np.isfinite(rnorm):
            raise FloatingPointError("sketch iteration diverged (non-finite residual); is K singular or badly scaled?")
    return SketchSolveResult(z=z, residual_norm=rnorm, n_iter=done, converged=bool(rnorm <= tol))
