"""Smoke run of the smooth-gradcampp claim and checks of its synthetic data."""

import math

import numpy as np

from gradlab.claims.inline import run_claim_inline
from gradlab.papers.smooth_gradcampp import localisation, make_multi_instance_images


def test_data_masks_cover_targets():
    x, y, masks = make_multi_instance_images(40, seed=0)
    assert x.shape == (40, 1, 32, 32) and set(y.tolist()) <= {0, 1}
    for label, m in zip(y.tolist(), masks):
        assert (len(m) > 0) == bool(label)
        if len(m) > 1:
            assert not (m[0] & m[1]).any()  # instances do not overlap


def test_localisation_metric_by_hand():
    import torch

    cam = torch.zeros(1, 1, 4, 4)
    cam[0, 0, 0, 0] = 1.0
    cam[0, 0, 3, 3] = 0.4
    m = np.zeros((2, 4, 4), dtype=bool)
    m[0, 0, 0] = True
    m[1, 3, 3] = True
    res = localisation(cam, [m])
    assert res["coverage"] == 0.5 and res["all_found"] == 0.0 and res["energy_in_gt"] == 1.0


def test_smoke():
    ev = run_claim_inline("smooth-gradcampp/multi_instance_localisation", scale="smoke")
    nums = [v for v in ev.metrics.values() if isinstance(v, float)]
    assert nums and all(math.isfinite(v) for v in nums)
    assert set(ev.figures) == {"examples", "scores"}
