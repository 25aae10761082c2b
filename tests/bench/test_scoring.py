"""Performance profiles and benchmark scores against hand-computed values (research notes §6.6)."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import trapezoid

from gradlab.bench.scoring import benchmark_scores, performance_profile, performance_ratios, tau_grid

INF = math.inf


def test_reference_two_by_two():
    np.testing.assert_allclose(benchmark_scores([[1, 2], [2, 1]]), [0.83586, 0.83586], atol=5e-6)


def test_reference_three_by_three_with_over_four_times_and_inf():
    times = [[1, 1, INF], [1.5, 3, 2], [5, 1.2, 1]]
    r = performance_ratios(times)
    np.testing.assert_array_equal(r, [[1, 1, INF], [1.5, 3, 2], [INF, 1.2, 1]])
    np.testing.assert_allclose(benchmark_scores(times), [0.66667, 0.61448, 0.64478], atol=5e-6)


def test_profile_by_hand():
    # ratios [[1, 2], [2, 1]]: rho = 1/2 on [1, 2), 1 from 2 on
    rho = performance_profile([[1, 2], [2, 1]], [1.0, 1.5, 2.0, 3.9])
    np.testing.assert_array_equal(rho, [[0.5, 0.5, 1.0, 1.0]] * 2)


def test_exact_integral_limit():
    # with many points the trapezoid score tends to the exact integral (1/2 * 1 + 1 * 2) / 3 = 5/6
    np.testing.assert_allclose(benchmark_scores([[1, 2], [2, 1]], n_points=200001), [5 / 6, 5 / 6], atol=1e-5)


def test_divides_by_workloads_scored_not_eight():
    assert benchmark_scores([[1.0]])[0] == pytest.approx(1.0)
    assert benchmark_scores([[1.0, 1.0, 1.0]])[0] == pytest.approx(1.0)


def test_all_inf_workload_scores_zero_not_nan():
    s = benchmark_scores([[INF, 1.0], [INF, 2.0]])
    assert np.isfinite(s).all()
    taus = tau_grid()
    expected_second = trapezoid(np.where(taus >= 2.0, 0.5, 0.0), taus) / 3
    np.testing.assert_allclose(s, [0.5, expected_second])
    np.testing.assert_array_equal(benchmark_scores([[INF], [INF]]), [0.0, 0.0])


def test_just_over_four_times_gets_no_credit():
    r = performance_ratios([[1.0], [4.0], [4.0001]])
    np.testing.assert_array_equal(r[:, 0], [1.0, 4.0, INF])


@pytest.mark.parametrize("bad, exc", [([1, 2], ValueError), ([[1, float("nan")]], ValueError),
                                      ([[1, -1]], ValueError), ([[0.0, 1.0]], ValueError), ([[]], ValueError),
                                      ([["a"]], TypeError)])
def test_bad_times(bad, exc):
    with pytest.raises(exc, match="times"):
        benchmark_scores(bad)


def test_bad_tau_and_points():
    with pytest.raises(ValueError, match="tau_max"):
        benchmark_scores([[1.0]], tau_max=1.0)
    with pytest.raises(ValueError, match="n_points"):
        benchmark_scores([[1.0]], n_points=1)
    with pytest.raises(ValueError, match="taus"):
        performance_profile([[1.0]], [])


times_st = st.integers(1, 4).flatmap(lambda s: st.integers(1, 5).flatmap(lambda w: st.lists(
    st.lists(st.one_of(st.floats(0.01, 100.0), st.just(INF)), min_size=w, max_size=w), min_size=s, max_size=s)))


@settings(max_examples=60, deadline=None)
@given(times_st)
def test_profile_monotone_bounded_and_score_in_unit_interval(times):
    taus = tau_grid()
    rho = performance_profile(times, taus)
    assert ((rho >= 0) & (rho <= 1)).all()
    assert (np.diff(rho, axis=1) >= 0).all()
    s = benchmark_scores(times)
    assert ((s >= 0) & (s <= 1 + 1e-12)).all()
    # the minimum of each reached workload has ratio 1, so some submission gets credit at tau = 1 per workload
    arr = np.asarray(times)
    reached = np.isfinite(arr).any(axis=0)
    assert rho[:, 0].sum() * arr.shape[1] >= reached.sum() - 1e-9


@settings(max_examples=60, deadline=None)
@given(times_st, st.floats(0.01, 1.0))
def test_best_everywhere_has_profile_one_and_score_one(times, factor):
    arr = np.asarray(times)
    best = np.where(np.isfinite(arr), arr, 1.0).min(axis=0) * factor  # strictly fastest on every workload
    full = np.vstack([best[None], arr])
    rho = performance_profile(full, tau_grid())
    assert (rho[0] == 1.0).all()
    assert benchmark_scores(full)[0] == pytest.approx(1.0)
