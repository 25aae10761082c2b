import math

import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline

KEYS = {'test_acc', 'smoothgrad_pixel_auroc', 'saliency_pixel_auroc', 'gradcam_pixel_auroc'}
CLAIM = "xai-neuroimaging/smoothgrad_localises_gradcam_does_not"


def test_smoke_evidence_is_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    assert isinstance(ev.passed, bool) and ev.criterion
    check_evidence(ev, required_metrics=KEYS)


@pytest.mark.slow
def test_quick_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert all(math.isfinite(v) for v in ev.metrics.values() if isinstance(v, float))
