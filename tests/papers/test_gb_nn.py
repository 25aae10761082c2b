"""Smoke test of the GBNN claim and checks of its helpers."""

import torch

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.gb_nn import mlp_accuracies


def test_mlp_pruning_keeps_first_units_and_all_units_is_the_full_model():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 4, generator=g)
    y = (x[:, 0] > 0).long()
    accs = mlp_accuracies(x, y, x, y, units=20, epochs=100, seed=0, fractions=(1.0, 0.0))
    assert accs[0] > 0.9
    # no units: a constant prediction, accuracy = share of one class
    assert accs[1] in (float((y == 0).float().mean()), float((y == 1).float().mean()))


def test_claim_smoke():
    ev = run_claim_inline("gb-nn/digits_prune_units", scale="smoke")
    check_evidence(ev, required_metrics=("full_gbnn_minus_mlp", "gbnn_25pct_minus_full", "gbnn_minus_mlp_at_25pct",
                                         "gbnn_acc_mean", "mlp_acc_mean"))
    assert ev.criterion and ev.headline and ev.verdict in ("passed", "failed", "inconclusive")
    assert len(ev.metrics["gbnn_acc_mean"]) == 5
