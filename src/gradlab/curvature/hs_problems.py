"""Equality-constrained test problems: Hock-Schittkowski problems written out in code, and the constrained
logistic regression of Hong, Na, Mahoney & Kolar (ICML 2023).

Hock & Schittkowski, "Test Examples for Nonlinear Programming Codes", Lecture Notes in Economics and
Mathematical Systems 187, Springer 1981. Each problem keeps the collection's starting point ``x0`` and its
reported solution ``x_star`` / ``f_star`` (to the digits the collection gives). Derivatives come from
``torch.func`` through :meth:`EqualityConstrainedProblem.from_torch`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from gradlab.core.validation import check_positive
from gradlab.curvature.adasketch import EqualityConstrainedProblem

_S2 = math.sqrt(2.0)


@dataclass(frozen=True)
class HSProblem:
    """One Hock-Schittkowski problem: ``min fun(x) s.t. cons(x) = 0`` (torch functions).

    Attributes:
        name: ``"hs006"`` style label.
        fun, cons: torch functions of a float64 vector.
        x0: the collection's starting point.
        x_star, f_star: the collection's reported solution and optimal value.
        x_digits: how many significant digits of ``x_star`` the collection reports (exact values: 15).
    """

    name: str
    fun: Callable[[torch.Tensor], torch.Tensor]
    cons: Callable[[torch.Tensor], torch.Tensor]
    x0: tuple[float, ...]
    x_star: tuple[float, ...]
    f_star: float
    x_digits: int = 15

    @property
    def n(self) -> int:
        return len(self.x0)

    @property
    def m(self) -> int:
        return int(self.cons(torch.tensor(self.x0, dtype=torch.float64)).numel())

    def reduced_hessian_min_eig(self) -> float:
        """Smallest eigenvalue of the reduced Hessian ``Z^T hess_x L(x*, lam*) Z`` at the reported solution, with
        ``lam*`` the least-squares multiplier; ``> 0`` means the second-order sufficient condition holds (the
        local theory's assumption), ``~ 0`` marks a degenerate problem (sublinear local convergence)."""
        p = self.problem()
        xs = np.asarray(self.x_star, dtype=np.float64)
        G = p.jac(xs)
        lam = -np.linalg.lstsq(G.T, p.grad(xs), rcond=None)[0]
        H = p.hess(xs) + p.cons_hess(xs, lam)
        Z = np.linalg.svd(G, full_matrices=True)[2][G.shape[0]:].T
        return float(np.linalg.eigvalsh(Z.T @ H @ Z)[0]) if Z.size else float("inf")

    def problem(self) -> EqualityConstrainedProblem:
        """The numpy oracles (autograd derivatives) for :class:`AdaSketchNewton`."""
        return EqualityConstrainedProblem.from_torch(self.fun, self.cons, name=self.name)


def _stack(*items: torch.Tensor) -> torch.Tensor:
    return torch.stack(list(items))


HS_PROBLEMS: dict[str, HSProblem] = {
    p.name: p
    for p in (
        HSProblem("hs006", lambda x: (1 - x[0]) ** 2, lambda x: _stack(10 * (x[1] - x[0] ** 2)),
                  (-1.2, 1.0), (1.0, 1.0), 0.0),
        HSProblem("hs007", lambda x: torch.log(1 + x[0] ** 2) - x[1],
                  lambda x: _stack((1 + x[0] ** 2) ** 2 + x[1] ** 2 - 4),
                  (2.0, 2.0), (0.0, math.sqrt(3.0)), -math.sqrt(3.0)),
        HSProblem("hs026", lambda x: (x[0] - x[1]) ** 2 + (x[1] - x[2]) ** 4,
                  lambda x: _stack((1 + x[1] ** 2) * x[0] + x[2] ** 4 - 3),
                  (-2.6, 2.0, 2.0), (1.0, 1.0, 1.0), 0.0),
        HSProblem("hs027", lambda x: 0.01 * (x[0] - 1) ** 2 + (x[1] - x[0] ** 2) ** 2,
                  lambda x: _stack(x[0] + x[2] ** 2 + 1),
                  (2.0, 2.0, 2.0), (-1.0, 1.0, 0.0), 0.04),
        HSProblem("hs028", lambda x: (x[0] + x[1]) ** 2 + (x[1] + x[2]) ** 2,
                  lambda x: _stack(x[0] + 2 * x[1] + 3 * x[2] - 1),
                  (-4.0, 1.0, 1.0), (0.5, -0.5, 0.5), 0.0),
        HSProblem("hs039", lambda x: -x[0],
                  lambda x: _stack(x[1] - x[0] ** 3 - x[2] ** 2, x[0] ** 2 - x[1] - x[3] ** 2),
                  (2.0, 2.0, 2.0, 2.0), (1.0, 1.0, 0.0, 0.0), -1.0),
        HSProblem("hs040", lambda x: -x[0] * x[1] * x[2] * x[3],
                  lambda x: _stack(x[0] ** 3 + x[1] ** 2 - 1, x[0] ** 2 * x[3] - x[2], x[3] ** 2 - x[1]),
                  (0.8, 0.8, 0.8, 0.8), (2 ** (-1 / 3), 2 ** (-1 / 2), 2 ** (-11 / 12), 2 ** (-1 / 4)), -0.25),
        HSProblem("hs042", lambda x: (x[0] - 1) ** 2 + (x[1] - 2) ** 2 + (x[2] - 3) ** 2 + (x[3] - 4) ** 2,
                  lambda x: _stack(x[0] - 2, x[2] ** 2 + x[3] ** 2 - 2),
                  (1.0, 1.0, 1.0, 1.0), (2.0, 2.0, 0.6 * _S2, 0.8 * _S2), 28 - 10 * _S2),
        HSProblem("hs046", lambda x: (x[0] - x[1]) ** 2 + (x[2] - 1) ** 2 + (x[3] - 1) ** 4 + (x[4] - 1) ** 6,
                  lambda x: _stack(x[0] ** 2 * x[3] + torch.sin(x[3] - x[4]) - 1, x[1] + x[2] ** 4 * x[3] ** 2 - 2),
                  (0.5 * _S2, 1.75, 0.5, 2.0, 2.0), (1.0,) * 5, 0.0),
        HSProblem("hs047", lambda x: (x[0] - x[1]) ** 2 + (x[1] - x[2]) ** 3 + (x[2] - x[3]) ** 4 + (x[3] - x[4]) ** 4,
                  lambda x: _stack(x[0] + x[1] ** 2 + x[2] ** 3 - 3, x[1] - x[2] ** 2 + x[3] - 1, x[0] * x[4] - 1),
                  (2.0, _S2, -1.0, 2 - _S2, 0.5), (1.0,) * 5, 0.0),
        HSProblem("hs048", lambda x: (x[0] - 1) ** 2 + (x[1] - x[2]) ** 2 + (x[3] - x[4]) ** 2,
                  lambda x: _stack(x.sum() - 5, x[2] - 2 * (x[3] + x[4]) + 3),
                  (3.0, 5.0, -3.0, 2.0, -2.0), (1.0,) * 5, 0.0),
        HSProblem("hs049", lambda x: (x[0] - x[1]) ** 2 + (x[2] - 1) ** 2 + (x[3] - 1) ** 4 + (x[4] - 1) ** 6,
                  lambda x: _stack(x[0] + x[1] + x[2] + 4 * x[3] - 7, x[2] + 5 * x[4] - 6),
                  (10.0, 7.0, 2.0, -3.0, 0.8), (1.0,) * 5, 0.0),
        HSProblem("hs050", lambda x: (x[0] - x[1]) ** 2 + (x[1] - x[2]) ** 2 + (x[2] - x[3]) ** 4 + (x[3] - x[4]) ** 2,
                  lambda x: _stack(x[0] + 2 * x[1] + 3 * x[2] - 6, x[1] + 2 * x[2] + 3 * x[3] - 6,
                                   x[2] + 2 * x[3] + 3 * x[4] - 6),
                  (35.0, -31.0, 11.0, 5.0, -5.0), (1.0,) * 5, 0.0),
        HSProblem("hs051", lambda x: (x[0] - x[1]) ** 2 + (x[1] + x[2] - 2) ** 2 + (x[3] - 1) ** 2 + (x[4] - 1) ** 2,
                  lambda x: _stack(x[0] + 3 * x[1] - 4, x[2] + x[3] - 2 * x[4], x[1] - x[4]),
                  (2.5, 0.5, 2.0, -1.0, 0.5), (1.0,) * 5, 0.0),
        HSProblem("hs052", lambda x: (4 * x[0] - x[1]) ** 2 + (x[1] + x[2] - 2) ** 2 + (x[3] - 1) ** 2 + (x[4] - 1) ** 2,
                  lambda x: _stack(x[0] + 3 * x[1], x[2] + x[3] - 2 * x[4], x[1] - x[4]),
                  (2.0,) * 5, (-33 / 349, 11 / 349, 180 / 349, -158 / 349, 11 / 349), 1859 / 349),
        HSProblem("hs077", lambda x: (x[0] - 1) ** 2 + (x[0] - x[1]) ** 2 + (x[2] - 1) ** 2 + (x[3] - 1) ** 4
                  + (x[4] - 1) ** 6,
                  lambda x: _stack(x[0] ** 2 * x[3] + torch.sin(x[3] - x[4]) - 2 * _S2,
                                   x[1] + x[2] ** 4 * x[3] ** 2 - 8 - _S2),
                  (2.0,) * 5, (1.166172, 1.182111, 1.380257, 1.506036, 0.6109203), 0.24150513, x_digits=7),
        HSProblem("hs078", lambda x: x[0] * x[1] * x[2] * x[3] * x[4],
                  lambda x: _stack((x**2).sum() - 10, x[1] * x[2] - 5 * x[3] * x[4], x[0] ** 3 + x[1] ** 3 + 1),
                  (-2.0, 1.5, 2.0, -1.0, -1.0), (-1.717142, 1.595708, 1.827248, -0.7636429, -0.7636435),
                  -2.919700, x_digits=7),
        HSProblem("hs079", lambda x: (x[0] - 1) ** 2 + (x[0] - x[1]) ** 2 + (x[1] - x[2]) ** 2 + (x[2] - x[3]) ** 4
                  + (x[3] - x[4]) ** 4,
                  lambda x: _stack(x[0] + x[1] ** 2 + x[2] ** 3 - 2 - 3 * _S2, x[1] - x[2] ** 2 + x[3] + 2 - 2 * _S2,
                                   x[0] * x[4] - 2),
                  (2.0,) * 5, (1.191127, 1.362603, 1.472818, 1.635017, 1.679081), 0.0787768209, x_digits=7),
    )
}
"""The Hock-Schittkowski equality-constrained problems written out here, by name."""


def constrained_logistic_problem(
    features: np.ndarray, labels: np.ndarray, A: np.ndarray, b: np.ndarray, name: str = "constrained_logistic"
) -> EqualityConstrainedProblem:
    """``min_w (1/N) sum_i log(1 + exp(-y_i x_i^T w))  s.t.  A w = b,  ||w||^2 = 1`` (numpy, analytic derivatives).

    The experiment of Hong et al. (ICML 2023, Sec. 6): logistic loss with random linear constraints plus the
    unit-sphere constraint. ``labels`` in {0, 1} or {-1, +1}; constraints are ordered ``(A w - b, ||w||^2 - 1)``.
    """
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    if X.ndim != 2:
        raise ValueError(f"features must be a 2-D array (N, d); got shape {X.shape}")
    N, d = X.shape
    if y.shape != (N,):
        raise ValueError(f"labels must have shape ({N},); got {y.shape}")
    if set(np.unique(y)) <= {0.0, 1.0}:
        y = 2.0 * y - 1.0
    if not set(np.unique(y)) <= {-1.0, 1.0}:
        raise ValueError("labels must be in {0, 1} or {-1, +1}")
    if A.ndim != 2 or A.shape[1] != d or b.shape != (A.shape[0],):
        raise ValueError(f"A must have shape (k, {d}) and b shape (k,); got {A.shape} and {b.shape}")
    if not (np.isfinite(X).all() and np.isfinite(A).all() and np.isfinite(b).all()):
        raise ValueError("features, A and b must be finite")
    yX = y[:, None] * X

    def fun(w: np.ndarray) -> float:
        return float(np.mean(np.logaddexp(0.0, -(yX @ w))))

    def grad(w: np.ndarray) -> np.ndarray:
        s = 0.5 * (1.0 - np.tanh(0.5 * (yX @ w)))  # sigmoid(-y x^T w)
        return -(yX.T @ s) / N

    def hess(w: np.ndarray) -> np.ndarray:
        s = 0.5 * (1.0 - np.tanh(0.5 * (yX @ w)))
        return (X.T * (s * (1.0 - s))) @ X / N

    def cons(w: np.ndarray) -> np.ndarray:
        return np.concatenate([A @ w - b, [w @ w - 1.0]])

    def jac(w: np.ndarray) -> np.ndarray:
        return np.vstack([A, 2.0 * w[None, :]])

    def cons_hess(w: np.ndarray, lam: np.ndarray) -> np.ndarray:
        return 2.0 * lam[-1] * np.eye(d)

    return EqualityConstrainedProblem(fun=fun, grad=grad, hess=hess, cons=cons, jac=jac, cons_hess=cons_hess, name=name)


def random_linear_constraints(d: int, k: int, rng: np.random.Generator, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` Gaussian constraints ``A w = b`` consistent with the unit sphere: ``A ~ N(0, scale^2)`` and
    ``b = A w0`` for a uniformly random unit vector ``w0`` (so ``{A w = b, ||w|| = 1}`` is non-empty)."""
    check_positive("scale", scale)
    if k >= d:
        raise ValueError(f"k must be < d so that the sphere constraint can hold on the affine set; got k={k}, d={d}")
    A = scale * rng.standard_normal((k, d))
    w0 = rng.standard_normal(d)
    w0 /= np.linalg.norm(w0)
    return A, A @ w0
