import math

import pytest

from gradlab.claims.inline import run_claim_inline


def test_softmax_iterations_smoke():
    ev = run_claim_inline("gn-smoothness/softmax_iterations", scale="smoke")
    m = ev.metrics
    for key in ("iters_exact", "iters_weighted_gn", "iters_gradient"):
        assert isinstance(m[key], int) and m[key] >= 1
    assert "convergence" in ev.figures and isinstance(ev.passed, bool)


def test_logistic_approximation_quality_smoke():
    ev = run_claim_inline("gn-smoothness/logistic_approximation_quality", scale="smoke")
    m = ev.metrics
    assert set(m["final_gap"]) == set(m["relative_hessian_error"]) == {"exact", "fisher", "fixed_bound", "gradient"}
    assert all(math.isfinite(v) and v >= 0 for v in m["final_gap"].values())
    assert m["relative_hessian_error"]["exact"] == 0.0 and m["relative_hessian_error"]["gradient"] == 1.0
    assert "convergence" in ev.figures and isinstance(ev.passed, bool)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["softmax_iterations", "logistic_approximation_quality"])
def test_quick_scale(name):
    ev = run_claim_inline(f"gn-smoothness/{name}", scale="quick")
    assert isinstance(ev.passed, bool)
