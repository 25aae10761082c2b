"""Uniform and k-means baselines: hand-checked quantiser, scikit-learn reference, real storage, bad input."""

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans
from torch import nn

from gradlab.compression import kmeans_quantize, storage_bytes_formula, uniform_quantize

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _linear(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def test_uniform_two_bits_by_hand():
    # row 0: min -1, max 2 -> scale 1, levels -1, 0, 1, 2; 0.4 -> 0, 1.6 -> 2
    # row 1: min 0, max 0.3 -> scale 0.1 (fp16: 0.0999755859375), levels 0, .1, .2, .3
    w = torch.tensor([[-1.0, 0.4, 1.6, 2.0], [0.0, 0.3, 0.14, 0.26]])
    cm = uniform_quantize(nn.Sequential(_linear(w)), 2)
    s1 = float(torch.tensor(0.3 / 3).half())
    expect = torch.tensor([[-1.0, 0.0, 2.0, 2.0], [0.0, 3 * s1, 1 * s1, 3 * s1]])
    torch.testing.assert_close(cm.module[0].weight.detach(), expect, rtol=0, atol=1e-7)
    assert cm.weights["0"].indices().tolist() == [[0, 1, 3, 3], [0, 3, 1, 3]]
    assert cm.weights["0"].nbytes == 8 * 2 // 8 + 2 * 2 * 2  # indices + fp16 scale and offset per row


@settings(max_examples=25, deadline=None)
@given(bits=st.integers(1, 8), rows=st.integers(1, 6), cols=st.integers(2, 12), seed=st.integers(0, 999))
def test_uniform_error_at_most_half_a_step(bits, rows, cols, seed):
    w = torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))
    cm = uniform_quantize(nn.Sequential(_linear(w)), bits)
    w_hat = cm.module[0].weight.detach()
    step = (w.amax(1) - w.amin(1)) / (2**bits - 1)
    assert bool(((w_hat - w).abs() <= step[:, None] / 2 * (1 + 2e-3) + 2e-3 * w.abs().amax()).all())
    levels = cm.weights["0"].indices()
    assert int(levels.min()) >= 0 and int(levels.max()) <= 2**bits - 1


def test_kmeans_per_tensor_matches_sklearn_objective():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
    cm = kmeans_quantize(model, 2, n_init=10)
    for name in ("0", "2"):
        w = model.get_submodule(name).weight.detach().double().reshape(-1)
        km = KMeans(4, n_init=10, random_state=0).fit(w.numpy().reshape(-1, 1))
        ours = float(((cm.module.get_submodule(name).weight.detach().double().reshape(-1) - w) ** 2).sum())
        assert ours <= km.inertia_ * (1 + 5e-3)  # same objective; fp16 codewords
        assert cm.weights[name].codebooks.shape == (1, 4)
        np.testing.assert_allclose(np.sort(cm.weights[name].codebooks.float().numpy().ravel()),
                                   np.sort(km.cluster_centers_.ravel()), atol=5e-3)


@pytest.mark.parametrize("device", DEVICES)
def test_storage_and_model_untouched(device):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)).to(device)
    before = copy.deepcopy(model.state_dict())
    for bits in (2, 3, 4):
        km = kmeans_quantize(model, bits, groups=4)
        rep = km.storage()
        assert rep.per_layer == {"0": storage_bytes_formula(bits, 4, 8 * 27), "3": storage_bytes_formula(bits, 4, 1280)}
        assert rep.other_bytes == (8 + 10) * 4 and km.storage_bytes() == rep.total_bytes
        out = km.to_module()(torch.randn(2, 3, 6, 6, device=device))
        assert out.shape == (2, 10) and out.device.type == device
        un = uniform_quantize(model, bits)
        assert un.storage().per_layer["3"] == storage_bytes_formula(bits, 10, 1280, "affine")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_layers_subset_and_groups_capped_by_rows():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    cm = kmeans_quantize(model, 1, groups=8, layers=["1"])
    assert list(cm.weights) == ["1"] and cm.weights["1"].groups == 2
    torch.testing.assert_close(cm.module[0].weight, model[0].weight)


@pytest.mark.parametrize("fn", [uniform_quantize, kmeans_quantize])
def test_bad_input(fn):
    model = nn.Sequential(nn.Linear(3, 3))
    for bits in (0, 9):
        with pytest.raises(ValueError, match="bits"):
            fn(model, bits)
    with pytest.raises(TypeError, match="bits"):
        fn(model, 2.5)
    with pytest.raises(TypeError, match="model"):
        fn("not a model", 2)
    with pytest.raises(ValueError, match="no Linear"):
        fn(nn.Sequential(nn.ReLU()), 2)
    with pytest.raises(ValueError, match="unknown"):
        fn(model, 2, layers=["nope"])
    bad = nn.Sequential(nn.Linear(3, 3))
    with torch.no_grad():
        bad[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="layer '0' has NaN"):
        fn(bad, 2)
    with torch.no_grad():
        bad[0].weight[0, 0] = 1e6
    with pytest.raises(ValueError, match="fp16 range"):
        fn(bad, 2)


@settings(max_examples=20, deadline=None)
@given(bits=st.integers(1, 4), groups=st.integers(1, 6), rows=st.integers(1, 9), seed=st.integers(0, 99))
def test_kmeans_quantize_properties(bits, groups, rows, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(7, rows))
    cm = kmeans_quantize(model, bits, groups=groups, seed=seed)
    g = min(groups, rows)
    assert cm.storage().per_layer["0"] == storage_bytes_formula(bits, g, 7 * rows)
    w_hat = cm.module[0].weight.detach()
    books = cm.weights["0"].codebooks.float()
    for r, grp in enumerate(torch.repeat_interleave(torch.arange(g), torch.tensor(
            [len(c) for c in torch.tensor_split(torch.arange(rows), g)])).tolist()):
        assert set(w_hat[r].tolist()) <= set(books[grp].tolist())  # every weight is a codeword of its group
        nearest = books[grp][(model[0].weight.detach()[r, :, None] - books[grp]).abs().argmin(1)]
        torch.testing.assert_close((w_hat[r] - model[0].weight.detach()[r]).abs(),
                                   (nearest - model[0].weight.detach()[r]).abs())  # and the nearest one
