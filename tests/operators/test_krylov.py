"""DCDM solver, IC(0) and AMG preconditioners against scipy's cg, dense linear algebra and numpy Cholesky."""

import sys

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.linalg import LinearOperator, cg, spsolve

from gradlab.operators.krylov import amg_preconditioner, dcdm, ichol0


def lap2d(n1, n2=None):
    """5-point Dirichlet Laplacian built independently of the library (explicit loops)."""
    n2 = n1 if n2 is None else n2
    N = n1 * n2
    rows, cols, vals = [], [], []
    for i in range(n1):
        for j in range(n2):
            k = i * n2 + j
            rows.append(k), cols.append(k), vals.append(4.0)
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                a, c = i + di, j + dj
                if 0 <= a < n1 and 0 <= c < n2:
                    rows.append(k), cols.append(a * n2 + c), vals.append(-1.0)
    return sp.csr_array((vals, (rows, cols)), shape=(N, N))


def counter():
    calls = []
    return calls, (lambda xk: calls.append(xk.copy()))


def cg_iterations(A, b, **kw):
    calls, cb = counter()
    x, info = cg(A, b, callback=cb, **kw)
    return len(calls), x, info


def random_spd(n, rng, cond=50.0):
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.geomspace(1.0, cond, n)
    return (Q * lam) @ Q.T


# --------------------------------------------------------------------------------------------------------------- dcdm


@pytest.mark.parametrize("n_orth", [1, 2])
@pytest.mark.parametrize("shape", [(32, 32), (24, 17)])
@pytest.mark.parametrize("kind", ["A_randn", "randn"])
def test_identity_direction_is_cg(n_orth, shape, kind):
    A = lap2d(*shape)
    rng = np.random.default_rng(3)
    z = rng.standard_normal(A.shape[0])
    b = A @ z if kind == "A_randn" else z
    its_cg, x_cg, info_cg = cg_iterations(A, b, rtol=1e-6)
    calls, cb = counter()
    x, info = dcdm(A, b, direction=lambda r: r, rtol=1e-6, n_orth=n_orth, callback=cb)
    assert info == 0 and info_cg == 0
    assert len(calls) == its_cg
    np.testing.assert_allclose(x, x_cg, rtol=0, atol=1e-8 * np.abs(x_cg).max())
    assert np.linalg.norm(b - A @ x) <= 1.0001e-6 * np.linalg.norm(b)


def test_identity_direction_is_cg_with_x0_and_atol():
    A = lap2d(20)
    rng = np.random.default_rng(0)
    b, x0 = rng.standard_normal(400), rng.standard_normal(400)
    x0_saved = x0.copy()
    its_cg, x_cg, _ = cg_iterations(A, b, x0=x0.copy(), rtol=0.0, atol=1e-4)
    calls, cb = counter()
    x, info = dcdm(A, b, x0, direction=lambda r: r, rtol=0.0, atol=1e-4, callback=cb)
    assert info == 0 and len(calls) == its_cg
    np.testing.assert_allclose(x, x_cg, atol=1e-9)
    np.testing.assert_array_equal(x0, x0_saved)  # x0 not mutated


def test_exact_inverse_converges_in_one_iteration():
    A = lap2d(16).tocsc()
    b = np.random.default_rng(1).standard_normal(256)
    calls, cb = counter()
    x, info = dcdm(A, b, direction=lambda r: -7.0 * spsolve(A, r), rtol=1e-10, callback=cb)  # any scale works
    assert info == 0 and len(calls) == 1
    np.testing.assert_allclose(x, spsolve(A, b), atol=1e-10)


def test_steepest_descent_hand_computed():
    """n_orth=0 with the identity direction is steepest descent; compare with the closed-form steps."""
    A = np.array([[4.0, 1.0], [1.0, 3.0]])
    b = np.array([1.0, 2.0])
    calls, cb = counter()
    dcdm(A, b, direction=lambda r: r, n_orth=0, maxiter=3, rtol=1e-12, callback=cb)
    x, r = np.zeros(2), b.copy()
    for xk in calls:
        a = (r @ r) / (r @ A @ r)
        x = x + a * r
        r = b - A @ x
        np.testing.assert_allclose(xk, x, rtol=1e-13)
    assert len(calls) == 3


