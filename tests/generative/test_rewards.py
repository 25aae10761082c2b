"""ControlNet++ consistency rewards against scipy.ndimage and hand-written numpy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from torch import nn

from gradlab.generative.rewards import DepthReward, SegmentationReward, SobelEdgeReward, sobel_gradients

torch.set_num_threads(1)


@settings(max_examples=25, deadline=None)
@given(h=st.integers(1, 9), w=st.integers(1, 9), seed=st.integers(0, 10_000), mode=st.sampled_from(["nearest", "reflect"]))
def test_sobel_matches_scipy(h, w, seed, mode):
    x = np.random.default_rng(seed).normal(size=(2, h, w))
    gx, gy = sobel_gradients(torch.from_numpy(x))
    for i in range(2):
        np.testing.assert_allclose(gx[i].numpy(), ndimage.sobel(x[i], axis=-1, mode=mode), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(gy[i].numpy(), ndimage.sobel(x[i], axis=-2, mode=mode), rtol=1e-12, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), reduce=st.sampled_from(["luma", "mean", "max"]))
def test_sobel_reward_matches_scipy_edge_map(seed, reduce):
    rng = np.random.default_rng(seed)
    img = rng.uniform(-1, 1, size=(3, 3, 7, 6))
    target = rng.uniform(0, 1, size=(3, 1, 7, 6))
    eps = 1e-6
    r = SobelEdgeReward(channel_reduce=reduce, eps=eps)
    u = (img + 1) / 2
    gray = {"luma": np.tensordot([0.299, 0.587, 0.114], u, axes=([0], [1])), "mean": u.mean(1), "max": u.max(1)}[reduce]
    ref_edges = np.stack([(np.sqrt(ndimage.sobel(g, axis=1, mode="nearest") ** 2
                                   + ndimage.sobel(g, axis=0, mode="nearest") ** 2 + eps) - math.sqrt(eps))
                          / (4 * math.sqrt(2)) for g in gray])
    edges = r.edge_map(torch.from_numpy(img))
    np.testing.assert_allclose(edges[:, 0].numpy(), ref_edges, rtol=1e-10, atol=1e-12)
    assert float(edges.min()) >= 0 and float(edges.max()) <= 1
    loss = r(torch.from_numpy(img), torch.from_numpy(target))
    np.testing.assert_allclose(loss.numpy(), ((ref_edges - target[:, 0]) ** 2).reshape(3, -1).mean(1), rtol=1e-10)


def test_sobel_reward_is_zero_for_its_own_edges_and_differentiable():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    r = SobelEdgeReward()
    assert torch.allclose(r(x, r.edge_map(x)), torch.zeros(2, dtype=torch.float64))
    x.requires_grad_(True)
    target = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: r(z, target), (x,))
    # a flat image has a finite gradient (eps inside the square root)
    flat = torch.zeros(1, 3, 8, 8, requires_grad=True)
    r(flat, torch.ones(1, 8, 8)).sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_sobel_reward_bad_input():
    r = SobelEdgeReward()
    with pytest.raises(ValueError, match="channel_reduce"):
        SobelEdgeReward(channel_reduce="sum")
    with pytest.raises(ValueError, match="images"):
        r(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="target"):
        r(torch.zeros(2, 3, 8, 8), torch.zeros(2, 7, 8))
    with pytest.raises(ValueError, match="one entry per image"):
        r(torch.zeros(2, 3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="input_range"):
        SobelEdgeReward(input_range=(1.0, -1.0))


class PixelLinear(nn.Module):
    """A 1x1-conv 'segmenter'/'depth net' whose output a numpy reference can recompute."""

    def __init__(self, out_channels: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, out_channels, 1).double()

    def forward(self, x):
        return self.conv(x)


def _np_logits(model: PixelLinear, x01: np.ndarray, mean, std) -> np.ndarray:
    z = (x01 - np.asarray(mean).reshape(1, 3, 1, 1)) / np.asarray(std).reshape(1, 3, 1, 1)
    wt = model.conv.weight.detach().numpy()[:, :, 0, 0]
    return np.einsum("kc,bchw->bkhw", wt, z) + model.conv.bias.detach().numpy().reshape(1, -1, 1, 1)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), frac_ignored=st.floats(0.0, 1.0))
def test_segmentation_reward_is_ce_ignoring_255(seed, frac_ignored):
    rng = np.random.default_rng(seed)
    model = PixelLinear(4, seed=seed % 7)
    img = rng.uniform(-1, 1, size=(2, 3, 5, 5))
    y = rng.integers(0, 4, size=(2, 5, 5))
    y[rng.uniform(size=y.shape) < frac_ignored] = 255
    reward = SegmentationReward(model)
    ours = reward(torch.from_numpy(img), torch.from_numpy(y)).detach().numpy()
    logits = _np_logits(model, (img + 1) / 2, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    for b in range(2):
        valid = y[b] != 255
        nll = -np.take_along_axis(logp[b], np.where(valid, y[b], 0)[None], 0)[0]
        expected = nll[valid].sum() / max(1, valid.sum())
        assert ours[b] == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert all(p.requires_grad is False for p in reward.parameters())


def test_segmentation_reward_resizes_logits_and_checks_labels():
    class Down(nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, 2)[:, :2]

    r = SegmentationReward(Down())
    img = torch.zeros(1, 3, 8, 8, requires_grad=True)
    loss = r(img, torch.zeros(1, 8, 8, dtype=torch.long))
    loss.sum().backward()
    assert loss.shape == (1,) and img.grad is not None
    with pytest.raises(ValueError, match="class ids"):
        r(torch.zeros(1, 3, 8, 8), torch.full((1, 8, 8), 7, dtype=torch.long))
    with pytest.raises(TypeError, match="target"):
        r(torch.zeros(1, 3, 8, 8), torch.zeros(1, 8, 8))
    with pytest.raises(TypeError, match="model"):
        SegmentationReward(lambda x: x)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_depth_reward_is_mse_of_max_normalised_maps(seed):
    rng = np.random.default_rng(seed)
    model = PixelLinear(1, seed=seed % 5)
    img = rng.uniform(-1, 1, size=(3, 3, 6, 6))
    depth = rng.uniform(0.1, 5.0, size=(3, 6, 6))
    ours = DepthReward(model, eps=1e-6)(torch.from_numpy(img), torch.from_numpy(depth)).detach().numpy()
    pred = _np_logits(model, (img + 1) / 2, (0.5,) * 3, (0.5,) * 3)[:, 0]
    pred = pred / (pred.reshape(3, -1).max(1).reshape(3, 1, 1) + 1e-6)
    tgt = depth / (depth.reshape(3, -1).max(1).reshape(3, 1, 1) + 1e-6)
    np.testing.assert_allclose(ours, ((pred - tgt) ** 2).reshape(3, -1).mean(1), rtol=1e-6)


def test_depth_reward_accepts_output_objects_and_resizes():
    class Out:
        def __init__(self, d):
            self.predicted_depth = d

    class Dpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(()))

        def forward(self, x):
            assert x.shape[-1] == 16  # input_size resize happened
            return Out(self.scale * x.mean(1)[:, ::2, ::2].exp())

    r = DepthReward(Dpt(), input_size=16)
    img = torch.rand(2, 3, 8, 8, requires_grad=True)
    loss = r(img, torch.rand(2, 1, 8, 8))
    loss.sum().backward()
    assert loss.shape == (2,) and img.grad is not None and r.model.scale.grad is None
    with pytest.raises(ValueError, match="mean and std"):
        DepthReward(Dpt(), mean=(0.5,), std=(0.5, 0.5))


def test_consistency_reward_is_abstract():
    import pytest

    from gradlab.generative.rewards import ConsistencyReward

    with pytest.raises(TypeError, match="abstract"):
        ConsistencyReward()
