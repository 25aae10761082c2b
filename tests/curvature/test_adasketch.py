"""AdaSketch-Newton, its sketching solvers and the HS test problems, against independent references:
numpy.linalg.solve, a sequential sketch recursion, finite differences, torch autograd, scipy SLSQP / trust-constr,
and the Hock-Schittkowski collection's reported optima."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import NonlinearConstraint, minimize

from gradlab.curvature.adasketch import AdaSketchNewton, EqualityConstrainedProblem, _Point
from gradlab.curvature.hs_problems import HS_PROBLEMS, constrained_logistic_problem, random_linear_constraints
from gradlab.curvature.sketching import sketch_solve


def _kkt_matrix(rng: np.random.Generator, n: int = 8, m: int = 3) -> np.ndarray:
    H = rng.standard_normal((n, n))
    H = H + H.T  # indefinite
    G = rng.standard_normal((m, n))
    return np.block([[H, G.T], [G, np.zeros((m, m))]])


def _small_logistic(seed: int = 0, N: int = 80, d: int = 6, k: int = 2) -> EqualityConstrainedProblem:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, d))
    y = (X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(N) > 0).astype(np.int64)
    A, b = random_linear_constraints(d, k, rng)
    return constrained_logistic_problem(X, y, A, b)


def _trust_constr(p: EqualityConstrainedProblem, x0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    con = NonlinearConstraint(p.cons, 0.0, 0.0, jac=p.jac, hess=p.cons_hess)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = minimize(p.fun, x0, jac=p.grad, hess=p.hess, method="trust-constr", constraints=[con],
                       options={"gtol": 1e-12, "xtol": 1e-14, "maxiter": 3000})
    return out.x, out.v[0]


# ----------------------------------------------------------------------------------------------- sketching
@pytest.mark.parametrize("method", ["gaussian", "kaczmarz"])
def test_sketch_solve_matches_numpy_solve(method):
    rng = np.random.default_rng(1)
    K = _kkt_matrix(rng)
    b = rng.standard_normal(K.shape[0])
    tol = 1e-10 * np.linalg.norm(b)
    out = sketch_solve(K, b, tol, method=method, rng=3)
    assert out.converged and out.residual_norm <= tol
    assert np.linalg.norm(K @ out.z - b) <= tol
    np.testing.assert_allclose(out.z, np.linalg.solve(K, b), rtol=0, atol=1e-6 * np.linalg.norm(np.linalg.solve(K, b)))


@pytest.mark.parametrize("method", ["gaussian", "kaczmarz"])
def test_block_sketch_equals_sequential_recursion(method):
    rng = np.random.default_rng(2)
    K = _kkt_matrix(rng, 5, 2)
    b = rng.standard_normal(7)
    T = 40
    gen = np.random.default_rng(7)
    draws = gen.standard_normal((T, 7)).T if method == "gaussian" else gen.integers(0, 7, size=T)
    z = np.zeros(7)
    for t in range(T):
        s = draws[:, t] if method == "gaussian" else np.eye(7)[draws[t]]
        w = K.T @ s
        z = z - (s @ (K @ z - b)) / (w @ w) * w
    out = sketch_solve(K, b, 0.0, method=method, max_iter=T, rng=np.random.default_rng(7), block_size=T)
    assert out.n_iter == T and not out.converged
    np.testing.assert_allclose(out.z, z, rtol=1e-9, atol=1e-11)


def test_sketch_warm_start_at_solution_takes_no_steps():
    rng = np.random.default_rng(3)
    K = _kkt_matrix(rng)
    b = rng.standard_normal(K.shape[0])
    out = sketch_solve(K, b, 1e-8, z0=np.linalg.solve(K, b), rng=0)
    assert out.n_iter == 0 and out.converged


def test_sketch_stops_exactly_at_first_step_meeting_tolerance():
    rng = np.random.default_rng(4)
    K = _kkt_matrix(rng, 4, 1)
    b = rng.standard_normal(5)
    tol = 1e-3 * np.linalg.norm(b)
    full = sketch_solve(K, b, tol, rng=np.random.default_rng(11), block_size=64)
    short = sketch_solve(K, b, 0.0, max_iter=full.n_iter - 1, rng=np.random.default_rng(11), block_size=50)
    assert full.n_iter > 64 and full.residual_norm <= tol < short.residual_norm


def test_sketch_bad_input():
    K = np.eye(3)
    with pytest.raises(ValueError, match="square"):
        sketch_solve(np.ones((3, 2)), np.ones(3), 1e-6)
    with pytest.raises(ValueError, match="b must have shape"):
        sketch_solve(K, np.ones(4), 1e-6)
    with pytest.raises(ValueError, match="method"):
        sketch_solve(K, np.ones(3), 1e-6, method="cg")
    with pytest.raises(ValueError, match="finite"):
        sketch_solve(K, np.array([1.0, np.nan, 0.0]), 1e-6)
    with pytest.raises(ValueError, match="tol"):
        sketch_solve(K, np.ones(3), -1.0)
    with pytest.raises(ValueError, match="zero row"):
        sketch_solve(np.diag([1.0, 0.0, 1.0]), np.ones(3), 1e-6, method="kaczmarz")
    with pytest.raises(TypeError, match="rng"):
        sketch_solve(K, np.ones(3), 1e-6, rng="seed")


# ----------------------------------------------------------------------------------------------- merit
def _point(p: EqualityConstrainedProblem, x: np.ndarray, lam: np.ndarray) -> _Point:
    return _Point(x=x, lam=lam, f=p.fun(x), g=p.grad(x), c=p.cons(x), G=p.jac(x))


def test_merit_gradient_matches_finite_differences_and_autograd():
    hp = HS_PROBLEMS["hs040"]
    p = hp.problem()
    rng = np.random.default_rng(5)
    x = np.asarray(hp.x0) + 0.1 * rng.standard_normal(4)
    lam = rng.standard_normal(3)
    eta1, eta2 = 1.7, 0.3
    pt = _point(p, x, lam)
    H = p.hess(x) + p.cons_hess(x, lam)
    grad = AdaSketchNewton.merit_gradient(pt, H, eta1, eta2)

    def merit(v: np.ndarray) -> float:
        return AdaSketchNewton.merit(_point(p, v[:4], v[4:]), eta1, eta2)

    v0 = np.concatenate([x, lam])
    h = 1e-6
    fd = np.array([(merit(v0 + h * e) - merit(v0 - h * e)) / (2 * h) for e in np.eye(7)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-7)

    def merit_t(v: torch.Tensor) -> torch.Tensor:  # the merit written directly in torch
        xx, ll = v[:4], v[4:]
        c = hp.cons(xx)
        gl = torch.func.grad(lambda y: hp.fun(y) + ll @ hp.cons(y))(xx)
        return hp.fun(xx) + ll @ c + eta1 / 2 * c @ c + eta2 / 2 * gl @ gl

    auto = torch.func.grad(merit_t)(torch.tensor(v0)).numpy()
    np.testing.assert_allclose(grad, auto, rtol=1e-10, atol=1e-10)

    # the authors' approximation (hess f instead of hess_x L) differs by eta2 * (sum_i lam_i hess c_i) grad_x L
    approx = AdaSketchNewton.merit_gradient(pt, p.hess(x), eta1, eta2)
    np.testing.assert_allclose(grad[:4] - approx[:4], eta2 * p.cons_hess(x, lam) @ pt.grad_lag, atol=1e-12)
    np.testing.assert_allclose(grad[4:], approx[4:], atol=0)


def test_from_torch_derivatives_match_analytic_logistic():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((30, 4))
    y = rng.integers(0, 2, 30)
    A, b = random_linear_constraints(4, 2, rng)
    ana = constrained_logistic_problem(X, y, A, b)
    Xt, yt = torch.tensor(X), torch.tensor(2.0 * y - 1.0)
    auto = EqualityConstrainedProblem.from_torch(
        lambda w: torch.nn.functional.softplus(-(yt * (Xt @ w))).mean(),
        lambda w: torch.cat([torch.tensor(A) @ w - torch.tensor(b), (w @ w - 1).reshape(1)]),
    )
    w = rng.standard_normal(4)
    lam = rng.standard_normal(3)
    assert auto.fun(w) == pytest.approx(ana.fun(w), rel=1e-12)
    for name in ("grad", "hess", "cons", "jac"):
        np.testing.assert_allclose(getattr(auto, name)(w), getattr(ana, name)(w), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(auto.cons_hess(w, lam), ana.cons_hess(w, lam), atol=1e-12)


# ----------------------------------------------------------------------------------------------- solver
REGULAR_FAST = ["hs006", "hs007", "hs027", "hs028", "hs039", "hs040", "hs042", "hs048", "hs050", "hs051", "hs052",
                "hs077", "hs078", "hs079"]


@pytest.mark.parametrize("name", REGULAR_FAST)
def test_hs_problems_reach_known_optima_exact_solver(name):
    hp = HS_PROBLEMS[name]
    res = AdaSketchNewton(solver="exact", tol=1e-9, max_iter=100).solve(hp.problem(), np.asarray(hp.x0))
    assert res.converged, (res.status, res.kkt[-3:])
    np.testing.assert_allclose(res.x, hp.x_star, atol=1e-5)
    assert abs(hp.problem().fun(res.x) - hp.f_star) <= 1e-6 * (1 + abs(hp.f_star))
    assert res.step_sizes[-1] == 1.0


@pytest.mark.parametrize("name", ["hs007", "hs040", "hs042", "hs078", "hs079"])
@pytest.mark.parametrize("solver", ["gaussian", "kaczmarz"])
def test_hs_problems_sketch_solvers_theory_accuracy(name, solver):
    hp = HS_PROBLEMS[name]
    res = AdaSketchNewton(solver=solver, tol=1e-8, max_iter=60, rng=0).solve(hp.problem(), np.asarray(hp.x0))
    assert res.converged, (res.status, res.kkt[-3:])
    np.testing.assert_allclose(res.x, hp.x_star, atol=1e-5)
    assert res.total_sketch_iters > 0


def test_hs_problems_match_slsqp():
    for name in ("hs026", "hs046", "hs047", "hs049"):  # degenerate: compare objective values only
        hp = HS_PROBLEMS[name]
        p = hp.problem()
        res = AdaSketchNewton(solver="exact", tol=1e-8, max_iter=200).solve(p, np.asarray(hp.x0))
        ref = minimize(p.fun, hp.x0, jac=p.grad, method="SLSQP",
                       constraints=[{"type": "eq", "fun": p.cons, "jac": p.jac}], options={"ftol": 1e-14})
        assert res.converged
        assert abs(p.fun(res.x) - ref.fun) <= 1e-7 and abs(p.fun(res.x) - hp.f_star) <= 1e-7
        assert np.max(np.abs(res.x - ref.x)) < 5e-2
        assert hp.reduced_hessian_min_eig() < 1e-6


@pytest.mark.parametrize("solver,acc", [("exact", None), ("gaussian", 1.0), ("kaczmarz", 1.0), ("gaussian", None)])
def test_constrained_logistic_matches_trust_constr(solver, acc):
    p = _small_logistic()
    x0 = np.full(6, 1 / np.sqrt(6))
    x_ref, lam_ref = _trust_constr(p, x0)
    res = AdaSketchNewton(solver=solver, accuracy_constant=acc, tol=1e-10, max_iter=60, rng=1).solve(p, x0, np.ones(3))
    assert res.converged, (res.status, res.kkt)
    np.testing.assert_allclose(res.x, x_ref, atol=1e-6)
    np.testing.assert_allclose(res.lam, lam_ref, atol=1e-6)  # same sign convention as scipy's result.v
    assert all(res.unit_step[-3:])
    assert len(res.kkt) == res.n_iter + 1 == len(res.sketch_iters) + 1
    assert res.first_iteration_below(1e-6) is not None


def test_least_squares_initial_multipliers_and_callback():
    p = _small_logistic(seed=3)
    x0 = np.full(6, 1 / np.sqrt(6))
    seen = []
    res = AdaSketchNewton(solver="exact", tol=1e-10).solve(p, x0, callback=lambda k, x, lam, kkt: seen.append(kkt))
    assert res.converged and seen == res.kkt
    G, g = p.jac(x0), p.grad(x0)
    lam_ls = np.linalg.lstsq(G.T, -g, rcond=None)[0]
    assert np.linalg.norm(g + G.T @ lam_ls) <= np.linalg.norm(g + G.T @ np.ones(3))


def test_objective_hessian_merit_switch_still_converges():
    hp = HS_PROBLEMS["hs077"]
    res = AdaSketchNewton(solver="exact", merit_hessian="objective", tol=1e-9).solve(hp.problem(), np.asarray(hp.x0))
    assert res.converged
    np.testing.assert_allclose(res.x, hp.x_star, atol=1e-5)


def test_superlinear_accuracy_schedule_beats_constant_theta():
    p = _small_logistic(seed=4)
    x0 = np.full(6, 1 / np.sqrt(6))
    lin = AdaSketchNewton(accuracy_constant=1.0, tol=1e-11, rng=0).solve(p, x0, np.ones(3))
    sup = AdaSketchNewton(accuracy_constant=1.0, tol=1e-11, rng=0,
                          theta=lambda k, kkt: min(1.0, kkt)).solve(p, x0, np.ones(3))
    assert lin.converged and sup.converged and sup.n_iter < lin.n_iter
    ratios = np.array(sup.kkt[-3:-1]) / np.array(sup.kkt[-4:-2])
    assert ratios[-1] < ratios[0] or ratios[-1] < 1e-3


def test_hessian_modification_shifts():
    H = np.diag([-1.0, 3.0])
    G = np.array([[0.0, 1.0]])  # null space: e1, reduced Hessian -1
    B, mod = AdaSketchNewton(xi_b=0.1)._modify(H, G)
    assert mod and np.allclose(B, H + 3.1 * np.eye(2))
    B, mod = AdaSketchNewton(xi_b=0.1, hessian_shift="min_eig")._modify(H, G)
    assert mod and np.allclose(B, H + 1.1 * np.eye(2))
    B, mod = AdaSketchNewton()._modify(np.diag([2.0, -5.0]), G)  # reduced Hessian 2 > threshold: untouched
    assert not mod and np.allclose(B, np.diag([2.0, -5.0]))


def test_penalty_update_monotone_and_singular_jacobian_status():
    hp = HS_PROBLEMS["hs039"]
    res = AdaSketchNewton(solver="exact", tol=1e-9).solve(hp.problem(), np.asarray(hp.x0))
    assert res.converged and res.eta1[-1] > 1.0  # this start needs penalty updates
    assert np.all(np.diff(res.eta1) >= 0) and np.all(np.diff(res.eta2) <= 0)
    np.testing.assert_allclose(np.array(res.eta1) * np.array(res.eta2) ** 2, 1.0 * 0.1**2, rtol=1e-12)
    # c(x) = x1^2 - 1 at x1 = 0 has a zero Jacobian
    p = EqualityConstrainedProblem.from_torch(lambda x: (x**2).sum(), lambda x: (x[0] ** 2 - 1).reshape(1))
    res = AdaSketchNewton(solver="exact").solve(p, np.zeros(2), np.zeros(1))
    assert res.status == "singular_jacobian" and not res.converged


def test_bad_input_errors():
    p = _small_logistic()
    x0 = np.full(6, 0.4)
    solver = AdaSketchNewton(solver="exact")
    with pytest.raises(ValueError, match="x0"):
        solver.solve(p, np.array([np.nan] * 6))
    with pytest.raises(ValueError, match="x0"):
        solver.solve(p, np.ones((2, 3)))
    with pytest.raises(TypeError, match="problem"):
        solver.solve(lambda x: x, x0)
    with pytest.raises(ValueError, match="cons must return shape"):
        solver.solve(p, x0, np.ones(2))
    with pytest.raises(ValueError, match="lam0"):
        solver.solve(p, x0, np.array([np.inf, 0.0, 0.0]))
    nan_f = EqualityConstrainedProblem(fun=lambda x: np.nan, grad=p.grad, hess=p.hess, cons=p.cons, jac=p.jac,
                                       cons_hess=p.cons_hess)
    with pytest.raises(ValueError, match="fun is not finite"):
        solver.solve(nan_f, x0, np.ones(3))
    bad_jac = EqualityConstrainedProblem(fun=p.fun, grad=p.grad, hess=p.hess, cons=p.cons,
                                         jac=lambda x: np.ones((3, 5)), cons_hess=p.cons_hess)
    with pytest.raises(ValueError, match="jac must return shape"):
        solver.solve(bad_jac, x0, np.ones(3))
    bad_hess = EqualityConstrainedProblem(fun=p.fun, grad=p.grad, hess=lambda x: np.ones((6, 5)), cons=p.cons,
                                          jac=p.jac, cons_hess=p.cons_hess)
    with pytest.raises(ValueError, match="hess"):
        solver.solve(bad_hess, x0, np.ones(3))
    with pytest.raises(TypeError, match="callable"):
        EqualityConstrainedProblem(fun=1.0, grad=p.grad, hess=p.hess, cons=p.cons, jac=p.jac, cons_hess=p.cons_hess)
    many = EqualityConstrainedProblem.from_torch(lambda x: x.sum(), lambda x: torch.stack([x[0], x[0] + 1, x[0] - 1]))
    with pytest.raises(ValueError, match="more constraints"):
        solver.solve(many, np.zeros(2), np.zeros(3))
    for kwargs, err in [({"beta": 0.5}, "beta"), ({"theta": 1.5}, "theta"), ({"solver": "cg"}, "solver"),
                        ({"nu": 1.0}, "nu"), ({"eta1": -1.0}, "eta1"), ({"accuracy_constant": 0.0}, "accuracy"),
                        ({"merit_hessian": "gn"}, "merit_hessian"), ({"hessian_shift": "x"}, "hessian_shift")]:
        with pytest.raises(ValueError, match=err):
            AdaSketchNewton(**kwargs)
    with pytest.raises(ValueError, match="theta"):
        AdaSketchNewton(theta=lambda k, kkt: 2.0, solver="exact").solve(p, x0, np.ones(3))


def test_logistic_problem_bad_input():
    X = np.ones((4, 3))
    with pytest.raises(ValueError, match="labels"):
        constrained_logistic_problem(X, np.array([0, 1, 2, 1]), np.ones((1, 3)), np.ones(1))
    with pytest.raises(ValueError, match="A must have shape"):
        constrained_logistic_problem(X, np.array([0, 1, 0, 1]), np.ones((1, 2)), np.ones(1))
    with pytest.raises(ValueError, match="k must be < d"):
        random_linear_constraints(3, 3, np.random.default_rng(0))


def test_hs_catalogue_is_consistent():
    for name, hp in HS_PROBLEMS.items():
        p = hp.problem()
        xs = np.asarray(hp.x_star)
        tol = 10.0 ** (1 - hp.x_digits) * 10
        assert np.max(np.abs(p.cons(xs))) <= max(tol, 1e-12) * 10, name  # the reported optimum is feasible
        assert abs(p.fun(xs) - hp.f_star) <= max(tol, 1e-12) * (1 + abs(hp.f_star)) * 10, name


def test_warm_start_across_iterations_reaches_same_solution():
    p = _small_logistic(seed=5)
    x0 = np.full(6, 1 / np.sqrt(6))
    cold = AdaSketchNewton(accuracy_constant=1.0, tol=1e-10, rng=2).solve(p, x0, np.ones(3))
    warm = AdaSketchNewton(accuracy_constant=1.0, tol=1e-10, rng=2, warm_start=True).solve(p, x0, np.ones(3))
    assert cold.converged and warm.converged
    np.testing.assert_allclose(warm.x, cold.x, atol=1e-8)
    np.testing.assert_allclose(warm.lam, cold.lam, atol=1e-8)
    assert all(r <= 0.1 * (1 + 1e-9) for r in warm.relative_residuals)  # theta * delta / kappa = 0.1
