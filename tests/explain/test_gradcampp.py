"""Grad-CAM++ against autograd higher-order derivatives of Y = exp(S); Smooth Grad-CAM++ reductions and options."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gradlab.explain import GradCAMpp, SmoothGradCAMpp
from gradlab.explain.gradcampp import gradcampp_map

torch.set_num_threads(1)


class Net(nn.Module):
    """conv -> relu (the explained layer A) -> piecewise-linear head, so S is piecewise linear in A."""

    def __init__(self, k=3, c=2):
        super().__init__()
        self.conv = nn.Conv2d(1, k, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(k, 4, 3, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(4 * 4 * 4, c)

    def head(self, a):
        return self.fc(self.act2(self.conv2(a)).reshape(a.shape[0], -1))

    def forward(self, x):
        return self.head(self.act(self.conv(x)))


def _net(seed=0):
    torch.manual_seed(seed)
    return Net().eval()


def _autograd_reference(m, x, c):
    """Grad-CAM++ on Y = exp(S) with d/dA, d2/dA2, d3/dA3 taken elementwise by autograd (no closed form used)."""
    a = m.act(m.conv(x)).detach().requires_grad_(True)
    y = torch.exp(m.head(a)[0, c])
    (d1,) = torch.autograd.grad(y, a, create_graph=True)
    flat1 = d1.reshape(-1)
    d2 = torch.zeros_like(flat1)
    d3 = torch.zeros_like(flat1)
    for e in range(flat1.numel()):
        (h,) = torch.autograd.grad(flat1[e], a, create_graph=True)
        h_e = h.reshape(-1)[e]
        d2[e] = h_e.detach()
        (t,) = torch.autograd.grad(h_e, a, retain_graph=True, allow_unused=False)
        d3[e] = t.reshape(-1)[e].detach()
    d2, d3 = d2.view_as(a), d3.view_as(a)
    A = a.detach()
    denom = 2 * d2 + A.sum((2, 3), keepdim=True) * d3
    alpha = torch.where(denom != 0, d2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(d2))
    w = (alpha * d1.detach().clamp(min=0)).sum((2, 3), keepdim=True)
    return (w * A).sum(1, keepdim=True).clamp(min=0), y.detach()


@pytest.mark.parametrize("seed", [0, 1])
def test_gradcampp_equals_exp_score_derivatives(seed):
    m = _net(seed)
    torch.manual_seed(10 + seed)
    x = torch.randn(1, 1, 4, 4)
    for c in (0, 1):
        ours = GradCAMpp(m, m.act).attribute(x, target=c, upsample=False)
        ref, y = _autograd_reference(m, x, c)
        # e^S cancels in alpha and scales w: ours * e^S equals the exact derivative-based map
        torch.testing.assert_close(ours * y, ref, atol=1e-5, rtol=1e-4)
        assert ref.abs().max() > 0


def test_gradcampp_batched_equals_per_example_and_chunked():
    m = _net()
    x = torch.randn(5, 1, 4, 4)
    tgt = torch.tensor([0, 1, 1, 0, 1])
    batch = GradCAMpp(m, m.act).attribute(x, target=tgt)
    assert batch.shape == (5, 1, 4, 4)
    single = torch.cat([GradCAMpp(m, m.act).attribute(x[i : i + 1], target=int(tgt[i])) for i in range(5)])
    torch.testing.assert_close(batch, single)
    torch.testing.assert_close(GradCAMpp(m, m.act).attribute(x, target=tgt, chunk_size=2), batch)


def test_gradcampp_map_hand_example():
    # one channel, 2 positions: A = [1, 3], g = [1, -2]; alpha = g^2 / (2 g^2 + g^3 * 4)
    A = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)
    g = torch.tensor([1.0, -2.0]).view(1, 1, 1, 2)
    alpha = torch.tensor([1 / (2 + 4), 4 / (8 - 32)])
    w = (alpha * g.view(-1).clamp(min=0)).sum()
    expected = (w * A).clamp(min=0)
    torch.testing.assert_close(gradcampp_map(A, g, g * g, g**3), expected)
    zero = torch.zeros_like(g)
    assert torch.equal(gradcampp_map(A, zero, zero, zero), torch.zeros(1, 1, 1, 2))


def test_smooth_gradcampp_reduces_to_gradcampp_and_averages_moments():
    m = _net()
    x = torch.randn(3, 1, 4, 4)
    gpp = GradCAMpp(m, m.act).attribute(x, target=1)
    sm = SmoothGradCAMpp(m, m.act).attribute(x, target=1, n_samples=1, noise_level=0.0)
    torch.testing.assert_close(sm, gpp)
    sm4 = SmoothGradCAMpp(m, m.act).attribute(x, target=1, n_samples=4, stdevs=0.0, chunk_size=5)
    torch.testing.assert_close(sm4, gpp)
    # noisy: equals the closed form applied to moments computed by hand from the same noise
    from gradlab.explain.gradcampp import layer_activations_and_gradients
    from gradlab.explain.gradients import draw_smoothgrad_noise

    ours = SmoothGradCAMpp(m, m.act).attribute(x, target=1, n_samples=6, noise_level=0.2, seed=7, upsample=False)
    std = 0.2 * (x.flatten(1).max(1).values - x.flatten(1).min(1).values)
    noisy = draw_smoothgrad_noise(x, 6, std, 7)
    A, _ = layer_activations_and_gradients(m, m.act, x, torch.ones(3, dtype=torch.long))
    _, g = layer_activations_and_gradients(m, m.act, noisy, torch.ones(18, dtype=torch.long))
    g = g.view(3, 6, *g.shape[1:])
    ref = gradcampp_map(A, g.mean(1), (g**2).mean(1), (g**3).mean(1))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ours, GradCAMpp(m, m.act).attribute(x, target=1, upsample=False))


def test_feature_map_and_neuron_subsets():
    m = _net()
    x = torch.randn(2, 1, 4, 4)
    full = GradCAMpp(m, m.act).attribute(x, target=0, upsample=False, relu=False)
    parts = sum(GradCAMpp(m, m.act).attribute(x, target=0, upsample=False, relu=False, feature_maps=[k]) for k in range(3))
    torch.testing.assert_close(parts, full, atol=1e-6, rtol=1e-5)
    pos = torch.zeros(4, 4, dtype=torch.bool)
    pos[:2] = True
    sub = GradCAMpp(m, m.act).attribute(x, target=0, upsample=False, neurons=pos, relu=False)
    assert torch.all(sub[..., 2:, :] == 0)
    sm = SmoothGradCAMpp(m, m.act).attribute(x, target=0, n_samples=3, seed=0, feature_maps=[1], neurons=pos)
    assert sm.shape == (2, 1, 4, 4) and torch.isfinite(sm).all()
    with pytest.raises(ValueError):
        GradCAMpp(m, m.act).attribute(x, target=0, feature_maps=[5])
    with pytest.raises(ValueError, match="neurons"):
        GradCAMpp(m, m.act).attribute(x, target=0, neurons=torch.zeros(3, 3, dtype=torch.bool))


class Boom(Net):
    def forward(self, x):
        self.act(self.conv(x))
        raise RuntimeError("boom")


class InplaceAfter(Net):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.head(self.act(self.conv(x)))


@pytest.mark.parametrize("cls", [GradCAMpp, SmoothGradCAMpp])
def test_hooks_mutation_and_errors(cls):
    m = _net()
    sd = copy.deepcopy(m.state_dict())
    x = torch.randn(2, 1, 4, 4)
    cls(m, m.act).attribute(x, target=0)
    assert all(not mod._forward_hooks and not mod._backward_hooks for mod in m.modules())
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
    with pytest.raises(ValueError, match="not a submodule"):
        cls(m, nn.ReLU())
    with pytest.raises(TypeError):
        cls(m, m.act).attribute(x.double(), target=0)
    with pytest.raises(ValueError):
        cls(m, m.act).attribute(torch.randn(2, 2, 4, 4), target=0)
    m.train()
    with pytest.raises(ValueError, match="training mode"):
        cls(m, m.act).attribute(x, target=0)
    torch.manual_seed(0)
    b = Boom().eval()
    with pytest.raises(RuntimeError, match="boom"):
        cls(b, b.act).attribute(x, target=0)
    assert all(not mod._forward_hooks for mod in b.modules())
    torch.manual_seed(0)
    ip = InplaceAfter().eval()
    with pytest.raises(ValueError, match="in place"):
        cls(ip, ip.conv).attribute(x, target=0)


def _minmax_resize(cam: torch.Tensor, size: int):
    import cv2
    import numpy as np

    def mm(c):
        c = c - c.min()
        return c / (1e-7 + c.max())

    # pytorch-grad-cam: min-max per image, cv2 bilinear resize, then min-max again after averaging layers
    return np.stack([mm(cv2.resize(mm(c).astype(np.float32), (size, size))) for c in cam[:, 0].numpy()])


@pytest.mark.parametrize("which", ["gradcam", "gradcampp"])
def test_against_pytorch_grad_cam(which):
    """Differential test vs pytorch-grad-cam (dev-only dependency) after replicating its min-max + cv2 resize."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from gradlab.explain import GradCAM

    torch.manual_seed(3)
    m = Net().eval()
    with torch.no_grad():  # pytorch-grad-cam adds eps=1e-6 to alpha's denominator; large gradients make it negligible
        m.fc.weight.mul_(30.0)
    x = torch.randn(3, 1, 8, 8)
    m2 = nn.Sequential(nn.AvgPool2d(2), m).eval()  # 8x8 image -> 4x4 into the net, so the CAM is upsampled
    targets = [0, 1, 1]
    cls = pgc.GradCAM if which == "gradcam" else pgc.GradCAMPlusPlus
    with cls(model=m2, target_layers=[m.act]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
    meth = GradCAM(m2, m.act) if which == "gradcam" else GradCAMpp(m2, m.act)
    ours = meth.attribute(x, target=targets, upsample=False)
    import numpy as np

    np.testing.assert_allclose(_minmax_resize(ours, 8), ref, atol=2e-4)
