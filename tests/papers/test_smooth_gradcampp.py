"""Smoke run of the smooth-gradcampp claim and checks of its synthetic data and helpers."""

import math

import numpy as np
import pytest
import torch

from gradlab.claims.inline import run_claim_inline
from gradlab.papers.smooth_gradcampp import PAPER, localisation, make_multi_instance_images, map_correlation


def test_data_masks_cover_targets():
    x, y, masks = make_multi_instance_images(40, seed=0)
    assert x.shape == (40, 1, 32, 32) and set(y.tolist()) <= {0, 1}
    for label, m in zip(y.tolist(), masks):
        assert (len(m) > 0) == bool(label)
        if len(m) > 1:
            assert not (m[0] & m[1]).any()  # instances do not overlap


def test_localisation_metric_by_hand():
    cam = torch.zeros(1, 1, 4, 4)
    cam[0, 0, 0, 0] = 1.0
    cam[0, 0, 3, 3] = 0.4
    m = np.zeros((2, 4, 4), dtype=bool)
    m[0, 0, 0] = True
    m[1, 3, 3] = True
    res = localisation(cam, [m])
    assert res["coverage"] == 0.5 and res["all_found"] == 0.0 and res["energy_in_gt"] == 1.0


def test_map_correlation_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 1, 5, 5, generator=g), torch.rand(4, 1, 5, 5, generator=g)
    r = map_correlation(a, b)
    for i in range(4):
        assert r[i] == pytest.approx(np.corrcoef(a[i].flatten().numpy(), b[i].flatten().numpy())[0, 1], abs=1e-6)
    assert map_correlation(a, 3 * a + 1) == pytest.approx(np.ones(4))
    assert np.isnan(map_correlation(torch.zeros(1, 1, 3, 3), a[:1, :, :3, :3])[0])


def test_smoke():
    ev = run_claim_inline("smooth-gradcampp/multi_instance_localisation", scale="smoke")
    nums = [v for v in ev.metrics.values() if isinstance(v, float)]
    assert nums and all(math.isfinite(v) for v in nums)
    assert set(ev.figures) == {"examples", "scores"}
    assert set(ev.preconditions) == {"model learned", "maps differ from Grad-CAM", "maps differ from Grad-CAM++"}
    ci = ev.metrics["energy_in_gt_diff_vs_gradcam_ci"]
    assert ev.headline[0].value == ci["low"] and ci["n"] == 2
    diffs = ev.metrics["energy_in_gt_diff_vs_gradcam_per_seed"]
    assert ci["mean"] == pytest.approx(float(np.mean(diffs)))
    assert "act3_correlation_smooth_gradcampp_gradcam" in ev.metrics


def test_paper_records_the_criterion_change():
    assert PAPER.statement and PAPER.revisions[0].claim == "multi_instance_localisation"
