"""Captum's full call shape: tuple inputs, additional_forward_args and every target form, checked against Captum.

The reference is Captum itself, called with the same two-input model, the same arguments and (for the sampled
methods) the same seed: the wrappers must return exactly what Captum returns (a tuple for a tuple, a tensor for a
tensor), with their own validation in front.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import captum.attr as ca
from captum._utils.models.linear_model import SkLearnLinearRegression
from captum.attr._core.lime import get_exp_kernel_similarity_function
from hypothesis import given, settings
from hypothesis import strategies as st
from gradlab.explain import (
    LRP,
    DeepLift,
    GradCAM,
    GradCAMpp,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    Lime,
    Occlusion,
    Saliency,
    SmoothGrad,
    SmoothGradCAMpp,
)

torch.set_num_threads(1)


class TwoInputMLP(nn.Module):
    """f(x1, x2, scale) = MLP(concat(x1, x2)) * scale; ``out_shape`` (2, 3) makes the output (N, 2, 3)."""

    def __init__(self, d1=4, d2=3, c=3, out_shape=None):
        super().__init__()
        torch.manual_seed(0)
        self.out_shape = out_shape
        k = c if out_shape is None else out_shape[0] * out_shape[1]
        self.fc1 = nn.Linear(d1 + d2, 8)
        self.act1 = nn.ReLU()
        self.fc2 = nn.Linear(8, 8)
        self.act2 = nn.Tanh()
        self.fc3 = nn.Linear(8, k)

    def forward(self, x1, x2, scale=1.0):
        out = self.fc3(self.act2(self.fc2(self.act1(self.fc1(torch.cat([x1, x2], 1))))))
        out = out if self.out_shape is None else out.view((-1,) + tuple(self.out_shape))
        if isinstance(scale, torch.Tensor) and scale.ndim:
            scale = scale.reshape((-1,) + (1,) * (out.ndim - 1))
        return out * scale


class TwoInputCNN(nn.Module):
    """An image and a metadata vector; Grad-CAM explains ``conv2``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.fc = nn.Linear(5 + 2, 3)

    def forward(self, img, meta, scale=1.0):
        h = self.relu2(self.conv2(self.relu1(self.conv1(img)))).mean((2, 3))
        return self.fc(torch.cat([h, meta], 1)) * scale


N = 4
_g = torch.Generator().manual_seed(1)
X1, X2 = torch.randn(N, 4, generator=_g), torch.randn(N, 3, generator=_g)
SCALE = torch.tensor([1.0, 2.0, 0.5, 3.0]).view(N, 1)  # a per-example additional forward arg
IMG, META = torch.randn(3, 1, 6, 6, generator=_g), torch.randn(3, 2, generator=_g)

TARGETS_2D = [1, torch.tensor(2), torch.tensor([2, 1, 0, 0]), [0, 1, 2, 1]]
TARGETS_3D = [(1, 2), [(0, 1), (1, 2), (0, 0), (1, 1)]]


def _close(ours, ref, atol=1e-6, rtol=1e-5):
    if isinstance(ref, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(ref)
        for a, b in zip(ours, ref):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b.detach(), atol=atol, rtol=rtol)
    else:
        assert isinstance(ours, torch.Tensor)
        torch.testing.assert_close(ours, ref.detach(), atol=atol, rtol=rtol)


# method name -> (ours, Captum's, our options, Captum's options); both called as f(inputs, target=, **options)
GRADIENT_METHODS = {
    "Saliency": (Saliency, ca.Saliency, {}, {"abs": False}),
    "InputXGradient": (InputXGradient, ca.InputXGradient, {}, {}),
    "IntegratedGradients": (IntegratedGradients, ca.IntegratedGradients, {"n_steps": 8}, {"n_steps": 8}),
    "GuidedBackprop": (GuidedBackprop, ca.GuidedBackprop, {}, {}),
    "DeepLift": (DeepLift, ca.DeepLift, {}, {}),
    "LRP": (LRP, ca.LRP, {}, {}),
}


