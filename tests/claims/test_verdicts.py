"""The inconclusive verdict, headline checks, the criterion history and the CI helpers."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.claims import Check, ClaimRun, Evidence, Paper, Revision, bootstrap_ci, paired_bootstrap_ci


def test_check_comparisons_and_margin():
    assert Check("ratio", 0.19, "<=", 0.25).ok
    assert not Check("ratio", 0.3, "<=", 0.25).ok
    assert Check("acc", 0.9, ">", 0.8).ok and not Check("acc", 0.8, ">", 0.8).ok
    assert Check("acc", 0.8, ">=", 0.8).ok
    assert Check("ratio", 0.19, "<=", 0.25).margin == pytest.approx(0.06 / 0.25)
    assert Check("ratio", 0.30, "<=", 0.25).margin == pytest.approx(-0.05 / 0.30)
    assert Check("acc", 0.9, ">=", 0.8).margin == pytest.approx(0.1 / 0.9)
    assert not Check("x", float("nan"), "<", 1.0).ok
    assert math.isnan(Check("x", float("nan"), "<", 1.0).margin)
    assert str(Check("distance ratio", 0.1934, "<=", 0.25)) == "distance ratio 0.1934 <= 0.25"
    assert Check.from_json(Check("a", 1.5, "<", 2).to_json()) == Check("a", 1.5, "<", 2)


@given(st.floats(allow_nan=False, allow_infinity=False, width=32), st.floats(allow_nan=False, allow_infinity=False, width=32),
       st.sampled_from(["<=", "<", ">=", ">"]))
@settings(max_examples=200, deadline=None)
def test_margin_sign_agrees_with_ok(value, bound, op):
    c = Check("x", value, op, bound)
    assert -1.0 <= c.margin <= 1.0
    if c.margin > 0:
        assert c.ok
    if c.margin < 0:
        assert not c.ok


@pytest.mark.parametrize("bad", [dict(op="=<"), dict(label=""), dict(value="1"), dict(bound=None), dict(value=True)])
def test_check_rejects_bad_input(bad):
    kw = dict(label="x", value=1.0, op="<", bound=2.0)
    kw.update(bad)
    with pytest.raises((TypeError, ValueError)):
        Check(**kw)


def test_evidence_verdict_inconclusive_when_a_precondition_fails():
    ev = Evidence(metrics={"a": 1}, criterion="a > 0", passed=True,
                  preconditions={"model learned": Check("test acc", 0.4, ">=", 0.8), "maps differ": True})
    assert ev.verdict == "inconclusive" and ev.failed_preconditions == ["model learned"]
    assert ev.preconditions_json()["model learned"]["check"]["value"] == 0.4
    # A failed precondition also overrides a failed criterion: the experiment could not test the statement.
    ev2 = Evidence(metrics={"a": 1}, criterion="a > 2", passed=False, preconditions={"learned": False})
    assert ev2.verdict == "inconclusive"
    ev3 = Evidence(metrics={"a": 1}, criterion="a > 2", passed=False, preconditions={"learned": np.bool_(True)})
    assert ev3.verdict == "failed"
    assert Evidence(metrics={"a": 1}, criterion="a > 0", passed=True).verdict == "passed"


def test_evidence_rejects_malformed_preconditions_and_headline():
    with pytest.raises(TypeError, match="preconditions"):
        Evidence(metrics={"a": 1}, criterion="c", passed=True, preconditions={"x": 0.5})
    with pytest.raises(TypeError, match="preconditions"):
        Evidence(metrics={"a": 1}, criterion="c", passed=True, preconditions=[("x", True)])
    with pytest.raises(TypeError, match="headline"):
        Evidence(metrics={"a": 1}, criterion="c", passed=True, headline=("a <= 1",))
    ev = Evidence(metrics={"a": 1}, criterion="c", passed=True, headline=Check("a", 1, "<=", 2))
    assert ev.headline == (Check("a", 1, "<=", 2),)


def test_revision_and_paper_history():
    r = Revision(claim="c", date="2026-12-01", old="x <= 1", new="x <= 2 * y", reason="matches the paper's Eq. 3",
                 old_result="failed (x=1.5)")
    p = Paper(key="zz", title="T", cluster="optim", statement="States something.", revisions=(r,))
    assert p.revisions == (r,) and p.statement == "States something."
    with pytest.raises(ValueError, match="date"):
        Revision(claim="c", date="1 Dec", old="a", new="b", reason="r")
    with pytest.raises(ValueError, match="reason"):
        Revision(claim="c", date="2026-12-01", old="a", new="b", reason=" ")
    with pytest.raises(TypeError, match="Revision"):
        Paper(key="zz", title="T", cluster="optim", revisions=("changed",))


def test_run_seeds_are_distinct_and_start_at_the_seed(tmp_path):
    run = ClaimRun(seed=7, scale="quick", scratch=tmp_path)
    seeds = run.seeds(5)
    assert seeds[0] == 7 and len(set(seeds)) == 5
    assert ClaimRun(seed=8, scale="quick", scratch=tmp_path).seeds(5)[0] == 8
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="n"):
            run.seeds(bad)


def test_bootstrap_ci_matches_scipy_and_degenerate_cases():
    from scipy.stats import bootstrap

    x = np.random.default_rng(0).normal(1.0, 0.5, size=12)
    ci = bootstrap_ci(x, seed=3)
    ref = bootstrap((x,), np.mean, confidence_level=0.95, n_resamples=9999, method="BCa", rng=np.random.default_rng(3))
    assert ci.low == pytest.approx(ref.confidence_interval.low) and ci.high == pytest.approx(ref.confidence_interval.high)
    assert ci.mean == pytest.approx(x.mean()) and ci.n == 12 and ci.above(0.0) and not ci.below(1.0)
    one = bootstrap_ci([0.3])
    assert one.low == -math.inf and one.high == math.inf and not one.above(-1e9) and not one.below(1e9)
    same = bootstrap_ci([0.2, 0.2, 0.2])
    assert same.low == same.high == pytest.approx(0.2)
    assert one.to_json()["low"] == "-inf"


def test_paired_ci_is_the_ci_of_differences():
    rng = np.random.default_rng(1)
    base = rng.normal(size=8)
    a, b = base + 0.3 + 0.01 * rng.normal(size=8), base
    ci = paired_bootstrap_ci(a, b)
    assert ci.above(0.2) and ci.below(0.4)  # pairing removes the large shared variation
    with pytest.raises(ValueError, match="pair"):
        paired_bootstrap_ci([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        paired_bootstrap_ci([1, float("nan")], [1, 2])
    with pytest.raises(ValueError, match="one-dimensional"):
        bootstrap_ci([[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1, 2, 3], confidence=1.5)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=20))
@settings(max_examples=40, deadline=None)
def test_ci_contains_the_mean(values):
    ci = bootstrap_ci(values, n_resamples=499)
    assert ci.low <= ci.mean <= ci.high


def test_resolution_check_three_way():
    from gradlab.claims.stats import Interval, resolution_check

    delta = 0.01
    credible_gain = Interval(0.02, 0.001, 0.04, 5)
    ruled_out = Interval(-0.01, -0.03, 0.008, 5)  # below the paper's smallest effect: a real failure
    too_wide = Interval(0.0, -0.2, 0.2, 2)  # holds both 0 and delta: cannot tell
    assert resolution_check(credible_gain, delta).ok and credible_gain.above(0.0)
    assert resolution_check(ruled_out, delta).ok and not ruled_out.above(0.0)
    chk = resolution_check(too_wide, delta)
    assert not chk.ok and chk.value == pytest.approx(-0.19)
    assert "[-0.2, 0.2]" in chk.label and "0.01" in chk.label
    # boundaries: low == threshold does not decide; high == threshold + delta does not rule the effect out
    assert not resolution_check(Interval(0.005, 0.0, delta, 3), delta).ok
    # a threshold other than 0
    assert resolution_check(Interval(1.2, 1.1, 1.3, 4), 0.5, threshold=1.0).ok
    assert not resolution_check(Interval(1.2, 0.9, 1.6, 4), 0.5, threshold=1.0).ok
    # one seed: an unbounded interval never resolves
    assert not resolution_check(bootstrap_ci([0.3]), delta).ok


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_resolution_check_rejects_bad_effects(bad):
    from gradlab.claims.stats import Interval, resolution_check

    with pytest.raises(ValueError, match="smallest_effect"):
        resolution_check(Interval(0.0, -1.0, 1.0, 3), bad)
    with pytest.raises(TypeError, match="interval"):
        resolution_check((0.0, 1.0), 0.1)
    with pytest.raises(ValueError, match="threshold"):
        resolution_check(Interval(0.0, -1.0, 1.0, 3), 0.1, threshold=float("nan"))


@settings(max_examples=200, deadline=None)
@given(st.floats(-1, 1), st.floats(0, 1), st.floats(1e-3, 1))
def test_resolution_is_exactly_pass_or_rule_out(low, width, delta):
    from gradlab.claims.stats import Interval, resolution_check

    iv = Interval(low + width / 2, low, low + width, 3)
    assert resolution_check(iv, delta).ok == (iv.low > 0 or iv.high < delta)
