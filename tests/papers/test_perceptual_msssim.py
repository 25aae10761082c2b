"""Smoke test of the MS-SSIM autoencoder claim and checks of its data and evaluation."""

import numpy as np
import torch

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.perceptual_msssim import PatchAutoencoder, evaluate, natural_patches


def test_patches_are_bundled_and_in_range():
    tr, te = natural_patches(40, 10)
    assert tr.shape == (40, 1, 32, 32) and te.shape == (10, 1, 32, 32)
    assert float(tr.min()) >= 0 and float(tr.max()) <= 1 and tr.dtype == torch.float32
    tr2, te2 = natural_patches(40, 10)
    assert torch.equal(tr, tr2) and torch.equal(te, te2)  # fixed data seed


def test_evaluate_perfect_reconstruction():
    _, te = natural_patches(1, 6)

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    res, _ = evaluate(Identity(), te)
    np.testing.assert_allclose(res["ssim"], 1.0)
    np.testing.assert_allclose(res["ms_ssim3"], 1.0, atol=1e-12)
    assert np.all(res["mse"] == 0) and np.all(res["psnr"] >= 100)
    assert PatchAutoencoder()(te).shape == te.shape


def test_claim_smoke():
    ev = run_claim_inline("perceptual-msssim/ae_ssim", scale="smoke")
    check_evidence(ev, required_metrics=("ssim_gain_over_best_pixel", "ssim_gain_ci", "best_pixel_loss",
                                         "l1_test_ssim", "l2_test_ssim", "ms_ssim_test_ssim", "l2_test_psnr",
                                         "ms_ssim_test_edge_psnr"))
    assert ev.metrics["best_pixel_loss"] in ("l1", "l2")
    assert ev.verdict in ("passed", "failed", "inconclusive") and ev.criterion