def _inputs(form):
    """(our inputs, our additional_forward_args) for a call form; Captum gets the same."""
    if form == "tensor":
        return torch.cat([X1, X2], 1), None
    if form == "tuple":
        return (X1, X2), None
    if form == "args_scalar":
        return (X1, X2), 2.5
    return (X1, X2), (SCALE,)


class _OneInput(nn.Module):
    """The two-input model as a function of the concatenated input, for the single-tensor form."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, z):
        return self.m(z[:, :4], z[:, 4:])


@pytest.mark.parametrize("form", ["tensor", "tuple", "args_scalar", "args_tensor"])
@pytest.mark.parametrize("target", TARGETS_2D, ids=["int", "tensor0d", "tensor", "list"])
@pytest.mark.parametrize("name", list(GRADIENT_METHODS))
def test_gradient_methods_match_captum(name, target, form):
    ours_cls, ref_cls, kw, ref_kw = GRADIENT_METHODS[name]
    m = TwoInputMLP().eval()
    model = _OneInput(m).eval() if form == "tensor" else m
    inputs, args = _inputs(form)
    ours = ours_cls(model).attribute(inputs, target=target, additional_forward_args=args, **kw)
    ref = ref_cls(model).attribute(inputs, target=target, additional_forward_args=args, **ref_kw)
    _close(ours, ref)


@pytest.mark.parametrize("target", TARGETS_3D, ids=["tuple", "list_of_tuples"])
@pytest.mark.parametrize("name", list(GRADIENT_METHODS))
def test_multidimensional_targets_match_captum(name, target):
    ours_cls, ref_cls, kw, ref_kw = GRADIENT_METHODS[name]
    m = TwoInputMLP(out_shape=(2, 3)).eval()
    ours = ours_cls(m).attribute((X1, X2), target=target, additional_forward_args=(SCALE,), **kw)
    ref = ref_cls(m).attribute((X1, X2), target=target, additional_forward_args=(SCALE,), **ref_kw)
    _close(ours, ref)


def test_chunking_slices_per_example_args_and_baselines():
    m = TwoInputMLP().eval()
    base = (torch.full((4,), 0.3), torch.randn(N, 3, generator=torch.Generator().manual_seed(5)))
    full = IntegratedGradients(m).attribute((X1, X2), target=[0, 1, 2, 1], baselines=base, n_steps=6,
                                            additional_forward_args=(SCALE,), return_convergence_delta=True)
    chunked = IntegratedGradients(m).attribute((X1, X2), target=[0, 1, 2, 1], baselines=base, n_steps=6,
                                               additional_forward_args=(SCALE,), chunk_size=12,
                                               return_convergence_delta=True)
    ref = ca.IntegratedGradients(m).attribute((X1, X2), target=[0, 1, 2, 1], n_steps=6,
                                              baselines=(base[0].expand(N, 4), base[1]),
                                              additional_forward_args=(SCALE,), return_convergence_delta=True)
    _close(full[0], ref[0])
    _close(chunked[0], ref[0])
    torch.testing.assert_close(chunked[1], ref[1].to(chunked[1].dtype), atol=1e-6, rtol=1e-5)
    for cls in (Saliency, DeepLift, LRP):
        _close(cls(m).attribute((X1, X2), target=[0, 1, 2, 1], additional_forward_args=(SCALE,), chunk_size=3),
               cls(m).attribute((X1, X2), target=[0, 1, 2, 1], additional_forward_args=(SCALE,)))


@pytest.mark.parametrize("target", [1, [0, 2, 1, 1], (1, 2), [(0, 1), (1, 2), (0, 0), (1, 1)]])
@pytest.mark.parametrize("nt_type", ["smoothgrad", "vargrad"])
@pytest.mark.parametrize("base", ["saliency", "input_x_gradient"])
def test_smoothgrad_matches_noise_tunnel(base, nt_type, target):
    multi = isinstance(target, tuple) or (isinstance(target, list) and isinstance(target[0], tuple))
    m = TwoInputMLP(out_shape=(2, 3) if multi else None).eval()
    inner = ca.Saliency(m) if base == "saliency" else ca.InputXGradient(m)
    extra = {"abs": False} if base == "saliency" else {}
    ours = SmoothGrad(m, base=base).attribute((X1, X2), target=target, n_samples=5, stdevs=(0.3, 0.1), seed=3,
                                              nt_type=nt_type, additional_forward_args=(SCALE,), chunk_size=7)
    torch.manual_seed(3)
    ref = ca.NoiseTunnel(inner).attribute((X1, X2), nt_samples=5, stdevs=(0.3, 0.1), nt_type=nt_type,
                                          target=target, additional_forward_args=(SCALE,), **extra)
    _close(ours, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("target", [2, [0, 1, 2, 1]])
def test_occlusion_matches_captum(target):
    m = TwoInputMLP().eval()
    win, strides = ((2,), (1,)), (2, 1)
    base = (0.5, torch.zeros(3))
    ours = Occlusion(m).attribute((X1, X2), target=target, sliding_window_shapes=win, strides=strides, baselines=base,
                                  additional_forward_args=(SCALE,), chunk_size=3)
    ref = ca.Occlusion(m).attribute((X1, X2), target=target, sliding_window_shapes=win, strides=strides,
                                    baselines=(0.5, torch.zeros(N, 3)), additional_forward_args=(SCALE,))
    _close(ours, ref)


@pytest.mark.parametrize("method", ["lime", "kernelshap"])
def test_lime_and_kernelshap_match_captum(method):
    m = TwoInputMLP().eval()
    masks = (torch.tensor([0, 0, 1, 2]), torch.tensor([3, 3, 4]))  # ids numbered jointly across the inputs
    base = (torch.zeros(4), 0.1)
    kw = {"target": [0, 1, 2, 1], "n_samples": 30}
    if method == "lime":
        ours = Lime(m).attribute((X1, X2), feature_mask=masks, baselines=base, seed=7,
                                 additional_forward_args=(SCALE,), **kw)
        ref_method = ca.Lime(m, SkLearnLinearRegression(),
                             get_exp_kernel_similarity_function("euclidean", 0.75 * 5 ** 0.5))
    else:
        ours = KernelShap(m).attribute((X1, X2), feature_mask=masks, baselines=base, seed=7,
                                       additional_forward_args=(SCALE,), **kw)
        ref_method = ca.KernelShap(m)
    torch.manual_seed(7)
    refs = [ref_method.attribute((X1[i:i + 1], X2[i:i + 1]), target=kw["target"][i], n_samples=30,
                                 feature_mask=(masks[0].unsqueeze(0), masks[1].unsqueeze(0)),
                                 baselines=(base[0].unsqueeze(0), base[1]),
                                 additional_forward_args=(SCALE[i:i + 1],))
            for i in range(N)]
    ref = tuple(torch.cat([r[j] for r in refs]) for j in range(2))
    _close(ours, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("target", [2, [0, 1, 2]])
@pytest.mark.parametrize("args", [None, 2.0, (torch.tensor([[1.0], [2.0], [0.5]]),)])
def test_gradcam_matches_layer_gradcam(args, target):
    m = TwoInputCNN().eval()
    ours = GradCAM(m, m.conv2).attribute((IMG, META), target=target, additional_forward_args=args, relu=False,
                                         upsample=False)
    ref = ca.LayerGradCam(m, m.conv2).attribute((IMG, META), target=target, additional_forward_args=args)
    _close(ours, ref)
    up = GradCAM(m, m.conv2).attribute((IMG, META), target=target, additional_forward_args=args)
    assert up.shape == (3, 1, 6, 6)  # upsampled to inputs[0]


def test_gradcampp_tuple_inputs_equal_the_bound_single_input_model():
    m = TwoInputCNN().eval()

    class Bound(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, img):  # the metadata of each example, its rows repeated like the noisy images'
            meta = META[:1] if img.shape[0] == 1 else META.repeat_interleave(img.shape[0] // META.shape[0], 0)
            return self.m(img, meta, 2.0)

    bound = Bound().eval()
    _close(GradCAMpp(m, m.conv2).attribute((IMG, META), target=[0, 1, 2], additional_forward_args=2.0),
           GradCAMpp(bound, m.conv2).attribute(IMG, target=[0, 1, 2]))
    # zero noise on the metadata: the image noise is the first draw of the stream, as for the single input
    ours = SmoothGradCAMpp(m, m.conv2).attribute((IMG, META), target=1, n_samples=4, stdevs=(0.2, 0.0), seed=2,
                                                 additional_forward_args=2.0, chunk_size=5)
    ref = SmoothGradCAMpp(bound, m.conv2).attribute(IMG, target=1, n_samples=4, stdevs=0.2, seed=2)
    _close(ours, ref, atol=1e-6, rtol=1e-5)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 5), d1=st.integers(1, 4), d2=st.integers(1, 4), seed=st.integers(0, 2**16),
       method=st.sampled_from(["Saliency", "InputXGradient", "IntegratedGradients", "DeepLift"]),
       chunk=st.one_of(st.none(), st.integers(1, 6)))
def test_tuple_equals_captum_and_split_of_concatenated_input_property(n, d1, d2, seed, method, chunk):
    g = torch.Generator().manual_seed(seed)
    x1, x2 = torch.randn(n, d1, generator=g), torch.randn(n, d2, generator=g)
    scale = torch.rand(n, 1, generator=g) + 0.5
    tgt = torch.randint(0, 3, (n,), generator=g)
    m = TwoInputMLP(d1, d2).eval()
    ours_cls, ref_cls, kw, ref_kw = GRADIENT_METHODS[method]
    ours = ours_cls(m).attribute((x1, x2), target=tgt, additional_forward_args=(scale,), chunk_size=chunk, **kw)
    ref = ref_cls(m).attribute((x1, x2), target=tgt, additional_forward_args=(scale,), **ref_kw)
    _close(ours, ref, atol=1e-5, rtol=1e-4)

    class Concat(nn.Module):  # the same function of one concatenated input
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, z, s):
            return self.m(z[:, :d1], z[:, d1:], s)

    whole = ours_cls(Concat().eval()).attribute(torch.cat([x1, x2], 1), target=tgt, additional_forward_args=scale,
                                                **kw)
    _close(ours, (whole[:, :d1], whole[:, d1:]), atol=1e-5, rtol=1e-4)


# --- bad tuple inputs: the argument and the position are named


def _bad_cases():
    nan = X2.clone()
    nan[1, 1] = float("nan")
    return [
        ((X1, X2[:3]), None, {}, ValueError, r"inputs\[1\] has batch size 3 .* inputs\[0\] has 4"),
        ((X1, nan), None, {}, ValueError, r"inputs\[1\] contains NaN"),
        ((X1, X2.long()), None, {}, TypeError, r"inputs\[1\] must be a floating-point tensor"),
        ((X1, X2.double()), None, {}, TypeError, r"inputs\[1\] has dtype torch.float64"),
        ((X1, X2.tolist()), None, {}, TypeError, r"inputs\[1\] must be a torch.Tensor"),
        ((X1, X2[:, 0]), None, {}, ValueError, r"inputs\[1\] must have at least 2 dimensions"),
        ((), None, {}, ValueError, "inputs is an empty tuple"),
        ([X1, X2], None, {}, TypeError, "inputs must be a torch.Tensor or a tuple of tensors"),
        ((X1, X2), (SCALE[:2],), {}, ValueError, r"additional_forward_args\[0\] has shape \(2, 1\)"),
        ((X1, X2), torch.full((N, 1), float("inf")), {}, ValueError, "additional_forward_args contains inf"),
        ((X1, X2), None, {"target": [(0, 1)] * 3}, ValueError, "one output index per example"),
        ((X1, X2), None, {"target": [(0, 1), 1, (0, 0), (1, 1)]}, TypeError, r"target\[1\] must be a tuple"),
        ((X1, X2), None, {"target": (1, 2)}, ValueError, "target indexes 2 output dimensions"),
        ((X1, X2), None, {"target": (0, 1.5)}, TypeError, "target as a tuple"),
        ((X1, X2), None, {"target": [(5, 0)] * 4}, ValueError, r"target \(output dimension 1\) index 5 out of range"),
    ]


@pytest.mark.parametrize("method", ["Saliency", "IntegratedGradients", "SmoothGrad", "DeepLift", "Occlusion",
                                    "KernelShap", "LRP"])
@pytest.mark.parametrize("case", range(len(_bad_cases())))
def test_bad_tuple_inputs_name_the_position(method, case):
    inputs, args, kw, exc, match = _bad_cases()[case]
    kw = {"target": 1, **kw}
    md = "target" in kw and kw["target"] == [(5, 0)] * 4
    m = TwoInputMLP(out_shape=(2, 3) if md else None).eval()
    cls = {"Saliency": Saliency, "IntegratedGradients": IntegratedGradients, "SmoothGrad": SmoothGrad,
           "DeepLift": DeepLift, "Occlusion": Occlusion, "KernelShap": KernelShap, "LRP": LRP}[method]
    with pytest.raises(exc, match=match):
        cls(m).attribute(inputs, additional_forward_args=args, **kw)


def test_bad_per_input_options_name_the_position():
    m = TwoInputMLP().eval()
    with pytest.raises(ValueError, match=r"baselines must give one baseline per input: 2 inputs, got 3"):
        IntegratedGradients(m).attribute((X1, X2), target=0, baselines=(0.0, 0.0, 0.0))
    with pytest.raises(TypeError, match=r"baselines for a tuple of 2 inputs must be None or a tuple"):
        DeepLift(m).attribute((X1, X2), target=0, baselines=torch.zeros(N, 4))
    with pytest.raises(ValueError, match=r"baselines\[1\] must have the shape of inputs \(4, 3\)"):
        IntegratedGradients(m).attribute((X1, X2), target=0, baselines=(None, torch.zeros(N, 4)))
    with pytest.raises(ValueError, match=r"sliding_window_shapes\[1\] must give one window size"):
        Occlusion(m).attribute((X1, X2), target=0, sliding_window_shapes=((1,), (9,)))
    with pytest.raises(ValueError, match=r"strides\[0\] must not exceed"):
        Occlusion(m).attribute((X1, X2), target=0, sliding_window_shapes=((1,), (1,)), strides=(2, 1))
    with pytest.raises(ValueError, match="feature_mask ids must be 0, 1, ..., M-1 .*across the inputs"):
        Lime(m).attribute((X1, X2), target=0, feature_mask=(torch.tensor([0, 0, 1, 1]), torch.tensor([3, 3, 3])))
    with pytest.raises(ValueError, match=r"feature_mask\[1\] must have the shape of one example \(3,\)"):
        KernelShap(m).attribute((X1, X2), target=0, feature_mask=(torch.tensor([0, 0, 1, 1]), torch.tensor([2, 2])))
    with pytest.raises(ValueError, match="stdevs as a tuple gives one value per input: 2 inputs, got 3"):
        SmoothGrad(m).attribute((X1, X2), target=0, stdevs=(0.1, 0.1, 0.1))

    class IgnoresX2(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x1, x2):
            return self.fc(x1)

    with pytest.raises(ValueError, match=r"does not depend differentiably on `inputs\[1\]`"):
        Saliency(IgnoresX2().eval()).attribute((X1, X2), target=0)


def test_non_finite_attribution_of_any_input_raises():
    class SqrtOfX2(nn.Module):  # d sqrt(x) / dx is infinite at 0
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 1)

        def forward(self, x1, x2):
            return self.fc(x1)[:, 0] + x2.abs().sqrt().sum(1)

    x2 = X2.clone()
    x2[2, 0] = 0.0
    m = SqrtOfX2().eval()
    with pytest.raises(ValueError, match="Saliency produced NaN or inf for 1 example"):
        Saliency(m).attribute((X1, x2))
    with pytest.raises(ValueError, match="IntegratedGradients produced NaN or inf"):
        IntegratedGradients(m).attribute((X1, x2), baselines=(None, x2), return_convergence_delta=True)
