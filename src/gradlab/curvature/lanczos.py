"""Lanczos iteration with full reorthogonalization, and power iteration, on any symmetric curvature operator.

**Lanczos** (Lanczos 1950; Golub & Van Loan, *Matrix Computations*, Alg. 10.1.1 with full reorthogonalization).
Given a symmetric :math:`A \\in \\mathbb{R}^{P\\times P}` and a start vector :math:`q_1` (:math:`\\|q_1\\|=1`):

.. math::
    w = A q_j - \\beta_{j-1} q_{j-1},\\quad \\alpha_j = q_j^\\top w,\\quad w \\leftarrow w - \\alpha_j q_j,\\quad
    w \\leftarrow w - Q_j (Q_j^\\top w)\\ (\\text{twice}),\\quad \\beta_j = \\|w\\|,\\quad q_{j+1} = w/\\beta_j .

After :math:`m` steps :math:`Q_m^\\top A Q_m = T_m = \\mathrm{tridiag}(\\beta, \\alpha, \\beta)`. The eigenvalues of
:math:`T_m` (Ritz values) approximate *both* ends of the spectrum of :math:`A`; the squared first components of its
eigenvectors are the Gauss quadrature weights used by stochastic Lanczos quadrature (:mod:`gradlab.curvature.slq`).
Without reorthogonalization the basis loses orthogonality after ~20 steps and spurious copies of converged Ritz values
appear; we reorthogonalize against the whole basis (classical Gram-Schmidt applied twice, "twice is enough").

**Batched.** ``v0`` may be ``(P, b)``: ``b`` independent Lanczos processes advance together, one ``matmat`` per step.
On breakdown (:math:`\\beta_j \\approx 0`: an invariant subspace was found) a process continues from a fresh random
vector orthogonal to its basis with :math:`\\beta_j = 0`; :math:`T` then becomes block diagonal, its Ritz values stay
eigenvalues of ``A`` and the quadrature weights of the added nodes are exactly zero.

**Power iteration** returns the eigenvalue of largest *magnitude* (which may be negative; use Lanczos for the two
ends) with a Rayleigh-quotient estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from gradlab.core import check_int, check_positive
from gradlab.curvature.hvp import CurvatureOperator, as_operator


@dataclass(frozen=True)
class LanczosResult:
    """Output of :func:`lanczos` for ``b`` runs of ``m`` steps.

    Attributes:
        alphas: diagonal of :math:`T`, shape ``(b, m)``.
        betas: off-diagonal of :math:`T`, shape ``(b, m - 1)``.
        ritz_values: eigenvalues of each :math:`T`, ascending, ``(b, m)``.
        ritz_weights: squared first components of the eigenvectors of :math:`T` (Gauss quadrature weights), ``(b, m)``.
        ritz_vectors: ``(P, m, b)`` approximate eigenvectors :math:`Q_m S` if requested, else ``None``.
        basis: ``(P, m, b)`` Lanczos basis :math:`Q_m` if requested, else ``None``.
    """

    alphas: torch.Tensor
    betas: torch.Tensor
    ritz_values: torch.Tensor
    ritz_weights: torch.Tensor
    ritz_vectors: torch.Tensor | None = None
    basis: torch.Tensor | None = None

    @property
    def top(self) -> torch.Tensor:
        """Largest Ritz value of each run, ``(b,)``."""
        return self.ritz_values[:, -1]

    @property
    def bottom(self) -> torch.Tensor:
        """Smallest Ritz value of each run, ``(b,)``."""
        return self.ritz_values[:, 0]

    def tridiagonal(self) -> torch.Tensor:
        """The ``(b, m, m)`` tridiagonal matrices :math:`T`."""
        T = torch.diag_embed(self.alphas)
        if self.betas.shape[1] > 0:
            T = T + torch.diag_embed(self.betas, offset=1) + torch.diag_embed(self.betas, offset=-1)
        return T


def _start(op: CurvatureOperator, v0: torch.Tensor | None, num_runs: int, generator: torch.Generator | None) -> torch.Tensor:
    if v0 is None:
        V = torch.randn(op.size, num_runs, generator=generator, dtype=torch.float64)
        return V.to(dtype=op.dtype, device=op.device)
    if not isinstance(v0, torch.Tensor):
        raise TypeError(f"v0 must be a torch.Tensor; got {type(v0).__name__}")
    V = v0[:, None] if v0.ndim == 1 else v0
    if V.ndim != 2 or V.shape[0] != op.size:
        raise ValueError(f"v0 must have shape ({op.size},) or ({op.size}, b); got {tuple(v0.shape)}")
    if not torch.isfinite(V).all():
        raise ValueError("v0 contains NaN or inf")
    if (V.norm(dim=0) == 0).any():
        raise ValueError("v0 must have non-zero columns")
    return V.to(dtype=op.dtype, device=op.device)


def lanczos(
    operator: Any,
    num_iters: int = 30,
    *,
    v0: torch.Tensor | None = None,
    num_runs: int = 1,
    reorthogonalize: bool = True,
    return_vectors: bool = False,
    generator: torch.Generator | None = None,
    breakdown_tol: float = 1e-10,
) -> LanczosResult:
    """Run ``num_iters`` Lanczos steps on a symmetric operator (``b`` runs in parallel).

    Args:
        operator: a :class:`~gradlab.curvature.hvp.CurvatureOperator` (e.g. :class:`HessianOperator`) or a
            symmetric square tensor.
        num_iters: Krylov dimension ``m`` (capped at ``P``).
        v0: start vector(s) ``(P,)`` or ``(P, b)``; default ``num_runs`` standard-normal vectors from ``generator``.
        num_runs: number of independent runs when ``v0`` is ``None``.
        reorthogonalize: full reorthogonalization (recommended; ``False`` gives the textbook three-term recurrence).
        return_vectors: also return the basis and the Ritz vectors (memory ``P * m * b``).
        breakdown_tol: relative threshold on :math:`\\beta_j / \\|T\\|` that declares an invariant subspace.
    """
    op = as_operator(operator)
    m = min(check_int("num_iters", num_iters, minimum=1), op.size)
    check_int("num_runs", num_runs, minimum=1)
    check_positive("breakdown_tol", breakdown_tol)
    Q0 = _start(op, v0, num_runs, generator)
    P, b = Q0.shape
    q = Q0 / Q0.norm(dim=0)
    Q = torch.zeros(m, P, b, dtype=op.dtype, device=op.device)
    alphas = torch.zeros(b, m, dtype=op.dtype, device=op.device)
    betas = torch.zeros(b, max(m - 1, 0), dtype=op.dtype, device=op.device)
    q_prev = torch.zeros_like(q)
    beta_prev = torch.zeros(b, dtype=op.dtype, device=op.device)
    scale = torch.zeros(b, dtype=op.dtype, device=op.device)
    for j in range(m):
        Q[j] = q
        w = op.matmat(q)
        if not torch.isfinite(w).all():
            raise ValueError(f"the operator produced NaN or inf at Lanczos step {j}")
        w = w - beta_prev * q_prev
        alpha = (q * w).sum(dim=0)
        alphas[:, j] = alpha
        w = w - alpha * q
        if reorthogonalize:
            for _ in range(2):
                coef = torch.einsum("jpb,pb->jb", Q[: j + 1], w)
                w = w - torch.einsum("jpb,jb->pb", Q[: j + 1], coef)
        if j == m - 1:
            break
        beta = w.norm(dim=0)
        scale = torch.maximum(scale, alpha.abs() + beta + beta_prev)
        broke = beta <= breakdown_tol * torch.clamp(scale, min=torch.finfo(op.dtype).tiny)
        if broke.any():
            fresh = torch.randn(P, b, generator=generator, dtype=torch.float64).to(dtype=op.dtype, device=op.device)
            for _ in range(2):
                coef = torch.einsum("jpb,pb->jb", Q[: j + 1], fresh)
                fresh = fresh - torch.einsum("jpb,jb->pb", Q[: j + 1], coef)
            fresh = fresh / fresh.norm(dim=0)
            beta = torch.where(broke, torch.zeros_like(beta), beta)
            w_unit = torch.where(broke, fresh, w / torch.where(broke, torch.ones_like(beta), beta))
        else:
            w_unit = w / beta
        betas[:, j] = beta
        q_prev, q, beta_prev = q, w_unit, beta
    result = LanczosResult(alphas, betas, alphas, alphas)  # placeholder for tridiagonal()
    evals, evecs = torch.linalg.eigh(result.tridiagonal())
    weights = evecs[:, 0, :] ** 2
    ritz_vectors = basis = None
    if return_vectors:
        basis = Q.permute(1, 0, 2).contiguous()  # (P, m, b)
        ritz_vectors = torch.einsum("pjb,bjk->pkb", basis, evecs)
    return LanczosResult(alphas, betas, evals, weights, ritz_vectors, basis)


def extreme_eigenvalues(
    operator: Any,
    num_iters: int = 30,
    k: int = 1,
    *,
    v0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(largest k, smallest k)`` Ritz values of one Lanczos run: both ends of the spectrum.

    The largest are returned in descending order, the smallest in ascending order.
    """
    check_int("k", k, minimum=1)
    res = lanczos(operator, num_iters, v0=v0, generator=generator)
    vals = res.ritz_values[0]
    if k > vals.numel():
        raise ValueError(f"k must be <= the number of Lanczos steps ({vals.numel()}); got {k}")
    return vals.flip(0)[:k], vals[:k]


