"""Hypothesis property tests for the public entry points of gradlab.curvature.

Operators built from random symmetric matrices (or a linear least-squares model, whose Hessian is known in closed
form) are checked against numpy; corrupted arguments must raise ValueError/TypeError naming the argument.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.curvature import (
    DenseOperator, FunctionOperator, GaussNewtonOperator, HessianOperator, as_operator, bisect_max_stable_lr,
    extreme_eigenvalues, fit_batch_law, gauss_newton_vector_product, hessian_vector_product, hutchinson_trace,
    lanczos, power_iteration, scale_learning_rate, sketch_solve, slq_spectral_density,
)

torch.set_num_threads(1)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def raises_naming(name, fn):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    assert name in str(info.value), f"message {str(info.value)!r} does not name {name!r}"


def sym(p, seed, spd=False):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(p, p, generator=g, dtype=torch.float64)
    return a @ a.T + torch.eye(p, dtype=torch.float64) if spd else (a + a.T) / 2


@SETTINGS
@given(p=st.integers(1, 6), seed=st.integers(0, 10**5),
       kind=st.sampled_from(["none", "nonsym", "nonsquare", "nan", "int", "v_rows", "v_nan", "V_rank", "fn_size",
                             "fn_call", "fn_zero", "not_op"]))
def test_operators_apply_their_matrix(p, seed, kind):
    A = sym(p, seed)
    bad = {"nonsym": (lambda: DenseOperator(A + torch.triu(torch.ones(p, p, dtype=A.dtype), 1)) if p > 1
                      else DenseOperator(torch.ones(1, 2)), "matrix"),
           "nonsquare": (lambda: DenseOperator(torch.zeros(p, p + 1, dtype=A.dtype)), "matrix"),
           "nan": (lambda: DenseOperator(torch.full((p, p), float("nan"))), "matrix"),
           "int": (lambda: DenseOperator(torch.eye(p, dtype=torch.int64)), "matrix"),
           "v_rows": (lambda: DenseOperator(A).matvec(torch.ones(p + 1, dtype=A.dtype)), "v"),
           "v_nan": (lambda: DenseOperator(A).matvec(torch.full((p,), float("nan"), dtype=A.dtype)), "v"),
           "V_rank": (lambda: DenseOperator(A).matmat(torch.ones(p, dtype=A.dtype)), "V"),
           "fn_size": (lambda: FunctionOperator(lambda V: V, size=p + 0.5), "size"),
           "fn_call": (lambda: FunctionOperator(A, size=p), "matmat"),
           "fn_zero": (lambda: FunctionOperator(lambda V: V, size=0), "size"),
           "not_op": (lambda: as_operator(A.numpy()), "operator")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    v = torch.linspace(-1, 1, p, dtype=torch.float64)
    op, fop = DenseOperator(A), FunctionOperator(lambda V: A @ V, size=p, dtype=torch.float64)
    np.testing.assert_allclose(op.matvec(v).numpy(), A.numpy() @ v.numpy(), atol=1e-12)
    np.testing.assert_allclose(fop.to_dense().numpy(), A.numpy(), atol=1e-12)
    np.testing.assert_allclose(op.to_scipy().matvec(v.numpy()), A.numpy() @ v.numpy(), atol=1e-12)


@SETTINGS
@given(p=st.integers(1, 7), seed=st.integers(0, 10**5), runs=st.integers(1, 3),
       kind=st.sampled_from(["none", "iters_zero", "iters_float", "v0_shape", "v0_zero", "v0_nan", "runs_zero",
                             "tol_neg", "k_big"]))
def test_full_lanczos_recovers_the_spectrum(p, seed, runs, kind):
    A = sym(p, seed)
    bad = {"iters_zero": (lambda: lanczos(A, 0), "num_iters"),
           "iters_float": (lambda: lanczos(A, 2.0), "num_iters"),
           "v0_shape": (lambda: lanczos(A, p, v0=torch.ones(p + 1, dtype=A.dtype)), "v0"),
           "v0_zero": (lambda: lanczos(A, p, v0=torch.zeros(p, dtype=A.dtype)), "v0"),
           "v0_nan": (lambda: lanczos(A, p, v0=torch.full((p,), float("nan"), dtype=A.dtype)), "v0"),
           "runs_zero": (lambda: lanczos(A, p, num_runs=0), "num_runs"),
           "tol_neg": (lambda: lanczos(A, p, breakdown_tol=-1.0), "breakdown_tol"),
           "k_big": (lambda: extreme_eigenvalues(A, p, k=p + 1), "k")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    evals = np.linalg.eigvalsh(A.numpy())
    res = lanczos(A, p, num_runs=runs, generator=torch.Generator().manual_seed(seed))
    for r in range(runs):
        np.testing.assert_allclose(np.sort(res.ritz_values[r].numpy()), evals, atol=1e-8)
        assert float(res.ritz_weights[r].sum()) == pytest.approx(1.0)
    top, bottom = extreme_eigenvalues(A, p, k=1, generator=torch.Generator().manual_seed(seed))
    assert float(top[0]) == pytest.approx(evals[-1], abs=1e-8)
    assert float(bottom[0]) == pytest.approx(evals[0], abs=1e-8)


@SETTINGS
@given(p=st.integers(2, 6), seed=st.integers(0, 10**5), gap=st.floats(2.0, 10.0),
       kind=st.sampled_from(["none", "tol_zero", "iters_neg"]))
def test_power_iteration_finds_a_dominant_eigenvalue(p, seed, gap, kind):
    if kind == "tol_zero":
        raises_naming("tol", lambda: power_iteration(torch.eye(p, dtype=torch.float64), tol=0.0))
        return
    if kind == "iters_neg":
        raises_naming("num_iters", lambda: power_iteration(torch.eye(p, dtype=torch.float64), num_iters=-1))
        return
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    lam = torch.linspace(0.1, 1.0, p, dtype=torch.float64)
    lam[-1] = gap  # |lambda_2 / lambda_1| <= 1/2
    A = q @ torch.diag(lam) @ q.T
    A = (A + A.T) / 2
    res = power_iteration(A, num_iters=500, tol=1e-12, generator=torch.Generator().manual_seed(seed))
    assert res.eigenvalue == pytest.approx(gap, rel=1e-8)
    assert abs(float(res.eigenvector @ q[:, -1])) == pytest.approx(1.0, abs=1e-5)


@SETTINGS
@given(diag=st.lists(st.floats(-5, 5), min_size=1, max_size=8), probes=st.integers(1, 9), bs=st.integers(1, 4),
       kind=st.sampled_from(["none", "probes_zero", "bs_zero", "distribution"]))
def test_rademacher_hutchinson_and_slq_are_exact_on_diagonal_matrices(diag, probes, bs, kind):
    D = torch.diag(torch.tensor(diag, dtype=torch.float64))
    bad = {"probes_zero": (lambda: hutchinson_trace(D, num_probes=0), "num_probes"),
           "bs_zero": (lambda: hutchinson_trace(D, batch_size=0), "batch_size"),
           "distribution": (lambda: slq_spectral_density(D, distribution="uniform"), "distribution")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    est = hutchinson_trace(D, num_probes=probes, batch_size=bs, generator=torch.Generator().manual_seed(0))
    assert est.mean == pytest.approx(sum(diag), abs=1e-10)  # z^T D z = tr D for z in {-1, 1}^P
    assert est.samples.shape == (probes,)
    dens = slq_spectral_density(D, num_probes=probes, num_iters=len(diag), generator=torch.Generator().manual_seed(1))
    assert dens.moment(0) == pytest.approx(1.0)
    assert dens.trace() == pytest.approx(sum(diag), abs=1e-8)
    assert dens.moment(2) == pytest.approx(sum(x * x for x in diag) / len(diag), abs=1e-8)


def _linear_problem(n, d, seed):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, 1, bias=False).double()
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    return model, x, y


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 8), d=st.integers(1, 4), seed=st.integers(0, 1000),
       kind=st.sampled_from(["none", "vec_len", "vec_list_len", "vec_type", "batch_nan", "vec_dict_missing"]))
def test_hessian_and_gauss_newton_of_least_squares_are_2_over_n_xtx(n, d, seed, kind):
    model, x, y = _linear_problem(n, d, seed)
    loss = nn.MSELoss()
    v = torch.linspace(-1, 1, d, dtype=torch.float64)
    bad = {"vec_len": (lambda: hessian_vector_product(model, loss, (x, y), torch.ones(d + 1, dtype=x.dtype)), "v"),
           "vec_list_len": (lambda: hessian_vector_product(model, loss, (x, y), [v, v]), "vector"),
           "vec_type": (lambda: hessian_vector_product(model, loss, (x, y), v.numpy()), "vector"),
           "batch_nan": (lambda: HessianOperator(model, loss, (torch.full_like(x, float("nan")), y)), "batch"),
           "vec_dict_missing": (lambda: hessian_vector_product(model, loss, (x, y), {}), "vector")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    H = 2.0 / n * x.numpy().T @ x.numpy()
    np.testing.assert_allclose(hessian_vector_product(model, loss, (x, y), v).numpy(), H @ v.numpy(), atol=1e-10)
    np.testing.assert_allclose(gauss_newton_vector_product(model, loss, (x, y), v).numpy(), H @ v.numpy(), atol=1e-10)
    out = hessian_vector_product(model, loss, (x, y), {"weight": v[None]})
    np.testing.assert_allclose(out["weight"].numpy()[0], H @ v.numpy(), atol=1e-10)
    np.testing.assert_allclose(GaussNewtonOperator(model, loss, (x, y)).to_dense().numpy(), H, atol=1e-10)


@SETTINGS
@given(lr=st.floats(1e-5, 10), b0=st.integers(1, 512), b=st.integers(1, 4096), rule=st.sampled_from(["linear", "sqrt"]),
       kind=st.sampled_from(["none", "lr_neg", "lr_nan", "b0_zero", "b_float", "rule"]))
def test_scale_learning_rate_closed_form(lr, b0, b, rule, kind):
    bad = {"lr_neg": (lambda: scale_learning_rate(-lr, b0, b), "base_lr"),
           "lr_nan": (lambda: scale_learning_rate(float("nan"), b0, b), "base_lr"),
           "b0_zero": (lambda: scale_learning_rate(lr, 0, b), "base_batch_size"),
           "b_float": (lambda: scale_learning_rate(lr, b0, float(b)), "batch_size"),
           "rule": (lambda: scale_learning_rate(lr, b0, b, rule="cubic"), "rule")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    expected = lr * (b / b0 if rule == "linear" else math.sqrt(b / b0))
    assert scale_learning_rate(lr, b0, b, rule) == pytest.approx(expected, rel=1e-12)


@SETTINGS
@given(sizes=st.lists(st.integers(1, 2048), min_size=2, max_size=6, unique=True), a=st.floats(-5, 5),
       c=st.floats(-50, 50), fixed=st.booleans(),
       kind=st.sampled_from(["none", "len", "nonpositive", "nan"]))
def test_fit_batch_law_recovers_exact_laws(sizes, a, c, fixed, kind):
    lambdas = [a + c / s for s in sizes]
    bad = {"len": (lambda: fit_batch_law(sizes, lambdas[:-1]), "batch_sizes"),
           "nonpositive": (lambda: fit_batch_law([0] + sizes[1:], lambdas), "batch_sizes"),
           "nan": (lambda: fit_batch_law(sizes, [float("nan")] + lambdas[1:]), "lambdas")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    fit = fit_batch_law(sizes, lambdas, lambda_full=a if fixed else None)
    assert fit.lambda_full == pytest.approx(a, abs=1e-7)
    assert fit.c == pytest.approx(c, abs=1e-6)
    assert fit.rmse == pytest.approx(0.0, abs=1e-7)


@SETTINGS
@given(threshold=st.floats(1e-3, 1e3), low=st.floats(1e-4, 1.0), ratio=st.floats(2.0, 1e4), steps=st.integers(1, 30),
       kind=st.sampled_from(["none", "high_le_low", "steps_zero", "low_neg"]))
def test_bisect_max_stable_lr_brackets_the_threshold(threshold, low, ratio, steps, kind):
    high = low * ratio
    stable = lambda lr: lr <= threshold  # noqa: E731
    bad = {"high_le_low": (lambda: bisect_max_stable_lr(stable, high, low), "high"),
           "steps_zero": (lambda: bisect_max_stable_lr(stable, low, high, 0), "num_steps"),
           "low_neg": (lambda: bisect_max_stable_lr(stable, -low, high), "low")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    got = bisect_max_stable_lr(stable, low, high, steps)
    if threshold < low:
        assert got == low
    elif threshold >= high:
        assert got == high
    else:
        assert got <= threshold
        assert math.log(threshold / got) <= math.log(ratio) / 2**steps + 1e-9  # bisection on log lr


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 1000), method=st.sampled_from(["gaussian", "kaczmarz"]),
       kind=st.sampled_from(["none", "b_shape", "K_nonsquare", "nan", "tol_neg", "rng_str", "method"]))
def test_sketch_solve_reaches_the_tolerance(n, seed, method, kind):
    rng = np.random.default_rng(seed)
    K = rng.standard_normal((n, n)) + 3 * np.eye(n)
    b = rng.standard_normal(n)
    bad = {"b_shape": (lambda: sketch_solve(K, b[:-1] if n > 1 else np.ones(2), 1e-6), "b"),
           "K_nonsquare": (lambda: sketch_solve(K[:, :0] if n == 1 else K[:, :-1], b, 1e-6), "K"),
           "nan": (lambda: sketch_solve(np.full_like(K, np.nan), b, 1e-6), "K"),
           "tol_neg": (lambda: sketch_solve(K, b, -1.0), "tol"),
           "rng_str": (lambda: sketch_solve(K, b, 1e-6, rng="0"), "rng"),
           "method": (lambda: sketch_solve(K, b, 1e-6, method="svd"), "method")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    res = sketch_solve(K, b, 1e-8, method=method, rng=seed, max_iter=200_000)
    assert np.linalg.norm(K @ res.z - b) <= 1e-8
    np.testing.assert_allclose(res.z, np.linalg.solve(K, b), atol=1e-6)
