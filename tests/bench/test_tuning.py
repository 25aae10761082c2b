"""Quasi-random search spaces, the study plan and the per-workload time of the rulesets."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.bench.tuning import Param, halton_points, study_plan, workload_time

SPACE = {"lr": Param(1e-4, 1e-1), "wd": Param(0.0, 0.5, "linear"), "ls": Param(feasible_points=(0.0, 0.1, 0.2))}


def test_halton_reproducible_and_seed_dependent():
    a, b = halton_points(SPACE, 8, seed=3), halton_points(SPACE, 8, seed=3)
    c = halton_points(SPACE, 8, seed=4)
    assert a == b
    assert a != c
    assert len({p["lr"] for p in a}) == 8


def test_halton_matches_scipy_and_scalings():
    from scipy.stats import qmc

    u = qmc.Halton(d=3, scramble=True, seed=5).random(4)  # names sorted: lr, ls, wd
    pts = halton_points(SPACE, 4, seed=5)
    for i, p in enumerate(pts):
        assert p["lr"] == pytest.approx(math.exp(math.log(1e-4) + u[i, 0] * (math.log(1e-1) - math.log(1e-4))))
        assert p["ls"] == (0.0, 0.1, 0.2)[int(u[i, 1] * 3)]
        assert p["wd"] == pytest.approx(0.5 * u[i, 2])


def test_studies_get_distinct_points():
    plan = study_plan(SPACE, 5, 3, seed=0)
    assert [len(s) for s in plan] == [5, 5, 5]
    lrs = [p["lr"] for s in plan for p in s]
    assert len(set(lrs)) == 15
    assert plan == study_plan(SPACE, 5, 3, seed=0)


def test_workload_time_median_of_study_minima():
    inf = math.inf
    assert workload_time([[3.0, 1.0, inf], [2.0, inf, 5.0], [inf, inf, inf]]) == 2.0  # minima 1, 2, inf
    assert workload_time([[3.0, 1.0], [2.0, 4.0]]) == 1.5
    assert workload_time([[inf], [1.0]]) == inf
    assert workload_time([[7.0]]) == 7.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(low=1.0, high=0.5), "low"), (dict(low=0.0, high=1.0), "log"), (dict(low=1.0, high=2.0, scaling="x"), "scaling"),
    (dict(feasible_points=()), "feasible"), (dict(low=float("nan"), high=1.0), "low")])
def test_bad_params(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Param(**kwargs)


def test_bad_plan_inputs():
    with pytest.raises(ValueError, match="n_trials"):
        study_plan(SPACE, 0, 1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        halton_points(SPACE, 2, seed=-1)
    with pytest.raises(TypeError, match="Param"):
        halton_points({"lr": (1, 2)}, 2, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        workload_time([[float("nan")]])


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-6, 1.0), st.floats(1.0, 100.0), st.integers(1, 30), st.integers(0, 2**31 - 1))
def test_points_lie_in_their_ranges(low, ratio, n, seed):
    space = {"a": Param(low, low * ratio), "b": Param(-1.0, 1.0, "linear")}
    for p in halton_points(space, n, seed):
        assert low * (1 - 1e-9) <= p["a"] <= low * ratio * (1 + 1e-9)
        assert -1.0 <= p["b"] <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.one_of(st.floats(0.1, 10.0), st.just(math.inf)), min_size=2, max_size=2),
                min_size=1, max_size=5))
def test_workload_time_is_between_study_minima(times):
    mins = np.min(np.asarray(times), axis=1)
    t = workload_time(times)
    assert mins.min() <= t <= mins.max() or (math.isinf(t) and math.isinf(np.sort(mins)[len(mins) // 2]))
