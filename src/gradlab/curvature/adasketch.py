r"""AdaSketch-Newton: equality-constrained optimization with the exact augmented Lagrangian and randomized
iterative sketching.

Hong, Na, Mahoney & Kolar, "Constrained Optimization via Exact Augmented Lagrangian and Randomized Iterative
Sketching", ICML 2023 (arXiv 2305.18379).

Problem: :math:`\min_x f(x)` s.t. :math:`c(x) = 0`, :math:`c: \mathbb{R}^n \to \mathbb{R}^m` with Jacobian
:math:`G(x) \in \mathbb{R}^{m \times n}`.

**Multiplier sign convention.** The Lagrangian is :math:`\mathcal{L}(x, \lambda) = f(x) + \lambda^\top c(x)`, so
a KKT point satisfies :math:`\nabla f + G^\top \lambda = 0`, :math:`c = 0`. This is the convention of
``scipy.optimize.minimize(method="trust-constr")`` (its ``result.v``); methods using :math:`f - \lambda^\top c`
report :math:`-\lambda`.

**Merit** (exact augmented Lagrangian, :math:`\eta = (\eta_1, \eta_2)`)

.. math::
    \mathcal{L}_\eta(x, \lambda) = \mathcal{L} + \tfrac{\eta_1}{2}\|c\|^2 + \tfrac{\eta_2}{2}\|\nabla_x \mathcal{L}\|^2,
    \quad
    \nabla \mathcal{L}_\eta = \begin{pmatrix} \nabla_x\mathcal{L} + \eta_1 G^\top c + \eta_2 \nabla^2_x\mathcal{L}\,
    \nabla_x\mathcal{L} \\ c + \eta_2 G \nabla_x \mathcal{L} \end{pmatrix}.

``merit_hessian="objective"`` replaces :math:`\nabla^2_x\mathcal{L}` by :math:`\nabla^2 f` in the gradient
(what the authors' code does; the merit value stays exact).

**Iteration** :math:`k`

1. :math:`H = \nabla^2_x \mathcal{L}`. If the reduced Hessian :math:`Z^\top H Z` (:math:`Z` a null-space basis of
   :math:`G`) has an eigenvalue below ``modification_threshold`` (1e-6, as in the authors' code), use
   :math:`B = H + (\xi_B + \|H\|) I` (``"norm"``, the authors' rule) or
   :math:`B = H + (\xi_B - \lambda_{\min}(Z^\top H Z)) I` (``"min_eig"``); else :math:`B = H`.
2. Newton (KKT) system :math:`K z = b`, :math:`K = \begin{pmatrix} B & G^\top \\ G & 0\end{pmatrix}`,
   :math:`b = -(\nabla_x\mathcal{L}, c)`; :math:`\|b\|` is the KKT residual.
3. Solve it by randomized iterative sketching (Gaussian or Kaczmarz; started at zero or, with ``warm_start``,
   at the previous direction; sketching resumes from the current iterate after a penalty update) until the
   **adaptive accuracy** :math:`\|K z - b\| \le \theta_k \delta_k \|b\| / \kappa_k` holds. The theory's
   :math:`\kappa_k = \|K\|\psi_k` with :math:`\psi_k = 20 \max(\|B\|^2, 1) / (\min(\lambda_{\min}(GG^\top), 1)
   \min(\xi_B, 1))` and :math:`\delta_k \leftarrow \max(\delta_{\min}, \min(\delta_k, (1/2 - \beta)\eta_2 /
   ((1 + \eta_1 + \eta_2)\Upsilon_k^2 \psi_k^2)))`, :math:`\Upsilon_k = \max(\|G\|, \|H\|, 1)`, is extremely
   conservative (relative residuals near 1e-8); ``accuracy_constant=kappa`` fixes :math:`\kappa_k = \kappa` and
   keeps :math:`\delta_k` at ``delta`` except for penalty updates.
4. **Penalty update**: while :math:`\nabla\mathcal{L}_\eta^\top z > -\tfrac{\eta_2}{2}\|b\|^2`, set
   :math:`\eta_1 \leftarrow \nu^2 \eta_1`, :math:`\eta_2 \leftarrow \eta_2/\nu`, :math:`\delta \leftarrow \delta/\nu^4`
   and keep sketching to the new accuracy.
5. **Armijo** backtracking (halving) on the merit:
   :math:`\mathcal{L}_\eta(x + \alpha\Delta x, \lambda + \alpha\Delta\lambda) \le \mathcal{L}_\eta + \beta\alpha
   \nabla\mathcal{L}_\eta^\top z`, then :math:`(x, \lambda) \mathrel{+}= \alpha z`. The test allows
   :math:`10\,\epsilon_{\rm mach}\max(1, |\mathcal{L}_\eta|)` of rounding slack (as IPOPT does): near a solution the
   predicted decrease, of order :math:`\|b\|^2`, falls below the merit's rounding level and would otherwise reject
   exact Newton steps.

:math:`\theta_k \to 0` (pass a callable ``theta(k, kkt)``) sharpens the accuracy and makes the local rate
superlinear; constant :math:`\theta` gives a linear local rate.

Differences from the authors' Julia code (read for the algorithm only): spectral norms where the code's ``norm``
of a matrix is the Frobenius norm (so our :math:`\psi_k` is smaller); a rank-deficient Jacobian stops the run only
when :math:`\lambda_{\min}(GG^\top) \le 10^{-12}\|G\|^2` (the code aborts below 1e-2); penalty updates stop with
``"penalty_failed"`` after ``max_penalty_updates`` (the code accepts the direction once :math:`\eta_1 > 10^8`);
the Armijo rounding slack above. Dense linear algebra: meant for ``n + m`` up to a
few thousand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from gradlab.core.validation import check_choice, check_int, check_positive, check_range
from gradlab.curvature.sketching import _as_generator, sketch_solve

Array = np.ndarray
SOLVERS: tuple[str, ...] = ("gaussian", "kaczmarz", "exact")


@dataclass(frozen=True)
class EqualityConstrainedProblem:
    """``min f(x) s.t. c(x) = 0`` given by numpy oracles (float64 in, float64 out).

    Attributes:
        fun: ``x -> f(x)`` (scalar).
        grad: ``x -> grad f(x)``, shape ``(n,)``.
        hess: ``x -> hess f(x)``, shape ``(n, n)``.
        cons: ``x -> c(x)``, shape ``(m,)``.
        jac: ``x -> G(x)``, shape ``(m, n)``.
        cons_hess: ``(x, lam) -> sum_i lam_i hess c_i(x)``, shape ``(n, n)``.
        name: label for reports.
    """

    fun: Callable[[Array], float]
    grad: Callable[[Array], Array]
    hess: Callable[[Array], Array]
    cons: Callable[[Array], Array]
    jac: Callable[[Array], Array]
    cons_hess: Callable[[Array, Array], Array]
    name: str = "problem"

    def __post_init__(self) -> None:
        for attr in ("fun", "grad", "hess", "cons", "jac", "cons_hess"):
            if not callable(getattr(self, attr)):
                raise TypeError(f"{attr} must be callable; got {type(getattr(self, attr)).__name__}")

    @classmethod
    def from_torch(
        cls,
        fun: Callable,
        cons: Callable,
        name: str = "problem",
    ) -> "EqualityConstrainedProblem":
        """Build the oracles from torch functions ``fun(x) -> scalar`` and ``cons(x) -> (m,)`` with
        ``torch.func`` (gradient, Jacobian and Hessians by autograd, in float64).

        The functions must be written with torch operations and be free of in-place updates of ``x``.
        """
        import torch
        from torch.func import grad, hessian, jacrev

        if not callable(fun) or not callable(cons):
            raise TypeError("fun and cons must be callable torch functions")

        def t(x: Array) -> "torch.Tensor":
            return torch.as_tensor(np.asarray(x, dtype=np.float64))

        def num(v: "torch.Tensor") -> Array:
            return v.detach().cpu().numpy().astype(np.float64)

        def f_scalar(x):  # noqa: ANN001 - torch tensor in, 0-dim tensor out
            out = fun(x)
            return out.reshape(())

        def lag_c(x, lam):  # noqa: ANN001
            return torch.dot(lam, cons(x).reshape(-1))

        return cls(
            fun=lambda x: float(f_scalar(t(x))),
            grad=lambda x: num(grad(f_scalar)(t(x))),
            hess=lambda x: num(hessian(f_scalar)(t(x))),
            cons=lambda x: num(cons(t(x)).reshape(-1)),
            jac=lambda x: num(jacrev(lambda y: cons(y).reshape(-1))(t(x))),
            cons_hess=lambda x, lam: num(hessian(lag_c, argnums=0)(t(x), t(lam))),
            name=name,
        )


@dataclass
class AdaSketchResult:
    """What :meth:`AdaSketchNewton.solve` returns. Histories have one entry per outer iteration, except
    ``kkt`` and ``fun``, which also hold the final point's values (length ``n_iter + 1``). When a run stops
    with ``"line_search_failed"`` or ``"penalty_failed"``, the failed iteration is the last entry of every
    history with ``step_sizes[-1] == 0`` (so ``kkt`` has ``n_iter`` entries).

    Attributes:
        x, lam: final primal point and multipliers (:math:`\\nabla f + G^\\top\\lambda = 0` at a KKT point).
        converged: ``kkt[-1] <= tol``.
        status: ``"converged"``, ``"max_iter"``, ``"line_search_failed"``, ``"singular_jacobian"`` or
            ``"penalty_failed"``.
        kkt: ``||(grad_x L, c)||_2`` per iterate.
        step_sizes: accepted Armijo step ``alpha_k``.
        sketch_iters: sketch steps spent on iteration ``k`` (0 for ``solver="exact"``).
        relative_residuals: ``||K z - b|| / ||b||`` of the accepted direction.
        eta1, eta2, delta: penalty and accuracy parameters used at iteration ``k``.
        hessian_modified: whether ``B != H`` at iteration ``k``.
        sketch_capped: whether a sketch solve of iteration ``k`` stopped at ``max_sketch_iter`` before reaching
            the accuracy target (the direction is then used as it is, like the authors' code does).
        fun: objective per iterate (length ``n_iter + 1``).
    """

    x: Array
    lam: Array
    converged: bool
    status: str
    kkt: list[float] = field(default_factory=list)
    fun: list[float] = field(default_factory=list)
    step_sizes: list[float] = field(default_factory=list)
    sketch_iters: list[int] = field(default_factory=list)
    relative_residuals: list[float] = field(default_factory=list)
    eta1: list[float] = field(default_factory=list)
    eta2: list[float] = field(default_factory=list)
    delta: list[float] = field(default_factory=list)
    hessian_modified: list[bool] = field(default_factory=list)
    sketch_capped: list[bool] = field(default_factory=list)

    @property
    def n_iter(self) -> int:
        """Number of outer iterations taken."""
        return len(self.step_sizes)

    @property
    def unit_step(self) -> list[bool]:
        """Whether the unit step ``alpha_k = 1`` was accepted at iteration ``k``."""
        return [a == 1.0 for a in self.step_sizes]

    @property
    def total_sketch_iters(self) -> int:
        return int(sum(self.sketch_iters))

    def first_iteration_below(self, level: float) -> int | None:
        """Index ``k`` of the first iterate with ``kkt[k] < level`` (``None`` if never)."""
        for k, v in enumerate(self.kkt):
            if v < level:
                return k
        return None


@dataclass
class _Point:
    x: Array
    lam: Array
    f: float
    g: Array
    c: Array
    G: Array

    @property
    def grad_lag(self) -> Array:
        return self.g + self.G.T @ self.lam


class AdaSketchNewton:
    """AdaSketch-Newton solver (Hong, Na, Mahoney & Kolar, ICML 2023); see the module docstring for the
    equations.

    Args:
        eta1, eta2: initial penalty parameters of the merit (paper/code defaults 1.0, 0.1).
        delta: initial accuracy parameter (0.1); ``delta_min`` its floor (1e-6).
        xi_b: the Hessian modification's extra shift and the theory's lower bound on the reduced Hessian (0.1).
        modification_threshold: modify the Hessian when ``lambda_min(Z^T H Z)`` is below this (1e-6).
        beta: Armijo constant in (0, 1/2) (0.1).
        nu: penalty growth factor > 1 (1.5).
        theta: accuracy factor, a float in (0, 1] or ``theta(k, kkt) -> float`` (``-> 0`` for superlinear rate).
        solver: ``"gaussian"``, ``"kaczmarz"`` or ``"exact"`` (``numpy.linalg.solve``, the exact-Newton reference).
        accuracy_constant: ``None`` for the theory's :math:`\\kappa_k = \\|K\\|\\psi_k`, or a fixed ``kappa > 0``.
        merit_hessian: ``"lagrangian"`` (exact merit gradient) or ``"objective"`` (the authors' code: hess f).
        hessian_shift: ``"norm"`` (the authors' shift ``xi_b + ||H||``) or ``"min_eig"`` (smallest sufficient shift).
        warm_start: start each outer iteration's sketch solve at the previous direction (default: at zero, as the
            authors' code). Within an iteration, sketching always continues from the current direction after a
            penalty update.
        tol: stop when the KKT residual is ``<= tol``.
        max_iter: outer-iteration cap; ``max_sketch_iter`` caps the sketch steps per solve (1e5, the authors' cap;
            a capped solve's direction is used as it is).
        max_penalty_updates: cap on penalty updates within one iteration; ``max_backtracks`` on halvings.
        rng: seed or ``numpy.random.Generator`` for the sketches.
    """

    def __init__(
        self,
        eta1: float = 1.0,
        eta2: float = 0.1,
        delta: float = 0.1,
        delta_min: float = 1e-6,
        xi_b: float = 0.1,
        modification_threshold: float = 1e-6,
        beta: float = 0.1,
        nu: float = 1.5,
        theta: float | Callable[[int, float], float] = 1.0,
        solver: str = "gaussian",
        accuracy_constant: float | None = None,
        merit_hessian: str = "lagrangian",
        hessian_shift: str = "norm",
        warm_start: bool = False,
        tol: float = 1e-8,
        max_iter: int = 1000,
        max_sketch_iter: int = 100_000,
        max_penalty_updates: int = 50,
        max_backtracks: int = 60,
        rng: int | np.random.Generator | None = None,
    ) -> None:
        self.eta1 = check_positive("eta1", eta1)
        self.eta2 = check_positive("eta2", eta2)
        self.delta = check_positive("delta", delta)
        self.delta_min = check_positive("delta_min", delta_min)
        self.xi_b = check_positive("xi_b", xi_b)
        self.modification_threshold = check_positive("modification_threshold", modification_threshold, allow_zero=True)
        self.beta = check_range("beta", beta, 0.0, 0.5, low_inclusive=False)
        self.nu = check_range("nu", nu, 1.0, float("inf"), low_inclusive=False)
        if callable(theta):
            self.theta = theta
        else:
            self.theta = check_range("theta", theta, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        self.solver = check_choice("solver", solver, SOLVERS)
        self.accuracy_constant = (None if accuracy_constant is None
                                  else check_positive("accuracy_constant", accuracy_constant))
        self.merit_hessian = check_choice("merit_hessian", merit_hessian, ("lagrangian", "objective"))
        self.hessian_shift = check_choice("hessian_shift", hessian_shift, ("norm", "min_eig"))
        self.warm_start = bool(warm_start)
        self.tol = check_positive("tol", tol)
        self.max_iter = check_int("max_iter", max_iter, minimum=0)
        self.max_sketch_iter = check_int("max_sketch_iter", max_sketch_iter, minimum=1)
        self.max_penalty_updates = check_int("max_penalty_updates", max_penalty_updates, minimum=0)
        self.max_backtracks = check_int("max_backtracks", max_backtracks, minimum=1)
        self.rng = _as_generator(rng)

    # ----------------------------------------------------------------------------------------- oracles
    @staticmethod
    def _evaluate(problem: EqualityConstrainedProblem, x: Array, lam: Array, strict: bool) -> _Point | None:
        """Evaluate f, grad f, c, G at ``x``; ``strict`` raises on bad shapes/NaN, else returns ``None``."""
        n, m = x.size, lam.size
        try:
            f = float(np.asarray(problem.fun(x), dtype=np.float64).reshape(()))
        except ValueError as err:
            raise ValueError(f"fun must return a scalar: {err}") from err
        g = np.asarray(problem.grad(x), dtype=np.float64)
        c = np.asarray(problem.cons(x), dtype=np.float64)
        G = np.asarray(problem.jac(x), dtype=np.float64)
        if strict:
            if g.shape != (n,):
                raise ValueError(f"grad must return shape ({n},); got {g.shape}")
            if c.shape != (m,):
                raise ValueError(f"cons must return shape ({m},) (m = len(lam0)); got {c.shape}")
            if G.shape != (m, n):
                raise ValueError(f"jac must return shape ({m}, {n}); got {G.shape}")
            for label, v in (("fun", f), ("grad", g), ("cons", c), ("jac", G)):
                if not np.isfinite(v).all():
                    raise ValueError(f"{label} is not finite at x0 (found NaN or inf)")
        elif not (np.isfinite(f) and np.isfinite(g).all() and np.isfinite(c).all() and np.isfinite(G).all()):
            return None
        return _Point(x=x, lam=lam, f=f, g=g, c=c, G=G)

    @staticmethod
    def _hessians(problem: EqualityConstrainedProblem, p: _Point) -> tuple[Array, Array]:
        n = p.x.size
        hf = np.asarray(problem.hess(p.x), dtype=np.float64)
        hc = np.asarray(problem.cons_hess(p.x, p.lam), dtype=np.float64)
        if hf.shape != (n, n) or hc.shape != (n, n):
            raise ValueError(f"hess and cons_hess must return shape ({n}, {n}); got {hf.shape} and {hc.shape}")
        if not (np.isfinite(hf).all() and np.isfinite(hc).all()):
            raise ValueError("hess or cons_hess returned NaN or inf")
        return hf, hf + hc

    @staticmethod
    def merit(p: _Point, eta1: float, eta2: float) -> float:
        """Exact augmented Lagrangian ``f + lam^T c + eta1/2 ||c||^2 + eta2/2 ||grad_x L||^2``."""
        gl = p.grad_lag
        return float(p.f + p.lam @ p.c + 0.5 * eta1 * (p.c @ p.c) + 0.5 * eta2 * (gl @ gl))

    @staticmethod
    def merit_gradient(p: _Point, hess_lag: Array, eta1: float, eta2: float) -> Array:
        """``(grad_x L + eta1 G^T c + eta2 H grad_x L,  c + eta2 G grad_x L)`` with ``H = hess_lag``."""
        gl = p.grad_lag
        return np.concatenate([gl + eta1 * (p.G.T @ p.c) + eta2 * (hess_lag @ gl), p.c + eta2 * (p.G @ gl)])

    # --------------------------------------------------------------------------------------- main loop
    def _modify(self, H: Array, G: Array) -> tuple[Array, bool]:
        n, m = G.shape[1], G.shape[0]
        if m >= n:
            return H, False
        # null-space basis of G from the SVD (rank m assumed; checked by the caller)
        _, _, vt = np.linalg.svd(G, full_matrices=True)
        Z = vt[m:].T
        lam_min = float(np.linalg.eigvalsh(Z.T @ H @ Z)[0])
        if lam_min >= self.modification_threshold:
            return H, False
        shift = self.xi_b + np.linalg.norm(H, 2) if self.hessian_shift == "norm" else self.xi_b - lam_min
        return H + shift * np.eye(n), True

    def _theta(self, k: int, kkt: float) -> float:
        if callable(self.theta):
            th = float(self.theta(k, kkt))
            if not (0.0 < th <= 1.0):
                raise ValueError(f"theta(k, kkt) must return a value in (0, 1]; got {th} at k={k}")
            return th
        return float(self.theta)

    def solve(
        self,
        problem: EqualityConstrainedProblem,
        x0: Array,
        lam0: Array | None = None,
        callback: Callable[[int, Array, Array, float], None] | None = None,
    ) -> AdaSketchResult:
        """Run AdaSketch-Newton from ``x0``.

        Args:
            problem: the oracles (see :class:`EqualityConstrainedProblem`).
            x0: starting point, shape ``(n,)``.
            lam0: starting multipliers, shape ``(m,)``; ``None`` uses the least-squares estimate
                ``argmin ||grad f(x0) + G(x0)^T lam||``.
            callback: ``callback(k, x, lam, kkt)`` after each evaluation of a new iterate.
        """
        if not isinstance(problem, EqualityConstrainedProblem):
            raise TypeError(f"problem must be an EqualityConstrainedProblem; got {type(problem).__name__}")
        x = np.array(x0, dtype=np.float64, copy=True)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"x0 must be a non-empty 1-D array; got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("x0 contains NaN or inf")
        if lam0 is None:
            c0 = np.asarray(problem.cons(x), dtype=np.float64).reshape(-1)
            m_eff = c0.size
            G0 = np.asarray(problem.jac(x), dtype=np.float64)
            g0 = np.asarray(problem.grad(x), dtype=np.float64)
            if G0.shape != (m_eff, x.size) or g0.shape != x.shape:
                raise ValueError(f"jac must return shape ({m_eff}, {x.size}) and grad ({x.size},); "
                                 f"got {G0.shape} and {g0.shape}")
            if not (np.isfinite(G0).all() and np.isfinite(g0).all()):
                raise ValueError("grad or jac is not finite at x0 (found NaN or inf)")
            lam = -np.linalg.lstsq(G0.T, g0, rcond=None)[0]
        else:
            lam = np.array(lam0, dtype=np.float64, copy=True)
            if lam.ndim != 1 or lam.size == 0:
                raise ValueError(f"lam0 must be a non-empty 1-D array; got shape {lam.shape}")
            if not np.isfinite(lam).all():
                raise ValueError("lam0 contains NaN or inf")
        n, mm = x.size, lam.size
        if mm > n:
            raise ValueError(f"more constraints than variables (m={mm} > n={n}); the KKT matrix is singular")

        point = self._evaluate(problem, x, lam, strict=True)
        eta1, eta2, delta = self.eta1, self.eta2, self.delta
        res = AdaSketchResult(x=x, lam=lam, converged=False, status="max_iter")
        z_prev = np.zeros(n + mm)
        k = 0
        while True:
            b = -np.concatenate([point.grad_lag, point.c])
            kkt = float(np.linalg.norm(b))
            res.kkt.append(kkt)
            res.fun.append(point.f)
            if callback is not None:
                callback(k, point.x.copy(), point.lam.copy(), kkt)
            if kkt <= self.tol:
                res.converged, res.status = True, "converged"
                break
            if k >= self.max_iter:
                res.status = "max_iter"
                break
            hf, H = self._hessians(problem, point)
            G = point.G
            gram_min = float(np.linalg.eigvalsh(G @ G.T)[0])
            if gram_min <= 1e-12 * max(1.0, float(np.linalg.norm(G, 2)) ** 2):
                res.status = "singular_jacobian"
                break
            B, modified = self._modify(H, G)
            K = np.block([[B, G.T], [G, np.zeros((mm, mm))]])
            if self.accuracy_constant is None:
                psi = 20.0 * max(np.linalg.norm(B, 2) ** 2, 1.0) / (min(gram_min, 1.0) * min(self.xi_b, 1.0))
                upsilon = max(np.linalg.norm(G, 2), np.linalg.norm(H, 2), 1.0)
                kappa = float(np.linalg.norm(K, 2) * psi)

                def delta_trial(e1: float, e2: float) -> float:
                    return (0.5 - self.beta) * e2 / ((1.0 + e1 + e2) * upsilon**2 * psi**2)

                delta = max(self.delta_min, min(delta, delta_trial(eta1, eta2)))
            else:
                kappa = self.accuracy_constant
            h_merit = H if self.merit_hessian == "lagrangian" else hf
            theta_k = self._theta(k, kkt)
            z = z_prev.copy() if self.warm_start else np.zeros(n + mm)
            if self.solver == "exact":
                z = np.linalg.solve(K, b)
            sketch_steps = 0
            capped = False
            n_updates = 0
            failed = None
            while True:
                grad_m = self.merit_gradient(point, h_merit, eta1, eta2)
                if self.solver != "exact":
                    target = theta_k * delta * kkt / kappa
                    out = sketch_solve(K, b, target, method=self.solver, z0=z,
                                       max_iter=self.max_sketch_iter, rng=self.rng)
                    z, sketch_steps = out.z, sketch_steps + out.n_iter
                    capped = capped or not out.converged
                if grad_m @ z <= -0.5 * eta2 * kkt**2:
                    break
                if n_updates >= self.max_penalty_updates:
                    failed = "penalty_failed"
                    break
                n_updates += 1
                eta1, eta2 = eta1 * self.nu**2, eta2 / self.nu
                delta = max(self.delta_min, delta / self.nu**4)
                if self.accuracy_constant is None:
                    delta = max(self.delta_min, min(delta, delta_trial(eta1, eta2)))
            res.sketch_iters.append(sketch_steps)
            res.sketch_capped.append(capped)
            res.relative_residuals.append(float(np.linalg.norm(K @ z - b) / kkt))
            res.eta1.append(eta1)
            res.eta2.append(eta2)
            res.delta.append(delta)
            res.hessian_modified.append(modified)
            if failed is not None:
                res.step_sizes.append(0.0)
                res.status = failed
                break
            # Armijo backtracking on the merit
            m0 = self.merit(point, eta1, eta2)
            slope = float(grad_m @ z)
            slack = 10.0 * np.finfo(np.float64).eps * max(1.0, abs(m0))  # rounding level of the merit
            dx, dl = z[:n], z[n:]
            alpha, trial = 1.0, None
            for _ in range(self.max_backtracks):
                cand = self._evaluate(problem, point.x + alpha * dx, point.lam + alpha * dl, strict=False)
                if cand is not None and self.merit(cand, eta1, eta2) <= m0 + self.beta * alpha * slope + slack:
                    trial = cand
                    break
                alpha *= 0.5
            if trial is None:
                res.step_sizes.append(0.0)
                res.status = "line_search_failed"
                break
            res.step_sizes.append(alpha)
            point = trial
            z_prev = z
            k += 1
        res.x, res.lam = point.x, point.lam
        return res
