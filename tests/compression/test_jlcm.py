"""JLCM: the proximal mapping search, the Gram-matrix loss equal to the layer's own, learning on layer outputs,
storage equal to the formula, the returned plain module, and bad input (with hypothesis)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.compression import (
    JLCM,
    JointConfig,
    bits_per_weight_formula,
    layer_output_errors,
    learn_codebooks_and_mappings,
    storage_bytes_formula,
)
from gradlab.compression.codebooks import group_kmeans_codebooks, scaled_codebook
from gradlab.compression.joint import inverse_rectified_sigmoid, rectified_sigmoid
from gradlab.compression.storage import row_groups

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _correlated_inputs(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g) / math.sqrt(d)
    return torch.randn(n, d, generator=g) @ mix + 0.3 * torch.randn(n, d, generator=g)


def test_rectified_sigmoid_inverse():
    h = torch.linspace(0, 1, 11, dtype=torch.float64)
    torch.testing.assert_close(rectified_sigmoid(inverse_rectified_sigmoid(h)), h)


def test_gram_loss_equals_layer_loss():
    """A Linear layer (Gram-matrix loss) and the equal Conv1d with kernel 1 (the layer's own forward) take the same
    steps."""
    torch.manual_seed(0)
    lin = nn.Linear(12, 10).double()
    conv = nn.Conv1d(12, 10, 1).double()
    with torch.no_grad():
        conv.weight.copy_(lin.weight[:, :, None])
        conv.bias.copy_(lin.bias)
    x = _correlated_inputs(200, 12, 0).double()
    _, books = group_kmeans_codebooks(lin.weight.detach(), 2, 2, generator=torch.Generator().manual_seed(0))
    cfg = JointConfig(steps=30, warmup=0.3)
    with torch.no_grad():
        y_lin, y_conv = lin(x), conv(x[:, :, None])
    a = learn_codebooks_and_mappings(lin, x, y_lin, mode="codebooks", groups=2, codebooks=books, config=cfg)
    b = learn_codebooks_and_mappings(conv, x[:, :, None], y_conv, mode="codebooks", groups=2, codebooks=books,
                                     config=cfg)
    torch.testing.assert_close(torch.tensor(a.losses), torch.tensor(b.losses), rtol=1e-8, atol=1e-12)
    assert torch.equal(a.indices, b.indices.view_as(a.indices))
    torch.testing.assert_close(a.codebooks, b.codebooks)


@pytest.mark.parametrize("mode", ["codebooks", "scales"])
def test_mapping_moves_only_between_neighbouring_codewords(mode):
    torch.manual_seed(1)
    layer = nn.Linear(16, 12)
    x = _correlated_inputs(300, 16, 1)
    w = layer.weight.detach()
    gen = torch.Generator().manual_seed(0)
    if mode == "codebooks":
        _, books = group_kmeans_codebooks(w, 2, 3, generator=gen)
        scales, table = None, books[row_groups(12, 3)]
    else:
        _, books, scales = scaled_codebook(w, 2, 3, generator=gen)
        table = scales[row_groups(12, 3), None] * books[None]
    with torch.no_grad():
        y = layer(x)
    res = learn_codebooks_and_mappings(layer, x, y, mode=mode, groups=3, codebooks=books, scales=scales,
                                       config=JointConfig(steps=120, codebook_lr=0.0))
    lo = (torch.searchsorted(table.contiguous(), w.contiguous(), right=True) - 1).clamp(0, 2)
    assert bool(((res.indices == lo) | (res.indices == lo + 1)).all())
    assert not torch.equal(res.indices, (w[..., None] - table[:, None, :]).abs().argmin(2))  # it did search
    torch.testing.assert_close(res.codebooks, books)  # codebook lr 0: tables unchanged


@pytest.mark.parametrize("mode", ["codebooks", "scales"])
def test_joint_learning_lowers_calibration_output_error(mode):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(24, 48), nn.ReLU(), nn.Linear(48, 8))
    x = _correlated_inputs(512, 24, 2)
    with pytest.warns(UserWarning, match="layer '2' is not re-ordered"):
        jl = JLCM(bits=2, groups=4, mode=mode, steps=300).fit(model, x)
    init, final = layer_output_errors(jl.initial_, x), layer_output_errors(jl.compressed_, x)
    for name in ("0", "2"):
        assert final[name] < init[name]
        assert jl.layer_errors_[name]["final"] == pytest.approx(final[name])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["codebooks", "scales"])
def test_storage_equals_formula_and_module_is_plain(device, mode):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 8, 3), nn.Flatten(),
                          nn.Linear(8 * 2 * 2, 4)).to(device)
    x = torch.randn(32, 3, 6, 6, device=device)
    with pytest.warns(UserWarning):
        jl = JLCM(bits=3, groups=4, mode=mode, steps=5, batch_size=16).fit(model, x)
    cm = jl.compressed_
    rep = cm.storage()
    for name, cw in cm.weights.items():
        groups = min(4, cw.shape[0])
        assert rep.per_layer[name] == storage_bytes_formula(3, groups, cw.numel, mode)
        assert cw.bits_per_weight == pytest.approx(bits_per_weight_formula(3, groups, cw.numel, mode)
                                                   + (math.ceil(3 * cw.numel / 8) * 8 - 3 * cw.numel) / cw.numel)
    module = jl.to_module()
    assert type(module) is nn.Sequential and module[0].weight.device.type == device
    torch.testing.assert_close(module[0].weight, cm.weights["0"].decode().to(device))
    assert jl.storage_bytes() == rep.total_bytes
    assert module(x).shape == (32, 4)


def test_steps_zero_is_the_initialisation():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    with pytest.warns(UserWarning):
        jl = JLCM(bits=2, groups=2, steps=0).fit(model, torch.randn(20, 8))
    assert jl.compressed_.weights is not jl.initial_.weights
    for name in ("0", "2"):
        assert torch.equal(jl.compressed_.weights[name].packed, jl.initial_.weights[name].packed)


def test_not_fitted():
    with pytest.raises(RuntimeError, match="not fitted"):
        JLCM().to_module()


@settings(max_examples=30, deadline=None)
@given(bits=st.integers(-3, 12))
def test_bits_validated(bits):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    if 1 <= bits <= 8:
        with pytest.warns(UserWarning):
            jl = JLCM(bits=bits, groups=2, steps=2).fit(model, torch.randn(6, 3))
        assert all(cw.bits == bits for cw in jl.compressed_.weights.values())
    else:
        with pytest.raises(ValueError, match="bits must be"):
            JLCM(bits=bits)


def test_bad_arguments():
    with pytest.raises(TypeError, match="bits must be an int"):
        JLCM(bits=2.0)
    with pytest.raises(ValueError, match="groups must be >= 1"):
        JLCM(groups=0)
    with pytest.raises(ValueError, match="mode must be one of"):
        JLCM(mode="affine")
    with pytest.raises(ValueError, match="steps must be >= 0"):
        JLCM(steps=-1)
    with pytest.raises(ValueError, match="lr must not be NaN"):
        JLCM(lr=float("nan"))
    with pytest.raises(ValueError, match="warmup must lie"):
        JLCM(warmup=1.0)
    with pytest.raises(TypeError, match="beta must be a pair"):
        JLCM(beta=3.0)
    with pytest.raises(TypeError, match="layers must be a list"):
        JLCM(layers="fc1")


def test_bad_fit_input():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    jl = JLCM(bits=2, groups=2, steps=1)
    with pytest.raises(TypeError, match="model"):
        jl.fit(lambda x: x, torch.randn(4, 3))
    with pytest.raises(TypeError, match="calibration_inputs must be a torch.Tensor"):
        jl.fit(model, [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="calibration_inputs contains NaN"):
        jl.fit(model, torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="non-empty batch"):
        jl.fit(model, torch.zeros(0, 3))
    with pytest.raises(ValueError, match="share the batch size"):
        jl.fit(model, (torch.zeros(2, 3), torch.zeros(3, 3)))
    with pytest.raises(ValueError, match="no Linear"):
        jl.fit(nn.Sequential(nn.ReLU()), torch.randn(4, 3))
    with pytest.raises(ValueError, match="unknown"):
        JLCM(layers=["9"]).fit(model, torch.randn(4, 3))
    with torch.no_grad():
        model[2].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="layer '2' has NaN or inf"):
        jl.fit(model, torch.randn(4, 3))
    assert jl.compressed_ is None  # nothing was fitted
