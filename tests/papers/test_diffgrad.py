"""Smoke test of the diffGrad claim and checks of its synthetic functions."""

import math

import pytest

from gradlab.claims.inline import run_claim_inline
from gradlab.papers.diffgrad import FUNCTIONS, f1, f1_grad, f2, f2_grad


@pytest.mark.parametrize(("f", "g"), [(f1, f1_grad), (f2, f2_grad)])
def test_gradients_match_finite_differences(f, g):
    for x in (-1.2, -0.95, -0.5, -0.31, 0.1, 0.3):
        h = 1e-6
        assert g(x) == pytest.approx((f(x + h) - f(x - h)) / (2 * h), rel=1e-6, abs=1e-6)


def test_minima_as_documented():
    assert f1(-0.3) == 0.0 and f1(0.2) == pytest.approx(0.05)
    assert f2(-0.9) == pytest.approx(-0.706, abs=1e-3) and f2(0.0) == pytest.approx(-7 / 64)
    for name, (f, g, x_glob, x_loc, (lo, hi)) in FUNCTIONS.items():
        assert f(x_glob) < f(x_loc) and lo < x_glob < hi and not lo < x_loc < hi
        if math.isfinite(hi) and name == "F2":
            assert abs(g(hi)) < 1e-3  # the basin boundary is the local maximum


def test_claim_smoke():
    ev = run_claim_inline("diffgrad/synthetic_1d", scale="smoke")
    for key in ("F1_adam_final_x", "F1_diffgrad_final_x", "F2_adam_final_x", "F2_diffgrad_final_x"):
        assert math.isfinite(ev.metrics[key])
    assert "trajectories" in ev.figures and ev.criterion
