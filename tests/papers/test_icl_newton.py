import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline

CLAIM = "icl-newton/layers_match_newton"


def test_smoke_evidence_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    check_evidence(ev)
    assert isinstance(ev.passed, bool) and ev.criterion


@pytest.mark.slow
def test_quick_scale_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert isinstance(ev.passed, bool)
