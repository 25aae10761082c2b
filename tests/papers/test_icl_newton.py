import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.icl_newton import MSE_MAX

CLAIM = "icl-newton/layers_match_newton"


def test_smoke_evidence_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    check_evidence(ev)
    assert isinstance(ev.passed, bool) and ev.criterion
    m = ev.metrics
    # the precondition is the last-position MSE/d of each transformer against 0.2
    checks = {c.label: c for c in ev.preconditions.values()}
    assert checks["isotropic last-position MSE/d"].value == m["iso_last_position_mse_per_dim"]
    assert checks["ill-conditioned last-position MSE/d"].value == m["ill_last_position_mse_per_dim"]
    assert all(c.bound == MSE_MAX and c.op == "<=" for c in checks.values())
    # 20 smoke steps cannot learn in context: the verdict must say inconclusive, not failed
    assert m["iso_last_position_mse_per_dim"] > MSE_MAX and ev.verdict == "inconclusive"
    assert len(ev.headline) == 3


@pytest.mark.slow
def test_quick_scale_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert isinstance(ev.passed, bool)
