"""Smoke test of the NoProp claim and checks of its helpers."""

import torch

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.noprop import backprop_mlp, cross_block_gradients
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
                                         "peak_saved_bytes_ratio", "test_accuracy_noprop_ct_mean",
                                         "test_accuracy_noprop_fm_mean", "test_accuracy_chained_backprop_seed0"))
    assert ev.metrics["cross_block_gradients"] == 0
    assert "backprop baseline learned" in ev.preconditions
    assert 0 < ev.metrics["peak_saved_bytes_ratio"] < 0.5


def test_backprop_baseline_has_one_blocks_layers_without_the_label_path():
    torch.manual_seed(0)
    block = NoPropDT(64, 10, T=2, hidden=128).blocks[0]
    mlp = backprop_mlp(64, 10)
    x_and_head = sum(p.numel() for p in block.x_path.parameters()) + sum(p.numel() for p in block.head.parameters())
    # the head's first layer sees 2h inputs in the block (x-path and z-path), h in the MLP
    assert sum(p.numel() for p in mlp.parameters()) == x_and_head - 128 * 128
    assert mlp(torch.randn(3, 64)).shape == (3, 10)
