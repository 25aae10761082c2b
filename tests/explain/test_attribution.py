"""Attribution suite vs Captum outputs, hand computations and closed forms; hooks, mutation and bad inputs."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import captum.attr as ca
from hypothesis import given, settings
from hypothesis import strategies as st
from gradlab.explain import (
    CLime,
    LocalFunctionApproximation,
    DeepLift,
    GradCAM,
    GuidedBackprop,
    InputXGradient,
    LRP,
    IntegratedGradients,
    KernelShap,
    Lime,
    Occlusion,
    Saliency,
    SmoothGrad,
)

torch.set_num_threads(1)


class MLP(nn.Module):
    def __init__(self, d=6, h=8, c=3):
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(h, h)
        self.act2 = nn.Tanh()
        self.fc3 = nn.Linear(h, c)

    def forward(self, x):
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self, c=3, inplace=False):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=inplace)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.relu2 = nn.ReLU(inplace=inplace)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, c)

    def forward(self, x):
        a = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(a).view(x.shape[0], -1))


class ReusedReLU(MLP):
    def forward(self, x):
        return self.fc3(self.act1(self.fc2(self.act1(self.fc1(x)))))


class FunctionalReLU(MLP):
    def forward(self, x):
        return self.fc3(torch.tanh(self.fc2(F.relu(self.fc1(x)))))


class Exploding(CNN):
    def forward(self, x):
        self.relu1(self.conv1(x))
        raise RuntimeError("boom inside forward")


def _mlp(seed=0):
    torch.manual_seed(seed)
    return MLP().eval()


def _cnn(seed=0, **kw):
    torch.manual_seed(seed)
    return CNN(**kw).eval()


def _no_hooks(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        assert not getattr(m, "_backward_pre_hooks", {})


X = torch.randn(5, 6)
T = torch.tensor([0, 1, 2, 1, 0])


def test_saliency_matches_autograd_and_captum_abs():
    m = _mlp()
    got = Saliency(m).attribute(X, target=T)
    x = X.clone().requires_grad_(True)
    m(x).gather(1, T.view(-1, 1)).sum().backward()
    torch.testing.assert_close(got, x.grad)
    torch.testing.assert_close(Saliency(m).attribute(X, target=T, abs=True), ca.Saliency(m).attribute(X, target=T))
    torch.testing.assert_close(Saliency(m).attribute(X, target=T, chunk_size=2), got)


def test_input_x_gradient_is_x_times_gradient():
    m = _mlp()
    torch.testing.assert_close(InputXGradient(m).attribute(X, target=1), X * Saliency(m).attribute(X, target=1))


def test_integrated_gradients_vs_captum_and_completeness():
    m = _mlp()
    ours, delta = IntegratedGradients(m).attribute(X, target=T, return_convergence_delta=True, chunk_size=7)
    ref = ca.IntegratedGradients(m).attribute(X, target=T, n_steps=50, method="gausslegendre")
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    out = m(X).gather(1, T.view(-1, 1))[:, 0] - m(torch.zeros_like(X)).gather(1, T.view(-1, 1))[:, 0]
    torch.testing.assert_close(ours.sum(1), out.detach(), atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(delta, ours.sum(1) - out.detach(), atol=1e-5, rtol=1e-4)


def test_integrated_gradients_linear_closed_form():
    torch.manual_seed(1)
    lin = nn.Linear(6, 2).eval()
    base = torch.randn(6)
    ig = IntegratedGradients(lin).attribute(X, target=1, baselines=base, n_steps=3)
    torch.testing.assert_close(ig, (X - base) * lin.weight[1].detach(), atol=1e-6, rtol=1e-5)


def test_smoothgrad_equals_noise_tunnel_with_same_seed():
    m = _mlp()
    sg = SmoothGrad(m).attribute(X, target=T, n_samples=7, stdevs=0.3, seed=123, chunk_size=4)
    torch.manual_seed(123)
    ref = ca.NoiseTunnel(ca.Saliency(m)).attribute(
        X, target=T, nt_type="smoothgrad", nt_samples=7, stdevs=0.3, abs=False
    )
    torch.testing.assert_close(sg, ref)
    for nt in ("smoothgrad_sq", "vargrad"):
        torch.manual_seed(5)
        ref = ca.NoiseTunnel(ca.Saliency(m)).attribute(X, target=T, nt_type=nt, nt_samples=4, stdevs=0.2, abs=True)
        ours = SmoothGrad(m).attribute(X, target=T, nt_type=nt, n_samples=4, stdevs=0.2, abs=True, seed=5)
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("base", ["saliency", "input_x_gradient"])
def test_smoothgrad_equals_noise_tunnel_in_float64(base):
    # NoiseTunnel draws its noise in the default dtype (float32) also for float64 inputs; the same seed must give
    # the same noise, so the float64 attributions agree to float64 round-off (issue 9, section 3)
    m = copy.deepcopy(_mlp()).double()
    x = torch.randn(5, 6, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 1, 0])
    ours = SmoothGrad(m, base=base).attribute(x, target=t, n_samples=9, stdevs=0.4, seed=77, chunk_size=7)
    inner = ca.Saliency(m) if base == "saliency" else ca.InputXGradient(m)
    kwargs = {"abs": False} if base == "saliency" else {}
    torch.manual_seed(77)
    ref = ca.NoiseTunnel(inner).attribute(x, target=t, nt_type="smoothgrad", nt_samples=9, stdevs=0.4, **kwargs)
    assert ours.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-12)


def test_smoothgrad_noise_follows_the_default_dtype_like_noise_tunnel():
    m = _mlp()
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ours = SmoothGrad(m).attribute(X, target=T, n_samples=4, stdevs=0.3, seed=2)
        torch.manual_seed(2)
        # NoiseTunnel promotes the float32 input to the float64 noise's dtype; the wrapper casts back for the model
        ref = ca.NoiseTunnel(ca.Saliency(lambda z: m(z.float()))).attribute(
            X, target=T, nt_type="smoothgrad", nt_samples=4, stdevs=0.3, abs=False)
    finally:
        torch.set_default_dtype(old)
    assert ours.dtype == torch.float32  # the model's dtype is kept (Captum would promote to float64)
    torch.testing.assert_close(ours, ref.float(), atol=1e-6, rtol=1e-5)


def test_smoothgrad_over_input_x_gradient_equals_noise_tunnel():
    m = _mlp()
    ours = SmoothGrad(m, base="input_x_gradient").attribute(X, target=T, n_samples=6, stdevs=0.25, seed=9, chunk_size=5)
    torch.manual_seed(9)
    ref = ca.NoiseTunnel(ca.InputXGradient(m)).attribute(X, target=T, nt_type="smoothgrad", nt_samples=6, stdevs=0.25)
    torch.testing.assert_close(ours, ref)
    with pytest.raises(ValueError):
        SmoothGrad(m, base="deeplift")


def test_smoothgrad_noise_is_fraction_of_range_and_seeded():
    m = _mlp()
    state = torch.get_rng_state()
    a = SmoothGrad(m).attribute(X, target=T, n_samples=5, noise_level=0.2, seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    b = SmoothGrad(m).attribute(X, target=T, n_samples=5, noise_level=0.2, seed=3)
    torch.testing.assert_close(a, b)
    # manual reference: noise std = 0.2 * (max - min) per example, drawn as N(0, std) on interleaved copies
    std = 0.2 * (X.max(1).values - X.min(1).values)
    torch.manual_seed(3)
    noisy = X.repeat_interleave(5, 0) + torch.normal(0, std.repeat_interleave(5).view(-1, 1).expand(25, 6).contiguous())
    g = Saliency(m).attribute(noisy, target=T.repeat_interleave(5)).view(5, 5, 6).mean(1)
    torch.testing.assert_close(a, g)
    # zero noise gives the gradient; linear model: SmoothGrad is exactly the weight
    torch.testing.assert_close(SmoothGrad(m).attribute(X, target=T, n_samples=3, noise_level=0.0),
                               Saliency(m).attribute(X, target=T))
    lin = nn.Linear(6, 2).eval()
    torch.testing.assert_close(SmoothGrad(lin).attribute(X, target=0, n_samples=4, seed=0),
                               lin.weight[0].detach().expand(5, 6))
    with pytest.raises(ValueError, match="not both"):
        SmoothGrad(m).attribute(X, target=T, noise_level=0.1, stdevs=0.1)


def test_guided_backprop_vs_captum_and_hand():
    m = _cnn()
    x = torch.randn(3, 1, 8, 8)
    ours = GuidedBackprop(m).attribute(x, target=[0, 1, 2])
    ref = ca.GuidedBackprop(m).attribute(x, target=[0, 1, 2])
    torch.testing.assert_close(ours, ref)
    # hand: backward where each ReLU passes 1[z>0]*relu(grad)
    z1 = m.conv1(x)
    a1 = z1.relu()
    z2 = m.conv2(a1)
    a2 = z2.relu()
    out = m.fc(m.pool(a2).flatten(1))
    g = torch.autograd.grad(out.gather(1, torch.tensor([[0], [1], [2]])).sum(), a2, retain_graph=True)[0]
    g = (z2 > 0) * g.clamp(min=0)
    g = torch.autograd.grad(z2, a1, g, retain_graph=True)[0]
    g = (z1 > 0) * g.clamp(min=0)
    xr = x.clone().requires_grad_(True)
    g = torch.autograd.grad(m.conv1(xr), xr, g)[0]
    torch.testing.assert_close(ours, g, atol=1e-6, rtol=1e-5)


def test_guided_backprop_reused_relu_matches_hand():
    torch.manual_seed(0)
    m = ReusedReLU().eval()  # the same nn.ReLU after fc1 and fc2: guided backprop's rule is stateless, so allowed
    got = GuidedBackprop(m).attribute(X, target=1)
    xr = X.clone().requires_grad_(True)
    z1 = m.fc1(xr)
    a1 = z1.relu()
    z2 = m.fc2(a1)
    a2 = z2.relu()
    out = m.fc3(a2)[:, 1].sum()
    r = torch.autograd.grad(out, a2, retain_graph=True)[0]
    r = torch.autograd.grad(z2, a1, (z2 > 0) * r.clamp(min=0), retain_graph=True)[0]
    r = torch.autograd.grad(z1, xr, (z1 > 0) * r.clamp(min=0))[0]
    torch.testing.assert_close(got, r)


def test_guided_backprop_inplace_handled_and_functional_refused():
    m_in = _cnn(inplace=True)
    m_out = _cnn()
    m_out.load_state_dict(m_in.state_dict())
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(GuidedBackprop(m_in).attribute(x, target=1), GuidedBackprop(m_out).attribute(x, target=1))
    assert m_in.relu1.inplace  # caller's model unchanged
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="functional"):
        GuidedBackprop(FunctionalReLU().eval()).attribute(X, target=0)


def test_deeplift_vs_captum_and_summation_to_delta():
    m = _mlp()
    base = torch.randn(6) * 0.1
    ours, delta = DeepLift(m).attribute(X, target=T, baselines=base, return_convergence_delta=True, chunk_size=2)
    ref = ca.DeepLift(m).attribute(X, target=T, baselines=base.expand_as(X))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    fx = m(X).gather(1, T.view(-1, 1))[:, 0] - m(base.expand_as(X)).gather(1, T.view(-1, 1))[:, 0]
    torch.testing.assert_close(ours.sum(1), fx.detach(), atol=1e-5, rtol=1e-5)
    assert delta.abs().max() < 1e-5


def test_deeplift_rescale_by_hand_one_hidden_layer():
    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 1)).eval()
    x, b = torch.randn(3, 4), torch.randn(3, 4)
    z, zb = m[0](x), m[0](b)
    dz = z - zb
    mult = torch.where(dz.abs() > 1e-10, (z.relu() - zb.relu()) / dz, (z > 0).float())
    hand = ((mult * m[2].weight[0]) @ m[0].weight) * (x - b)
    torch.testing.assert_close(DeepLift(m).attribute(x, baselines=b), hand.detach(), atol=1e-6, rtol=1e-5)


def test_deeplift_refuses_reused_and_functional_and_handles_inplace():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="more than once"):
        DeepLift(ReusedReLU().eval()).attribute(X, target=0)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="functional"):
        DeepLift(FunctionalReLU().eval()).attribute(X, target=0)
    gelu = nn.Sequential(nn.Linear(6, 4), nn.GELU(), nn.Linear(4, 2)).eval()
    with pytest.raises(ValueError, match="no DeepLIFT rule"):
        DeepLift(gelu).attribute(X, target=0)
    m_in = _cnn(inplace=True)
    m_out = _cnn()
    m_out.load_state_dict(m_in.state_dict())
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(DeepLift(m_in).attribute(x, target=0), ca.DeepLift(m_out).attribute(x, target=0))


def test_gradcam_matches_hand_formula_with_relu_and_upsampling():
    m = _cnn()
    x = torch.randn(3, 1, 8, 8)
    cam = GradCAM(m, m.relu2).attribute(x, target=[2, 0, 1], upsample=False)
    acts = {}
    h = m.relu2.register_forward_hook(lambda mod, i, o: acts.setdefault("a", o))
    out = m(x)
    h.remove()
    A = acts["a"]
    g = torch.autograd.grad(out.gather(1, torch.tensor([[2], [0], [1]])).sum(), A)[0]
    hand = (g.mean((2, 3), keepdim=True) * A).sum(1, keepdim=True).relu()
    torch.testing.assert_close(cam, hand.detach(), atol=1e-6, rtol=1e-5)
    up = GradCAM(m, m.relu2).attribute(x, target=[2, 0, 1])
    assert up.shape == (3, 1, 8, 8)
    raw = GradCAM(m, m.relu2).attribute(x, target=[2, 0, 1], relu=False, upsample=False)
    ref = ca.LayerGradCam(m, m.relu2).attribute(x, target=[2, 0, 1])
    torch.testing.assert_close(raw, ref)


def test_occlusion_vs_captum_and_linear_closed_form():
    m = _cnn()
    x = torch.randn(2, 1, 8, 8)
    ours = Occlusion(m).attribute(x, target=[0, 2], sliding_window_shapes=(1, 3, 3), strides=(1, 2, 2), chunk_size=8)
    ref = ca.Occlusion(m).attribute(x, target=torch.tensor([0, 2]), sliding_window_shapes=(1, 3, 3), strides=(1, 2, 2))
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    torch.manual_seed(0)
    lin = nn.Linear(6, 2).eval()
    torch.testing.assert_close(Occlusion(lin).attribute(X, target=1, baselines=0.5),
                               (X - 0.5) * lin.weight[1].detach(), atol=1e-6, rtol=1e-5)


def test_lime_and_kernelshap_recover_linear_model_and_match_captum():
    torch.manual_seed(0)
    lin = nn.Linear(6, 2).eval()
    x = X[:2]
    expected = x * lin.weight[1].detach()
    torch.testing.assert_close(Lime(lin).attribute(x, target=1, n_samples=60, seed=0, chunk_size=30), expected,
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(KernelShap(lin).attribute(x, target=1, n_samples=60, seed=0, chunk_size=30), expected,
                               atol=1e-5, rtol=1e-4)
    # Captum's defaults (Lasso alpha=0.01, cosine kernel) do not recover the linear model; ours do
    torch.manual_seed(0)
    captum_default = ca.Lime(lin).attribute(x[:1], target=1, n_samples=60)
    assert (captum_default - expected[:1]).abs().max() > 1e-3
    # same settings as ours -> same numbers (nonlinear model, grouped features)
    m = _mlp()
    mask = torch.tensor([0, 0, 1, 1, 2, 2])
    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr._core.lime import get_exp_kernel_similarity_function

    torch.manual_seed(4)
    ref = ca.Lime(m, SkLearnLinearRegression(), get_exp_kernel_similarity_function("euclidean", 0.75 * 3**0.5)).attribute(
        x[:1], target=2, n_samples=40, feature_mask=mask.unsqueeze(0))
    ours = Lime(m).attribute(x[:1], target=2, n_samples=40, feature_mask=mask, seed=4)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    torch.manual_seed(4)
    ref = ca.KernelShap(m).attribute(x[:1], target=2, n_samples=40, feature_mask=mask.unsqueeze(0))
    torch.testing.assert_close(KernelShap(m).attribute(x[:1], target=2, n_samples=40, feature_mask=mask, seed=4), ref,
                               atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="feature_mask"):
        Lime(m).attribute(x, target=0, feature_mask=torch.tensor([0, 1]))


ALL = [
    lambda m: (Saliency(m), {}),
    lambda m: (InputXGradient(m), {}),
    lambda m: (IntegratedGradients(m), {"n_steps": 4}),
    lambda m: (SmoothGrad(m), {"n_samples": 3, "seed": 0}),
    lambda m: (GuidedBackprop(m), {}),
    lambda m: (DeepLift(m), {}),
    lambda m: (GradCAM(m, m.relu2), {}),
    lambda m: (Occlusion(m), {"sliding_window_shapes": (1, 4, 4), "strides": (1, 4, 4)}),
    lambda m: (Lime(m), {"n_samples": 5, "seed": 0, "feature_mask": torch.arange(4).view(1, 2, 2).repeat_interleave(4, 1).repeat_interleave(4, 2)}),
    lambda m: (LRP(m), {}),
    lambda m: (CLime(m), {"n_samples": 80}),
    lambda m: (LocalFunctionApproximation(m), {"setting": "kernelshap", "n_samples": 80}),
    lambda m: (KernelShap(m), {"n_samples": 5, "seed": 0, "feature_mask": torch.arange(4).view(1, 2, 2).repeat_interleave(4, 1).repeat_interleave(4, 2)}),
]


@pytest.mark.parametrize("make", ALL)
def test_hooks_removed_model_unchanged_and_errors(make):
    m = _cnn()
    sd = copy.deepcopy(m.state_dict())
    meth, kw = make(m)
    x = torch.randn(2, 1, 8, 8)
    a = meth.attribute(x, target=1, **kw)
    assert torch.isfinite(a).all()
    _no_hooks(m)
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())
    assert not m.training and all(p.requires_grad for p in m.parameters())
    with pytest.raises(TypeError, match="floating"):
        meth.attribute(x.long(), target=1, **kw)
    with pytest.raises(TypeError, match="dtype"):
        meth.attribute(x.double(), target=1, **kw)
    with pytest.raises(ValueError):
        meth.attribute(torch.randn(2, 3, 8, 8), target=1, **kw)
    with pytest.raises(ValueError, match="NaN"):
        meth.attribute(torch.full((2, 1, 8, 8), float("nan")), target=1, **kw)
    with pytest.raises(ValueError, match="one class per example"):
        meth.attribute(x, target=[1, 2, 0], **kw)
    with pytest.raises(ValueError, match="target is required"):
        meth.attribute(x, **kw)
    m.train()
    with pytest.raises(ValueError, match="training mode"):
        meth.attribute(x, target=1, **kw)
    m.eval()
    _no_hooks(m)


@pytest.mark.parametrize("make", ALL)
def test_hooks_removed_when_model_raises(make):
    torch.manual_seed(0)
    m = Exploding().eval()
    meth, kw = make(m)
    with pytest.raises(RuntimeError, match="boom"):
        meth.attribute(torch.randn(2, 1, 8, 8), target=0, **kw)
    _no_hooks(m)


def test_lrp_flatten_handled_equals_view_and_ixg_on_bias_free_relu_net():
    class ViewNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.r, self.fc = nn.Conv2d(1, 4, 3, bias=False), nn.ReLU(), nn.Linear(4 * 6 * 6, 3, bias=False)

        def forward(self, x):
            return self.fc(self.r(self.c(x)).view(x.shape[0], -1))

    class FlatNet(ViewNet):
        def __init__(self):
            super().__init__()
            self.fl = nn.Flatten()

        def forward(self, x):
            return self.fc(self.fl(self.r(self.c(x))))

    torch.manual_seed(0)
    v = ViewNet().eval()
    f = FlatNet().eval()
    f.load_state_dict(v.state_dict())
    x = torch.randn(3, 1, 8, 8)
    ref = ca.LRP(v).attribute(x, target=1)
    ours = LRP(f).attribute(x, target=1, chunk_size=2)
    torch.testing.assert_close(ours, ref.detach())
    torch.testing.assert_close(ours, InputXGradient(v).attribute(x, target=1), atol=1e-5, rtol=1e-4)
    assert not hasattr(f.fl, "rule") and not hasattr(f.c, "rule")  # caller's model untouched
    _no_hooks(f)
    with pytest.raises(ValueError, match="Addition_Module"):
        from gradlab.papers.covid_xai import ResCNN

        LRP(ResCNN().eval()).attribute(torch.randn(1, 1, 32, 32), target=0)
    with pytest.raises(ValueError, match="more than once"):
        LRP(ReusedReLU().eval()).attribute(X, target=0)
    with pytest.raises(ValueError, match="no LRP rule"):
        LRP(nn.Sequential(nn.Linear(6, 4), nn.GELU(), nn.Linear(4, 2)).eval()).attribute(X, target=0)


class _HalfSquare(nn.Module):
    """f_c(x) = 0.5 * (c + 1) * sum(x^2): the gradient is (c + 1) x, so SmoothGrad exposes the noise itself."""

    def forward(self, x):
        s = 0.5 * (x * x).sum(dim=1, keepdim=True)
        return torch.cat([s, 2 * s], dim=1)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), std=st.floats(0.0, 3.0), n=st.integers(1, 6), rows=st.integers(1, 4),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_smoothgrad_noise_equals_noise_tunnel_property(seed, std, n, rows, dtype):
    m = _HalfSquare().eval()
    x = torch.randn(rows, 5, generator=torch.Generator().manual_seed(seed % 1000), dtype=dtype)
    ours = SmoothGrad(m).attribute(x, target=1, n_samples=n, stdevs=std, seed=seed, nt_type="vargrad")
    torch.manual_seed(seed)
    ref = ca.NoiseTunnel(ca.Saliency(m)).attribute(x, target=1, nt_type="vargrad", nt_samples=n, stdevs=std,
                                                   abs=False)
    assert ours.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ours, ref.to(dtype), atol=tol * max(1.0, 4 * std * std), rtol=tol)
