"""Smoke runs of the which-explanation claims (code path only; verdicts count at quick/full scale)."""

import math

import pytest

from gradlab.claims.inline import run_claim_inline


@pytest.mark.parametrize("name", ["linear_model_recovery", "no_free_lunch"])
def test_smoke(name):
    ev = run_claim_inline(f"which-explanation/{name}", scale="smoke")
    nums = [v for v in ev.metrics.values() if isinstance(v, float)]
    assert nums and all(math.isfinite(v) for v in nums)
    assert ev.figures and ev.criterion