def _a_norm_errors(A, b, direction, n_orth, maxiter):
    xs = np.linalg.solve(A, b)
    calls, cb = counter()
    dcdm(A, b, direction=direction, n_orth=n_orth, rtol=1e-10, maxiter=maxiter, callback=cb)
    errs = [np.sqrt((xs - 0) @ A @ (xs - 0))] + [np.sqrt((xs - x) @ A @ (xs - x)) for x in calls]
    return np.array(errs)


@pytest.mark.parametrize("n_orth", [0, 1, 2, 4])
def test_a_norm_error_never_rises_with_nonlinear_direction(n_orth):
    rng = np.random.default_rng(5)
    A = random_spd(60, rng, cond=100.0)
    W = rng.standard_normal((60, 60)) * 0.3 / np.sqrt(60)
    b = rng.standard_normal(60)

    def f(r):  # a nonlinear, non-symmetric "network"
        return r + 3.0 * np.tanh(W @ r) + 0.05 * np.abs(r)

    errs = _a_norm_errors(A, b, f, n_orth, 80)
    assert np.all(np.diff(errs) <= 1e-12 * errs[0])
    assert errs[-1] < 0.5 * errs[0]  # the directions do make progress


def test_maxiter_reached_returns_maxiter_and_dense_linearoperator_agree():
    A = lap2d(12)
    b = np.random.default_rng(2).standard_normal(144)
    outs = []
    for form in (A, A.toarray(), LinearOperator(A.shape, matvec=lambda v: A @ v, dtype=float)):
        x, info = dcdm(form, b, direction=lambda r: r, rtol=1e-12, maxiter=5)
        outs.append(x)
        assert info == 5
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-12)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-12)


def test_zero_rhs_and_column_vector():
    A = lap2d(5)
    x, info = dcdm(A, np.zeros(25), direction=lambda r: r)
    assert info == 0 and not x.any()
    b = np.arange(25.0)[:, None]
    x, info = dcdm(A, b, direction=lambda r: r, rtol=1e-10)
    assert info == 0 and x.shape == (25,)
    np.testing.assert_allclose(A @ x, b[:, 0], atol=1e-8)


def test_torch_direction_output_is_accepted():
    import torch

    A = lap2d(8)
    b = np.ones(64)
    x, info = dcdm(A, b, direction=lambda r: torch.as_tensor(r, dtype=torch.float32), rtol=1e-6)
    assert info == 0
    assert np.linalg.norm(b - A @ x) < 1e-6 * 8


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_inputs_rejected(bad):
    A = lap2d(4)
    b = np.ones(16)
    b[3] = bad
    with pytest.raises(ValueError, match="b contains NaN or inf"):
        dcdm(A, b, direction=lambda r: r)
    x0 = np.zeros(16)
    x0[0] = bad
    with pytest.raises(ValueError, match="x0 contains NaN or inf"):
        dcdm(A, np.ones(16), x0, direction=lambda r: r)


def test_bad_arguments_named():
    A = lap2d(4)
    b = np.ones(16)
    with pytest.raises(ValueError, match="square"):
        dcdm(np.ones((3, 4)), np.ones(3), direction=lambda r: r)
    with pytest.raises(ValueError, match=r"b must have shape \(16,\)"):
        dcdm(A, np.ones(15), direction=lambda r: r)
    with pytest.raises(ValueError, match="x0 must have shape"):
        dcdm(A, b, np.ones(17), direction=lambda r: r)
    with pytest.raises(TypeError, match="direction must be callable"):
        dcdm(A, b, direction=None)
    with pytest.raises(TypeError, match="A must be"):
        dcdm("matrix", b, direction=lambda r: r)
    with pytest.raises(ValueError, match="rtol"):
        dcdm(A, b, direction=lambda r: r, rtol=-1.0)
    with pytest.raises(ValueError, match="rtol and atol"):
        dcdm(A, b, direction=lambda r: r, rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="n_orth"):
        dcdm(A, b, direction=lambda r: r, n_orth=-1)
    with pytest.raises(TypeError, match="maxiter"):
        dcdm(A, b, direction=lambda r: r, maxiter=2.5)
    with pytest.raises(ValueError, match="maxiter"):
        dcdm(A, b, direction=lambda r: r, maxiter=0)
    with pytest.raises(TypeError, match="b must hold real numbers"):
        dcdm(A, np.ones(16, dtype=complex), direction=lambda r: r)
    with pytest.raises(TypeError, match="callback"):
        dcdm(A, b, direction=lambda r: r, callback=3)


