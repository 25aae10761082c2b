"""Smoke tests of the ControlNet++ claims and checks of their evaluation helpers."""

import pytest
import torch

pytest.importorskip("diffusers")

from gradlab.claims.inline import check_evidence, run_claim_inline  # noqa: E402
from gradlab.papers._controlnet_pp_setup import boundary, edge_f1, saved_tensor_bytes  # noqa: E402


def test_boundary_and_edge_f1_by_hand():
    m = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    m[0, 0, 1:5, 1:5] = True
    b = boundary(m)[0, 0]
    assert int(b.sum()) == 12 and not bool(b[2:4, 2:4].any())  # a 4x4 square: its 12 border pixels
    img = torch.where(m, torch.ones(()), -torch.ones(())).repeat(1, 3, 1, 1)
    assert float(edge_f1(img, m)[0]) == 1.0
    shifted = torch.roll(img, shifts=1, dims=-1)  # within the 1-pixel tolerance
    assert float(edge_f1(shifted, m, tolerance=1)[0]) == 1.0
    assert float(edge_f1(shifted, m, tolerance=0)[0]) < 1.0
    assert float(edge_f1(-torch.ones(1, 3, 6, 6), m)[0]) == 0.0  # nothing generated


def test_saved_tensor_bytes_counts_activations_not_parameters():
    lin = torch.nn.Linear(100, 100)
    x = torch.randn(10, 100, requires_grad=True)
    _, one = saved_tensor_bytes(lambda: lin(x).tanh().sum(), exclude=(lin,))
    _, two = saved_tensor_bytes(lambda: lin(lin(x).tanh()).tanh().sum(), exclude=(lin,))
    assert one["bytes_unique"] > 0 and two["bytes_unique"] > one["bytes_unique"]
    _, with_params = saved_tensor_bytes(lambda: lin(x).tanh().sum())
    assert with_params["bytes_unique"] >= one["bytes_unique"] + 100 * 100 * 4


@pytest.fixture()
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLAB_CACHE", str(tmp_path))
    return tmp_path


def test_claims_smoke(tmp_cache):
    ev = run_claim_inline("controlnet-pp/one_step_consistency", scale="smoke")
    check_evidence(ev, required_metrics=("lambda", "relative_change", "cost_time_ratio", "cost_bytes_ratio",
                                         "stage_a_over_uncontrolled"))
    assert ev.criterion and len(ev.headline) == 3 and ev.verdict in ("passed", "failed", "inconclusive")
    assert ev.metrics["cost_bytes_ratio"] > 1.0
    ev2 = run_claim_inline("controlnet-pp/full_sampling", scale="smoke")  # reuses the cached stage A and B
    check_evidence(ev2, required_metrics=("edge_f1_lambda", "edge_f1_lambda0", "edge_f1_difference"))
    assert ev2.verdict in ("passed", "failed", "inconclusive") and ev2.metrics["edge_f1_real_images"] == 1.0
    assert sorted(p.name.split("-")[3] for p in tmp_cache.iterdir() if p.name.startswith("controlnet-pp")) \
        == ["a"] + ["b"] * 4  # one stage A, four stage-B forks (2 seeds x 2 lambdas)
