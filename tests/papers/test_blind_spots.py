import math

import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.blind_spots import PAPER, VARIANTS

KEYS = {'distance_ratio_l2_median', 'straight_min_conf_median', 'lownoise_distance_ratio_l2_median',
        'segment_min_conf_median', 'distance_ratio_l2_median_ci', 'test_acc_min',
        'newton_distance_ratio_l2_median', 'readme_drift_distance_ratio_l2_median',
        'official_defaults_distance_ratio_l2_median'}
CLAIM = "blind-spots/lst_reaches_target_keeping_confidence"


def test_smoke_evidence_is_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    assert isinstance(ev.passed, bool) and ev.criterion
    check_evidence(ev, required_metrics=KEYS)
    assert ev.verdict in ("passed", "failed", "inconclusive")
    # the verdict is the headline checks (CI bounds over seeds), the CI bounds are the stored ones
    assert len(ev.headline) == 3 and ev.passed == all(h.ok for h in ev.headline)
    ci = ev.metrics["distance_ratio_l2_median_ci"]
    assert ev.headline[0].value == ci["high"] and ci["n"] == 2
    assert len(ev.metrics["distance_ratio_l2_median_per_seed"]) == 2
    assert set(ev.preconditions) == {"every model learned", "enough correctly classified pairs"}
    assert set(VARIANTS) == {"newton", "official_defaults", "readme_drift"}


def test_paper_records_the_criterion_change():
    assert PAPER.statement
    (rev,) = PAPER.revisions
    assert rev.claim == "lst_reaches_target_keeping_confidence" and "0.2942" in rev.old_result


@pytest.mark.slow
def test_quick_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert all(math.isfinite(v) for v in ev.metrics.values() if isinstance(v, float))
