"""Smoke test of the JLCM claim and checks of its task."""

import torch

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.jlcm import make_mlp, make_task


def test_task_shapes_and_standardisation():
    xtr, ytr, xte, yte = make_task(0, 300, 100)
    assert xtr.shape == (300, 64) and xte.shape == (100, 64) and int(ytr.max()) == 15
    torch.testing.assert_close(xtr.mean(0), torch.zeros(64), atol=1e-5, rtol=0)
    assert make_mlp(0)(xtr).shape == (300, 16)


def test_claim_smoke():
    ev = run_claim_inline("jlcm/equal_bits", scale="smoke")
    check_evidence(ev, required_metrics=("uniform_out_err_mean", "kmeans_out_err_mean", "groups_out_err_mean",
                                         "jlcm_out_err_mean", "jlcm_kl_mean", "jlcm_accuracy_mean",
                                         "ci_jlcm_minus_0.95_init_out_err", "storage_matches_formula"))
    assert ev.metrics["storage_matches_formula"] is True
    assert ev.verdict in ("passed", "failed", "inconclusive") and len(ev.headline) == 5
