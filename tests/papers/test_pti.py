"""Smoke tests of the PTI claims (smoke-scale tiny model and judge, trained into a temporary cache)."""

import pytest
import torch

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.pti import _iou, _object_mask

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("GRADLAB_CACHE", str(tmp_path_factory.getbasetemp() / "pti-cache"))


def test_mask_iou_helpers():
    a = torch.zeros(2, 3, 4, 4) - 1
    a[0, 0, :2] = 1.0  # top half red in image 0, image 1 black
    m = _object_mask(a)
    assert m[0].sum() == 8 and m[1].sum() == 0
    b = torch.zeros(2, 4, 4, dtype=torch.bool)
    b[0, :, :2] = True
    assert _iou(m, b) == [pytest.approx(4 / 12), 1.0]


def test_reconstruction_claim_smoke():
    ev = run_claim_inline("pti/reconstruction", scale="smoke")
    check_evidence(ev, required_metrics=("mse_pti", "mse_ddim_cfg", "mse_null", "max_pti_over_cfg",
                                         "max_pti_over_null", "generation_colour_accuracy"))
    assert ev.criterion and len(ev.headline) == 2 and ev.verdict in ("passed", "failed", "inconclusive")
    assert len(ev.metrics["mse_pti"]) == 2 and "the tiny model generates colours" in ev.preconditions


def test_editing_claim_smoke():
    ev = run_claim_inline("pti/editing", scale="smoke")
    check_evidence(ev, required_metrics=("target_colour_hits", "mean_iou_pti", "mean_iou_target_only",
                                         "target_colour_hits_by_eta"))
    assert ev.criterion and len(ev.headline) == 2 and ev.verdict in ("passed", "failed", "inconclusive")
    assert len(ev.metrics["mean_mask_iou_by_eta"]) == 5