def test_nonfinite_direction_and_matvec_raise_floating_point_error_naming_iteration():
    A = lap2d(4)
    b = np.ones(16)
    state = {"k": 0}

    def goes_bad(r):
        state["k"] += 1
        return r if state["k"] < 3 else np.full_like(r, np.nan)

    with pytest.raises(FloatingPointError, match="direction returned NaN or inf at iteration 3"):
        dcdm(A, b, direction=goes_bad, rtol=1e-12)
    op = LinearOperator(A.shape, matvec=lambda v: np.full(16, np.inf), dtype=float)
    with pytest.raises(FloatingPointError, match="A @ q contains NaN or inf at iteration 1"):
        dcdm(op, b, direction=lambda r: r)
    with pytest.raises(ValueError, match="direction must return 16 numbers"):
        dcdm(A, b, direction=lambda r: r[:-1])


def test_breakdown_returns_negative_info():
    A = np.diag([1.0, -2.0])  # indefinite
    x, info = dcdm(A, np.array([0.0, 1.0]), direction=lambda r: r)
    assert info == -1 and not x.any()
    x, info = dcdm(lap2d(3), np.ones(9), direction=lambda r: np.zeros_like(r))
    assert info == -1
    # q in the span of the previous direction: second step breaks down
    x, info = dcdm(lap2d(3), np.arange(9.0), direction=lambda r: np.ones(9), n_orth=1, rtol=1e-12)
    assert info == -2


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), seed=st.integers(0, 10_000), n_orth=st.integers(0, 3))
def test_property_converges_to_dense_solution(n, seed, n_orth):
    rng = np.random.default_rng(seed)
    A = random_spd(n, rng, cond=20.0)
    b = rng.standard_normal(n)
    x, info = dcdm(A, b, direction=lambda r: r, rtol=1e-10, n_orth=n_orth, maxiter=2000)
    assert info == 0
    np.testing.assert_allclose(x, np.linalg.solve(A, b), atol=1e-8 * (1 + np.abs(np.linalg.solve(A, b)).max()))


@settings(max_examples=40, deadline=None)
@given(rtol=st.one_of(st.floats(max_value=-1e-300), st.just(np.nan), st.just(np.inf), st.text(max_size=2), st.none()),
       )
def test_property_bad_rtol_clear_error(rtol):
    with pytest.raises((TypeError, ValueError), match="rtol"):
        dcdm(np.eye(3), np.ones(3), direction=lambda r: r, rtol=rtol)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(2, 30), seed=st.integers(0, 10_000))
def test_property_a_norm_monotone_random_directions(n, seed):
    rng = np.random.default_rng(seed)
    A = random_spd(n, rng, cond=100.0)
    b = rng.standard_normal(n)
    W = rng.standard_normal((n, n))
    errs = _a_norm_errors(A, b, lambda r: np.sin(W @ r) + r, 2, 3 * n)
    assert np.all(np.diff(errs) <= 1e-10 * errs[0])


# --------------------------------------------------------------------------------------------------------------- IC(0)


@pytest.mark.parametrize("shape", [(16, 16), (9, 13)])
def test_ichol0_matches_a_on_its_pattern(shape):
    A = lap2d(*shape)
    L = ichol0(A).L
    assert sp.issparse(L) and (sp.triu(L, 1).nnz == 0)
    pattern = sp.tril(A).tocsr()
    np.testing.assert_array_equal(np.sort(L.indices), np.sort(pattern.indices))  # no fill
    LLt = (L @ L.T).tocsr()
    on_pattern = LLt.multiply(A != 0)
    np.testing.assert_allclose(on_pattern.toarray(), A.toarray(), atol=1e-13)
    assert abs(LLt - A).max() > 1e-3  # ... but it is not the exact Cholesky (fill-in dropped)


