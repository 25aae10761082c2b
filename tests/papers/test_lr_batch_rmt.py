import math

import pytest

from gradlab.claims.inline import run_claim_inline


def _finite(values):
    return all(math.isfinite(v) for v in values)


def test_lambda_max_vs_batch_size_smoke():
    ev = run_claim_inline("lr-batch-rmt/lambda_max_vs_batch_size", scale="smoke")
    m = ev.metrics
    assert len(m["lambda_B"]) == len(m["batch_sizes"]) == len(m["excess_times_B"])
    assert _finite(m["lambda_B"]) and math.isfinite(m["lambda_full"]) and math.isfinite(m["cv_excess_times_B_small"])
    assert m["lambda_full"] > 0
    assert "lambda_vs_batch" in ev.figures and isinstance(ev.passed, bool)


def test_max_stable_lr_scaling_smoke():
    ev = run_claim_inline("lr-batch-rmt/max_stable_lr_scaling", scale="smoke")
    m = ev.metrics
    assert len(m["lr_max_sgd"]) == len(m["lr_max_adam"]) == len(m["batch_sizes"])
    assert _finite(m["lr_max_sgd"] + m["lr_max_adam"]) and all(v > 0 for v in m["lr_max_sgd"] + m["lr_max_adam"])
    assert math.isfinite(m["slope_sgd"]) and math.isfinite(m["slope_adam"])
    assert m["slope_difference"] == m["slope_sgd"] - m["slope_adam"]
    expected = 0.75 <= m["slope_sgd"] <= 1.25 and 0.25 <= m["slope_adam"] <= 0.75 and m["slope_difference"] >= 0.3
    assert ev.passed == expected
    assert ev.headline[0].label == "slope_sgd - slope_adam" and ev.headline[0].bound == 0.3
    assert "max_stable_lr" in ev.figures and isinstance(ev.passed, bool)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lambda_max_vs_batch_size", "max_stable_lr_scaling"])
def test_quick_scale(name):
    ev = run_claim_inline(f"lr-batch-rmt/{name}", scale="quick")
    assert isinstance(ev.passed, bool)
