"""Darcy data (arXiv 2310.19809 / 2506.10973 setting) against closed forms, a dense hand-assembled reference,
scipy quadrature and manufactured solutions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from gradlab.operators import DarcyCoefficient, darcy_dataset, darcy_grid, solve_darcy


def test_grid_is_nested():
    np.testing.assert_array_equal(darcy_grid(64)[::2], darcy_grid(32))
    assert darcy_grid(4).tolist() == [0.0, 0.25, 0.5, 0.75]


def test_constant_coefficient_1d_is_exact():
    """-(a u')' = 1 with constant a: u = x(1-x)/(2a); the 3-point scheme is exact for quadratics."""
    n = 50
    x = darcy_grid(n)
    u = solve_darcy(lambda x: np.full((2, x.size), 1.0) * np.array([[2.0], [5.0]]), n)
    np.testing.assert_allclose(u, np.stack([x * (1 - x) / 4, x * (1 - x) / 10]), atol=1e-14)


def test_linear_coefficient_1d_closed_form_second_order():
    """a = 1 + x: u = ln(1+x)/ln 2 - x (by hand: a u' = C - x, u(0) = u(1) = 0)."""
    errs = []
    for n in (16, 32, 64, 128):
        x = darcy_grid(n)
        u = solve_darcy(lambda x: 1.0 + x, n)[0]
        errs.append(np.abs(u - (np.log1p(x) / math.log(2) - x)).max())
    assert errs[-1] < 1e-5 and all(3.5 < a / b < 4.5 for a, b in zip(errs, errs[1:]))


def test_piecewise_coefficient_1d_matches_scipy_quad():
    """Discontinuous a: u(x) = int_0^x (C - s)/a(s) ds with C from u(1) = 0, by scipy quadrature."""
    jump = 1 / math.sqrt(2)

    def a_scalar(s):
        return 3.0 if s < jump else 12.0

    inv = integrate.quad(lambda s: 1 / a_scalar(s), 0, 1, points=[jump])[0]
    sinv = integrate.quad(lambda s: s / a_scalar(s), 0, 1, points=[jump])[0]
    C = sinv / inv

    def exact(x):
        return integrate.quad(lambda s: (C - s) / a_scalar(s), 0, x, points=[jump] if x > jump else None)[0]

    n = 128
    x = darcy_grid(n)
    u = solve_darcy(lambda x: np.where(x < jump, 3.0, 12.0), n, n_sub=64)[0]
    ref = np.array([exact(xi) for xi in x])
    assert np.abs(u - ref).max() < 2e-4 * np.abs(ref).max()


def _dense_reference_2d(a_face_x, a_face_y, f, n):
    """Assemble the 5-point FV matrix entry by entry (independent of the vectorised solver)."""
    m = n - 1
    h = 1.0 / n
    A = np.zeros((m * m, m * m))
    idx = lambda i, j: (i - 1) * m + (j - 1)  # noqa: E731
    for i in range(1, n):
        for j in range(1, n):
            k = idx(i, j)
            for (ii, jj, coef) in ((i - 1, j, a_face_x(i - 1, j)), (i + 1, j, a_face_x(i, j)),
                                   (i, j - 1, a_face_y(i, j - 1)), (i, j + 1, a_face_y(i, j))):
                A[k, k] += coef / h**2
                if 1 <= ii < n and 1 <= jj < n:
                    A[k, idx(ii, jj)] -= coef / h**2
    u = np.zeros((n, n))
    u[1:, 1:] = np.linalg.solve(A, f[1:, 1:].reshape(-1)).reshape(m, m)
    return u


def test_2d_solver_matches_dense_hand_assembly():
    coef = DarcyCoefficient(2, 2, n_terms=6, seed=3)
    n, n_sub = 12, 4
    u = solve_darcy(coef, n, ndim=2, n_sub=n_sub)
    h = 1.0 / n
    for b in range(2):
        def harmonic(points_x, points_y):
            vals = coef(points_x, points_y)[b]
            return 1.0 / np.mean(1.0 / vals)

        sub = (np.arange(n_sub) + 0.5) / n_sub * h
        ax = lambda i, j: harmonic(i * h + sub, np.array([j * h]))  # noqa: E731
        ay = lambda i, j: harmonic(np.array([i * h]), j * h + sub)  # noqa: E731
        ref = _dense_reference_2d(ax, ay, np.ones((n, n)), n)
        np.testing.assert_allclose(u[b], ref, rtol=1e-10, atol=1e-13)


def test_2d_manufactured_solution_second_order():
    """a = 1 + x, u = sin(pi x) sin(pi y): f = -pi cos(pi x) sin(pi y) + 2 pi^2 (1 + x) sin(pi x) sin(pi y)."""
    def forcing(X, Y):
        return (-math.pi * np.cos(math.pi * X) * np.sin(math.pi * Y)
                + 2 * math.pi**2 * (1 + X) * np.sin(math.pi * X) * np.sin(math.pi * Y))

    errs = []
    for n in (16, 32, 64):
        x = darcy_grid(n)
        X, Y = np.meshgrid(x, x, indexing="ij")
        u = solve_darcy(lambda x, y: (1 + x)[:, None] + 0 * y[None, :], n, ndim=2, forcing=forcing)[0]
        errs.append(np.abs(u - np.sin(math.pi * X) * np.sin(math.pi * Y)).max())
    assert errs[-1] < 5e-4 and all(3.5 < a / b < 4.5 for a, b in zip(errs, errs[1:]))


def test_batch_solve_equals_single_solves():
    coef = DarcyCoefficient(5, 1, seed=1)
    u = solve_darcy(coef, 40)
    for b in range(5):
        single = solve_darcy(lambda x, b=b: coef(x)[b], 40)[0]
        np.testing.assert_allclose(u[b], single, rtol=1e-12, atol=1e-15)
    coef2 = DarcyCoefficient(5, 2, n_terms=8, seed=1)
    u2 = solve_darcy(coef2, 10, ndim=2, chunk=2)
    np.testing.assert_allclose(u2, solve_darcy(coef2, 10, ndim=2, chunk=64), rtol=1e-12, atol=1e-15)


def test_coefficients_are_functions_of_x():
    coef = DarcyCoefficient(8, 1, seed=0)
    a32, u32 = darcy_dataset(coef, 32, dtype=torch.float64)
    a64, u64 = darcy_dataset(coef, 64, dtype=torch.float64)
    torch.testing.assert_close(a64[..., ::2], a32, rtol=0, atol=0)
    assert set(np.unique(a64.numpy())) <= {3.0, 12.0}
    # solutions of the same functions at two resolutions agree up to discretisation error
    assert float((u64[..., ::2] - u32).abs().max() / u32.abs().max()) < 0.05
    coef2 = DarcyCoefficient(3, 2, n_terms=10, seed=0)
    b16, _ = darcy_dataset(coef2, 16)
    b32, _ = darcy_dataset(coef2, 32)
    assert a32.shape == (8, 1, 32) and b32.shape == (3, 1, 32, 32)
    torch.testing.assert_close(b32[..., ::2, ::2], b16, rtol=0, atol=0)
    same = DarcyCoefficient(8, 1, seed=0)
    np.testing.assert_array_equal(same.coefficients, coef.coefficients)
    assert not np.array_equal(DarcyCoefficient(8, 1, seed=1).coefficients, coef.coefficients)


def test_bad_input():
    with pytest.raises(ValueError, match="n"):
        solve_darcy(lambda x: 1 + x, 1)
    with pytest.raises(TypeError, match="coefficient"):
        solve_darcy(3.0, 16)
    with pytest.raises(ValueError, match="coefficient"):
        solve_darcy(lambda x: -1 + 0 * x, 16)
    with pytest.raises(ValueError, match="coefficient"):
        solve_darcy(lambda x: np.full_like(x, np.nan), 16)
    with pytest.raises(ValueError, match="coefficient"):
        solve_darcy(lambda x: np.ones((2, 3)), 16)
    with pytest.raises(ValueError, match="forcing"):
        solve_darcy(lambda x: 1 + x, 16, forcing=lambda X: np.full_like(X, np.inf))
    with pytest.raises(TypeError, match="forcing"):
        solve_darcy(lambda x: 1 + x, 16, forcing="one")
    with pytest.raises(ValueError, match="ndim"):
        solve_darcy(lambda x: 1 + x, 16, ndim=3)
    with pytest.raises(ValueError, match="alpha"):
        DarcyCoefficient(4, 1, alpha=-1.0)
    with pytest.raises(ValueError, match="n_samples"):
        DarcyCoefficient(0, 1)
    with pytest.raises(TypeError, match="coefficient"):
        darcy_dataset(lambda x: 1 + x, 16)
    with pytest.raises(TypeError, match="dtype"):
        darcy_dataset(DarcyCoefficient(2, 1), 16, dtype=torch.int32)
    with pytest.raises(ValueError, match="coords"):
        DarcyCoefficient(2, 2)(np.linspace(0, 1, 4))


@settings(max_examples=30, deadline=None)
@given(a=st.floats(0.1, 100.0), n=st.integers(2, 200), f=st.floats(-10, 10))
def test_property_constant_coefficient_closed_form(a, n, f):
    x = darcy_grid(n)
    u = solve_darcy(lambda x: np.full_like(x, a), n, forcing=f)[0]
    np.testing.assert_allclose(u, f * x * (1 - x) / (2 * a), rtol=1e-10, atol=1e-14)


@settings(max_examples=15, deadline=None)
@given(a=st.floats(0.1, 100.0), n=st.integers(3, 24))
def test_property_2d_constant_coefficient_symmetric_positive(a, n):
    u = solve_darcy(lambda x, y: np.full((x.size, y.size), a), n, ndim=2)[0]
    np.testing.assert_allclose(u, u.T, rtol=1e-10, atol=1e-16)
    assert np.all(u[1:, 1:] > 0) and np.all(u[0] == 0) and np.all(u[:, 0] == 0)
    # scaling a scales u by 1/a
    u1 = solve_darcy(lambda x, y: np.ones((x.size, y.size)), n, ndim=2)[0]
    np.testing.assert_allclose(u * a, u1, rtol=1e-9, atol=1e-16)
