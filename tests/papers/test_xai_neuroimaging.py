import math

import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.xai_neuroimaging import PAPER

KEYS = {'test_acc', 'smoothgrad_pixel_auroc', 'saliency_pixel_auroc', 'gradcam_pixel_auroc',
        'silhouette_pixel_auroc', 'silhouette_pixel_auroc_frame', 'gradcam_pixel_auroc_ci', 'test_acc_min'}
CLAIM = "xai-neuroimaging/smoothgrad_localises_gradcam_does_not"


def test_smoke_evidence_is_well_formed():
    ev = run_claim_inline(CLAIM, scale="smoke")
    assert isinstance(ev.passed, bool) and ev.criterion
    check_evidence(ev, required_metrics=KEYS)
    # the silhouette carries no information within the head (exactly chance) but beats chance on the frame
    assert ev.metrics["silhouette_pixel_auroc"] == pytest.approx(0.5)
    assert ev.metrics["silhouette_pixel_auroc_frame"] > 0.6
    assert ev.passed == all(h.ok for h in ev.headline) and len(ev.headline) == 3
    assert ev.headline[0].value == ev.metrics["smoothgrad_pixel_auroc_ci"]["low"]
    assert list(ev.preconditions) == ["every model learned"]


def test_paper_records_the_criterion_change():
    assert PAPER.statement and PAPER.revisions[0].claim == "smoothgrad_localises_gradcam_does_not"
    assert "0.6763" in PAPER.revisions[0].old_result


@pytest.mark.slow
def test_quick_runs():
    ev = run_claim_inline(CLAIM, scale="quick")
    assert all(math.isfinite(v) for v in ev.metrics.values() if isinstance(v, float))
