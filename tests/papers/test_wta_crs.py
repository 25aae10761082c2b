"""Smoke tests of the WTA-CRS claims and checks of their helpers."""

import torch

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers.wta_crs import CONVERTED, TokenMLP, heavy_tailed_pair, layer_saved_bytes, token_tasks
from gradlab.training import WTACRSLinear, convert_linear


def test_heavy_tailed_pair_is_seeded_and_shaped():
    g, x = heavy_tailed_pair(0)
    assert g.shape == (512, 32) and x.shape == (512, 64)
    assert torch.equal(heavy_tailed_pair(0)[1], x) and not torch.equal(heavy_tailed_pair(1)[1], x)


def test_tasks_share_inputs_and_differ_in_labels():
    t = token_tasks(0, 64, 16)
    assert torch.equal(t["A"][0], t["B"][0]) and not torch.equal(t["A"][1], t["B"][1])
    assert t["A"][0].shape == (64, 16, 32) and t["A"][3].shape == (16, 16)


def test_layer_saved_bytes_of_converted_model():
    torch.manual_seed(0)
    model = TokenMLP()
    x = torch.randn(64, 16, 32)
    exact = layer_saved_bytes(model, x, CONVERTED)
    assert exact == 64 * 16 * (32 + 128) * 4  # the inputs of fc1 and fc2
    wta = convert_linear(model, 0.3, include=CONVERTED)
    assert isinstance(wta.fc1, WTACRSLinear) and type(wta.head) is torch.nn.Linear
    k = 308  # ceil(0.3 * 1024)
    assert layer_saved_bytes(wta, x, CONVERTED) == k * (32 + 128) * 4 + 2 * k * 8


def test_claims_smoke():
    ev = run_claim_inline("wta-crs/estimator_variance", scale="smoke")
    check_evidence(ev, required_metrics=("relative_mse_wta-crs_mean", "relative_mse_crs_mean",
                                         "relative_mse_uniform_mean", "relative_bias_wta_crs"))
    ev = run_claim_inline("wta-crs/finetune_memory", scale="smoke")
    check_evidence(ev, required_metrics=("layer_saved_bytes_ratio", "loss_ratio_wta_over_exact",
                                         "scratch_loss_ratio_mean"))
    assert 0.25 < ev.metrics["layer_saved_bytes_ratio"] < 0.35
