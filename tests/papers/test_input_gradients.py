import math

import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline

KEYS = {'mass_gap', 'diffroar_oracle_area', 'diffroar_small_k_gap', 'robust_mass_on_signal', 'standard_mass_on_signal'}
CLAIM = "input-gradients/robust_gradients_highlight_signal"


def test_smoke_evidence_is_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    assert isinstance(ev.passed, bool) and ev.criterion
    check_evidence(ev, required_metrics=KEYS)


@pytest.mark.slow
def test_quick_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert all(math.isfinite(v) for v in ev.metrics.values() if isinstance(v, float))
