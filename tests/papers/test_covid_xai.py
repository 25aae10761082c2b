"""Smoke run of the covid-xai claim and checks of its synthetic chest-like data."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.claims.inline import run_claim_inline
from gradlab.explain import DeepLift, GuidedBackprop
from gradlab.papers.covid_xai import PAPER, ResCNN, make_chest_images


def test_chest_images_labels_match_masks():
    x, y, m = make_chest_images(60, seed=0)
    assert x.shape == (60, 1, 32, 32) and y.shape == (60, 3) and m.shape == (60, 3, 32, 32)
    assert torch.equal(m.flatten(2).any(2).float(), y)  # a finding is present exactly when its mask is non-empty
    assert 0.1 < float(y.mean()) < 0.6 and torch.isfinite(x).all()


def test_residual_model_is_hook_safe():
    torch.manual_seed(0)
    model = ResCNN().eval()
    x = torch.randn(2, 1, 32, 32)
    assert torch.isfinite(DeepLift(model).attribute(x, target=1)).all()
    assert torch.isfinite(GuidedBackprop(model).attribute(x, target=0)).all()

    class ResNoPool(ResCNN):  # the residual path alone: summation-to-delta is exact (max-pool's rule is approximate)
        def forward(self, x):
            h = self.r0(self.c0(x))
            h = self.b1out(h + self.b1b(self.b1r(self.b1a(h))))
            return self.fc(nn.functional.avg_pool2d(h, 4).repeat(1, 2, 1, 1).reshape(x.shape[0], -1))

    torch.manual_seed(0)
    _, delta = DeepLift(ResNoPool().eval()).attribute(x, target=1, return_convergence_delta=True)
    assert float(delta.abs().max()) < 1e-5


def test_smoke():
    ev = run_claim_inline("covid-xai/ensemble_and_localisation", scale="smoke")
    nums = [v for v in ev.metrics.values() if isinstance(v, float)]
    assert nums and all(math.isfinite(v) for v in nums)
    assert "ranking" in ev.metrics and "model_ranking" in ev.metrics
    assert set(ev.figures) == {"f1_and_ranking", "example_masks"}
    m = ev.metrics
    # the ensemble is compared with its best member, seed by seed
    per_seed = m["vote_minus_best_member_micro_f1_per_seed"]
    assert per_seed == pytest.approx([v - b for v, b in zip(m["majority_vote_micro_f1_per_seed"],
                                                            m["best_member_micro_f1_per_seed"])])
    assert m["best_member_micro_f1"] >= m["mean_member_micro_f1"]
    assert m["vote_minus_best_member_micro_f1_ci"]["mean"] == pytest.approx(float(np.mean(per_seed)))
    assert ev.headline[0].value == m["vote_minus_best_member_micro_f1_ci"]["low"]
    assert ev.passed == all(h.ok for h in ev.headline)
    assert list(ev.preconditions) == ["every member learned"]


def test_paper_records_the_criterion_change():
    assert "ResNets" in PAPER.statement
    assert PAPER.revisions[0].claim == "ensemble_and_localisation" and "0.7875" in PAPER.revisions[0].old_result