@dataclass(frozen=True)
class PowerIterationResult:
    """Largest-magnitude eigenpair estimate."""

    eigenvalue: float
    eigenvector: torch.Tensor
    num_iters: int
    converged: bool


def power_iteration(
    operator: Any,
    num_iters: int = 100,
    *,
    tol: float = 1e-6,
    v0: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> PowerIterationResult:
    """Power iteration :math:`v \\leftarrow A v / \\|A v\\|` with Rayleigh quotient :math:`\\lambda = v^\\top A v`.

    Converges to the eigenvalue of largest magnitude (sign included) at rate :math:`|\\lambda_2/\\lambda_1|`; stops
    when the relative change of :math:`\\lambda` is below ``tol``.
    """
    op = as_operator(operator)
    n = check_int("num_iters", num_iters, minimum=1)
    check_positive("tol", tol)
    v = _start(op, v0, 1, generator)[:, 0]  # the first column if several are given
    v = v / v.norm()
    lam = torch.zeros((), dtype=op.dtype, device=op.device)
    for i in range(1, n + 1):
        w = op.matvec(v)
        if not torch.isfinite(w).all():
            raise ValueError(f"the operator produced NaN or inf at power-iteration step {i}")
        new = v @ w
        norm = w.norm()
        if norm == 0:
            return PowerIterationResult(0.0, v, i, True)
        done = i > 1 and (new - lam).abs() <= tol * new.abs()
        lam, v = new, w / norm
        if done:
            return PowerIterationResult(float(lam), v, i, True)
    return PowerIterationResult(float(lam), v, n, False)
