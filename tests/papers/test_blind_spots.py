import math

import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline

KEYS = {'distance_ratio_l2_median', 'straight_min_conf_median', 'lownoise_distance_ratio_l2_median', 'segment_min_conf_median'}
CLAIM = "blind-spots/lst_reaches_target_keeping_confidence"


def test_smoke_evidence_is_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    assert isinstance(ev.passed, bool) and ev.criterion
    check_evidence(ev, required_metrics=KEYS)


@pytest.mark.slow
def test_quick_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert all(math.isfinite(v) for v in ev.metrics.values() if isinstance(v, float))