def test_ichol0_equals_cholesky_when_there_is_no_fill():
    rng = np.random.default_rng(0)
    n = 40
    off = rng.uniform(-1, 1, n - 1)
    A = sp.diags_array([off, 3.0 + rng.uniform(0, 1, n), off], offsets=[-1, 0, 1], format="csr")
    L = ichol0(A).L.toarray()
    np.testing.assert_allclose(L, np.linalg.cholesky(A.toarray()), atol=1e-13)


def test_ichol0_operator_applies_inverse_of_llt_and_speeds_up_cg():
    A = lap2d(24)
    M = ichol0(A)
    r = np.random.default_rng(4).standard_normal(A.shape[0])
    L = M.L.toarray()
    np.testing.assert_allclose(M.matvec(r), scipy.linalg.solve(L @ L.T, r), atol=1e-10)
    np.testing.assert_allclose(M @ r, M.matvec(r))
    plain, _, _ = cg_iterations(A, r, rtol=1e-8)
    pcg, x, info = cg_iterations(A, r, rtol=1e-8, M=M)
    assert info == 0 and pcg < 0.6 * plain


def test_ichol0_bad_input():
    with pytest.raises(ValueError, match="symmetric"):
        ichol0(sp.csr_array(np.array([[2.0, 1.0], [0.0, 2.0]])))
    with pytest.raises(ValueError, match="non-positive pivot .* row 1"):
        ichol0(np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(TypeError, match="LinearOperator"):
        ichol0(LinearOperator((2, 2), matvec=lambda v: v, dtype=float))
    with pytest.raises(ValueError, match="NaN or inf"):
        ichol0(np.array([[np.nan, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="square"):
        ichol0(np.ones((2, 3)))
    with pytest.raises(ValueError, match="diagonal entry .* row 0"):
        ichol0(sp.csr_array(np.array([[0.0, 1.0], [1.0, 2.0]])))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 25), seed=st.integers(0, 10_000), density=st.floats(0.05, 0.5))
def test_property_ichol0_pattern_identity_random_sparse_spd(n, seed, density):
    rng = np.random.default_rng(seed)
    B = sp.random_array((n, n), density=density, rng=rng, format="csr")
    S = abs(B + B.T)
    # diagonally dominant M-matrix: IC(0) exists (Meijerink & van der Vorst)
    A = sp.csr_array(sp.diags_array(np.asarray(S.sum(axis=1)).ravel() + 1.0) - S)
    M = ichol0(A)
    L = M.L
    LLt = (L @ L.T).multiply(A != 0).toarray()
    np.testing.assert_allclose(LLt, A.toarray(), atol=1e-12 * max(1.0, abs(A).max()))
    r = rng.standard_normal(n)
    Ld = L.toarray()
    np.testing.assert_allclose(M.matvec(r), np.linalg.solve(Ld @ Ld.T, r), rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------------------------------------------------- AMG


def test_amg_preconditioner_converges_in_few_cg_steps():
    import pyamg  # noqa: F401 - the operators extra is part of the test environment

    A = lap2d(64)
    b = np.random.default_rng(0).standard_normal(A.shape[0])
    plain, _, _ = cg_iterations(A, b, rtol=1e-6)
    its, x, info = cg_iterations(A, b, rtol=1e-6, M=amg_preconditioner(A))
    assert info == 0 and its <= 15 < plain
    assert np.linalg.norm(b - A @ x) < 1e-6 * np.linalg.norm(b)


def test_amg_preconditioner_without_pyamg_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyamg", None)  # makes `import pyamg` raise ImportError
    with pytest.raises(ImportError, match="operators"):
        amg_preconditioner(lap2d(4))


def test_amg_bad_cycle():
    with pytest.raises(ValueError, match="cycle"):
        amg_preconditioner(lap2d(4), cycle="Z")


@settings(max_examples=15, deadline=None)
@given(n1=st.integers(2, 24), n2=st.integers(2, 24), seed=st.integers(0, 10_000))
def test_property_amg_pcg_converges(n1, n2, seed):
    A = lap2d(n1, n2)
    b = np.random.default_rng(seed).standard_normal(A.shape[0])
    its, x, info = cg_iterations(A, b, rtol=1e-8, M=amg_preconditioner(A))
    assert info == 0
    assert np.linalg.norm(b - A @ x) <= 1.01e-8 * np.linalg.norm(b)
