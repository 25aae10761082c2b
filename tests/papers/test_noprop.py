"""Smoke test of the NoProp claim and checks of its helpers."""

import torch

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.noprop import cross_block_gradients
from gradlab.training import NoPropDT


def test_cross_block_gradient_counter():
    torch.manual_seed(0)
    m = NoPropDT(6, 4, T=3, hidden=8)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    assert cross_block_gradients(m, x, y, seed=0) == 0
    m.blocks[1].z_path = m.blocks[0].z_path  # shared weights: block 2's loss now reaches block 1
    assert cross_block_gradients(m, x, y, seed=0) > 0


def test_claim_smoke():
    ev = run_claim_inline("noprop/digits_dt", scale="smoke")
    check_evidence(ev, required_metrics=("test_accuracy_noprop_mean", "test_accuracy_backprop_mean",
                                         "accuracy_gap_backprop_minus_noprop", "cross_block_gradients",
                                         "peak_saved_bytes_ratio"))
    assert ev.metrics["cross_block_gradients"] == 0
    assert 0 < ev.metrics["peak_saved_bytes_ratio"] < 0.5
