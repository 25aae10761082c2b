"""Bad and edge input across gradlab.explain (issue 10): clear errors naming the argument, or a correct result.

Explicit tests for every reported case (NaN model outputs, non-differentiable models, Grad-CAM layers the forward
never calls, LevelSetTraversal source classes, targets, NaN/inf inputs, batch-size mismatches, dtypes), the
package's NaN/inf policy clause by clause, and hypothesis property tests over each public attribution class and
function: generated arguments are either valid -- then the result must equal an independent reference (Captum
for the Captum-backed methods, a closed form or scikit-learn otherwise) -- or invalid, and then the call must
raise ``ValueError``/``TypeError`` whose message names one of the invalid arguments.
"""

from __future__ import annotations

import copy
import math

import captum.attr as ca
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.metrics import f1_score, roc_auc_score
from torch import nn

import gradlab.explain as ge
from gradlab.explain import (
    LRP,
    PGD,
    CLime,
    DeepLift,
    GradCAM,
    GradCAMpp,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    KernelShap,
    LevelSetTraversal,
    Lime,
    LocalFunctionApproximation,
    MultilabelEnsemble,
    Occlusion,
    Saliency,
    SmoothGrad,
    SmoothGradCAMpp,
    attribution_mass_in_mask,
    diffroar,
    micro_f1,
    neuron_activation_profiles,
    perturbation_faithfulness,
    pixel_auroc,
    pointing_game,
    train_classifier,
    unmask_top_k,
)
from gradlab.explain.evaluation import evaluate_accuracy, mask_fraction
from gradlab.explain.gradients import gradient

torch.set_num_threads(1)
# Captum's informational warnings from the reference calls (gradlab's own wrappers silence them)
pytestmark = [pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning"),
              pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning"),
              pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU:UserWarning")]
NAN, INF = float("nan"), float("inf")
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BAD = (ValueError, TypeError)


def _mlp(seed: int = 0, d: int = 4, c: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 5), nn.ReLU(), nn.Linear(5, c)).eval()


def _linear(seed: int = 0, d: int = 4) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d, 1).eval()


class CNN(nn.Module):
    def __init__(self, c: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(3, 4, 3, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(4 * 6 * 6, c)
        self.unused = nn.Conv2d(3, 3, 1)

    def head(self, a):
        return self.fc(self.act2(self.conv2(a)).flatten(1))

    def forward(self, x):
        return self.head(self.act(self.conv(x)))


def _cnn(seed: int = 0) -> CNN:
    torch.manual_seed(seed)
    return CNN().eval()


class Wrap(nn.Module):
    """A module whose forward post-processes an MLP's logits (NaN, detach, argmax, ...)."""

    def __init__(self, kind: str, seed: int = 0):
        super().__init__()
        self.net, self.kind = _mlp(seed), kind

    def forward(self, x):
        k = self.kind
        if k == "nan":
            return self.net(x) * NAN
        if k == "plus_nan":  # additive NaN: the gradient of the output stays finite, so only an output check sees it
            return self.net(x) + NAN
        if k == "inf":
            return self.net(x) + INF
        if k == "detach":
            return self.net(x.detach())
        if k == "argmax":
            return F.one_hot(self.net(x).argmax(1), 3).float()
        if k == "no_grad":
            with torch.no_grad():
                return self.net(x)
        if k == "int":
            return self.net(x).round().long()
        if k == "tuple":
            return (self.net(x),)
        if k == "short_batch":
            return self.net(x)[:1]
        raise AssertionError(k)


X4 = torch.tensor([[0.3, -0.7, 1.1, 0.4], [-0.2, 0.5, 0.9, -1.3]])

GRADIENT_METHODS = {
    "Saliency": lambda m: (Saliency(m), {}),
    "InputXGradient": lambda m: (InputXGradient(m), {}),
    "IntegratedGradients": lambda m: (IntegratedGradients(m), {"n_steps": 4}),
    "SmoothGrad": lambda m: (SmoothGrad(m), {"n_samples": 3, "seed": 0}),
    "GuidedBackprop": lambda m: (GuidedBackprop(m), {}),
    "DeepLift": lambda m: (DeepLift(m), {}),
    "LRP": lambda m: (LRP(m), {}),
    "LFA-gradient": lambda m: (LocalFunctionApproximation(m), {"setting": "smoothgrad", "n_samples": 3}),
}
PERTURBATION_METHODS = {
    "Occlusion": lambda m: (Occlusion(m), {}),
    "Lime": lambda m: (Lime(m), {"n_samples": 30, "seed": 0}),
    "KernelShap": lambda m: (KernelShap(m), {"n_samples": 30, "seed": 0}),
    "CLime": lambda m: (CLime(m), {"n_samples": 30}),
}
ALL_METHODS = {**GRADIENT_METHODS, **PERTURBATION_METHODS}


def _names_one(err: BaseException, names) -> bool:
    return any(n in str(err) for n in names)


# ============================================================================================ explicit cases
# --- model outputs: NaN / inf (issue: Saliency on an all-NaN model returned finite attributions)


@pytest.mark.parametrize("kind", ["nan", "plus_nan", "inf"])
@pytest.mark.parametrize("method", sorted(ALL_METHODS))
def test_non_finite_model_output_raises_naming_the_model_output(method, kind):
    meth, kw = ALL_METHODS[method](Wrap(kind).eval())
    with pytest.raises(ValueError, match="the model's output contains (NaN|inf)"):
        meth.attribute(X4, target=0, **kw)


def test_plus_nan_saliency_was_the_silent_case():
    """The reported case: the gradient of f + NaN is finite, so Captum alone returns finite attributions."""
    m = Wrap("plus_nan").eval()
    raw = ca.Saliency(m).attribute(X4.clone(), target=0, abs=False)
    assert bool(torch.isfinite(raw).all())  # Captum: silent
    with pytest.raises(ValueError, match="model's output contains NaN"):
        Saliency(m).attribute(X4, target=0)
    with pytest.raises(ValueError, match="model's output contains NaN"):
        gradient(m, X4, 0)


def test_non_finite_output_only_on_perturbed_batches_is_caught():
    """The output check runs on every batch a method evaluates, not only on the inputs."""
    net = _mlp()

    def near_zero_nan(x):  # finite on the inputs, NaN on any row with a zero coordinate (baseline 0)
        out = net(x)
        return torch.where((x == 0).any(1, keepdim=True), torch.full_like(out, NAN), out)

    def far_nan(x):  # NaN far from the data: only large noise reaches it
        out = net(x)
        return torch.where((x.abs() > 20).any(1, keepdim=True), torch.full_like(out, NAN), out)

    torch.testing.assert_close(Saliency(near_zero_nan).attribute(X4, target=1),
                               ca.Saliency(net).attribute(X4.clone(), target=1, abs=False))
    for meth, kw in ((Occlusion(near_zero_nan), {}), (KernelShap(near_zero_nan), {"n_samples": 20, "seed": 0}),
                     (Lime(near_zero_nan), {"n_samples": 20, "seed": 0}),
                     (LocalFunctionApproximation(near_zero_nan), {"setting": "occlusion"})):
        with pytest.raises(ValueError, match="model's output contains NaN"):
            meth.attribute(X4, target=1, **kw)
    with pytest.raises(ValueError, match="model's output contains NaN"):
        SmoothGrad(far_nan).attribute(X4, target=1, n_samples=20, stdevs=100.0, seed=0)
    SmoothGrad(far_nan).attribute(X4, target=1, n_samples=5, stdevs=0.01, seed=0)  # small noise: fine


def test_non_finite_gradient_raises():
    f = lambda x: torch.sqrt(x).sum(1)  # noqa: E731  (infinite derivative at 0)
    with pytest.raises(ValueError, match="Saliency produced NaN or inf"):
        Saliency(f).attribute(torch.tensor([[0.0, 1.0], [1.0, 4.0]]))
    torch.testing.assert_close(Saliency(f).attribute(torch.tensor([[1.0, 4.0]])), torch.tensor([[0.5, 0.25]]))


# --- non-differentiable / input-detaching models


@pytest.mark.parametrize("kind", ["detach", "argmax", "no_grad", "int"])
@pytest.mark.parametrize("method", sorted(GRADIENT_METHODS))
def test_non_differentiable_model_is_a_clear_error(method, kind):
    meth, kw = GRADIENT_METHODS[method](Wrap(kind).eval())
    with pytest.raises(ValueError, match="does not depend differentiably on (`inputs`|its input)"):
        meth.attribute(X4, target=0, **kw)


@pytest.mark.parametrize("kind", ["detach", "argmax", "no_grad"])
def test_perturbation_methods_explain_non_differentiable_models(kind):
    m = Wrap(kind).eval()
    torch.testing.assert_close(Occlusion(m).attribute(X4, target=0),
                               ca.Occlusion(m).attribute(X4.clone(), sliding_window_shapes=(1,), target=0))


def test_function_without_any_gradient_path():
    with pytest.raises(ValueError, match="does not depend differentiably on `inputs`"):
        Saliency(lambda x: torch.ones(x.shape[0], 3)).attribute(X4, target=0)
    with pytest.raises(ValueError, match="does not depend differentiably on `inputs`"):
        gradient(lambda x: _mlp()(x.detach()), X4, target=0)


@pytest.mark.parametrize("kind,match", [("tuple", "must be a tensor"), ("short_batch", "one row per input row")])
@pytest.mark.parametrize("method", ["Saliency", "IntegratedGradients", "Occlusion", "SmoothGrad"])
def test_malformed_model_outputs(method, kind, match):
    meth, kw = ALL_METHODS[method](Wrap(kind).eval())
    with pytest.raises(BAD, match=match):
        meth.attribute(X4, target=0, **kw)


# --- Grad-CAM family: one shared layer check


@pytest.mark.parametrize("cls", [GradCAM, GradCAMpp, SmoothGradCAMpp])
def test_unused_layer_is_the_same_clear_error_for_every_cam(cls):
    m = _cnn()
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(ValueError, match=r"layer Conv2d \('unused'\) was not called during the forward pass"):
        cls(m, m.unused).attribute(x, target=0)
    with pytest.raises(ValueError, match="not a submodule"):
        cls(m, nn.Conv2d(1, 1, 1))
    with pytest.raises(TypeError, match="layer must be an nn.Module"):
        cls(m, "conv")


def test_unused_layer_in_activation_profiles_uses_the_same_message():
    m = _cnn()
    with pytest.raises(ValueError, match=r"Conv2d \('unused'\) was not called during the forward pass"):
        neuron_activation_profiles(m, {"u": m.unused}, torch.rand(2, 1, 6, 6), torch.tensor([0, 1]))


class DetachAfterLayer(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.conv(x).detach().mean((2, 3)))


@pytest.mark.parametrize("cls", [GradCAM, GradCAMpp, SmoothGradCAMpp])
def test_cam_with_output_detached_from_the_layer(cls):
    m = DetachAfterLayer().eval()
    with pytest.raises(ValueError, match="does not depend differentiably on the layer's activations"):
        cls(m, m.conv).attribute(torch.rand(2, 1, 6, 6), target=0)


def test_cam_options_are_checked():
    m = _cnn()
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(TypeError, match="attribute_to_layer_input"):
        GradCAM(m, m.act).attribute(x, 0, attribute_to_layer_input="yes")
    with pytest.raises(TypeError, match="feature_maps"):
        GradCAMpp(m, m.act).attribute(x, 0, feature_maps=[1.5])  # used to truncate to channel 1
    with pytest.raises(TypeError, match="feature_maps"):
        GradCAMpp(m, m.act).attribute(x, 0, feature_maps=2)
    with pytest.raises(ValueError, match="feature_maps"):
        GradCAMpp(m, m.act).attribute(x, 0, feature_maps=[3])
    with pytest.raises(ValueError, match="neurons"):
        GradCAMpp(m, m.act).attribute(x, 0, neurons=torch.full((6, 6), 0.5))
    with pytest.raises(TypeError, match="relu"):
        SmoothGradCAMpp(m, m.act).attribute(x, 0, relu=1)


# --- LevelSetTraversal


def _lst_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).eval()


SRC = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.9, 0.8, 0.7, 0.6]])
TGT = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.2, 0.1, 0.4, 0.3]])


@pytest.mark.parametrize("cls,exc,match", [
    (3, ValueError, "source_class index 3 out of range for 3 outputs"),
    (7, ValueError, "source_class index 7 out of range"),
    (-1, ValueError, "source_class indices must be non-negative"),
    (torch.tensor([0, 5]), ValueError, "source_class index 5 out of range"),
    (torch.tensor([0, -1]), ValueError, "source_class indices must be non-negative"),
    (torch.tensor([0.0, 1.0]), TypeError, "source_class must hold integer class indices"),
    (torch.tensor([0, 1, 2]), ValueError, "source_class must give one class per example"),
    (True, TypeError, "source_class"),
    (1.0, TypeError, "source_class"),
])
def test_level_set_source_class_out_of_range_or_wrong_type(cls, exc, match):
    with pytest.raises(exc, match=match):
        LevelSetTraversal(_lst_model(), n_steps=1).traverse(SRC, TGT, source_class=cls)


def test_level_set_other_bad_cases():
    lst = LevelSetTraversal(_lst_model(), n_steps=2)
    with pytest.raises(ValueError, match="model's output contains NaN"):
        LevelSetTraversal(Wrap("plus_nan").eval(), n_steps=2).traverse(SRC, TGT)
    with pytest.raises(ValueError, match="does not depend differentiably on `source`"):
        LevelSetTraversal(Wrap("detach").eval(), n_steps=2).traverse(SRC, TGT)
    with pytest.raises(ValueError, match=r"C >= 2"):
        LevelSetTraversal(nn.Linear(4, 1).eval(), n_steps=2).traverse(SRC, TGT)
    with pytest.raises(ValueError, match=r"source must lie within clip"):
        lst.traverse(SRC * 5, TGT)
    with pytest.raises(ValueError, match=r"target must lie within clip"):
        lst.traverse(SRC, TGT - 1)
    with pytest.raises(ValueError, match=r"target\[1\] equals source\[1\]"):
        lst.traverse(SRC, torch.stack([TGT[0], SRC[1]]))
    with pytest.raises(TypeError, match="clip"):
        LevelSetTraversal(_lst_model(), clip=("a", "b"))
    with pytest.raises(ValueError, match="p must be"):
        lst.traverse(SRC, TGT).distance_ratio(p=-1)
    with pytest.raises(ValueError, match="source contains inf"):
        lst.traverse(SRC + INF, TGT)
    with pytest.raises(TypeError, match="source has dtype torch.float64"):
        lst.traverse(SRC.double(), TGT.double())
    # numpy ints and 0-d tensors are classes like ints
    a = lst.traverse(SRC, TGT, source_class=np.int64(2))
    b = lst.traverse(SRC, TGT, source_class=torch.tensor(2))
    torch.testing.assert_close(a.path, b.path)
    assert a.source_class.tolist() == [2, 2]


# --- targets


@pytest.mark.parametrize("target,exc,match", [
    (3, ValueError, r"target index 3 out of range for 3 outputs \(valid: 0..2\)"),
    (-1, ValueError, "target indices must be non-negative"),
    ([0, 3], ValueError, "target index 3 out of range"),
    ([0, 1, 2], ValueError, "target must give one class per example"),
    (torch.tensor([[0], [1]]), ValueError, r"target must give one class per example \(2\).*got shape \(2, 1\)"),
    (torch.tensor([0, 1, 1]), ValueError, r"got shape \(3,\)"),
    (torch.tensor([0.0, 1.0]), TypeError,
     "target must hold integer class indices; got a tensor of dtype torch.float32"),
    (torch.tensor([True, False]), TypeError, "dtype torch.bool"),
    (1.0, TypeError, "target must be an int"),
    ("0", TypeError, "target must be an int"),
    ([0.0, 1.0], TypeError, "target sequence must contain ints"),
    (None, ValueError, "target is required"),
])
@pytest.mark.parametrize("method", ["Saliency", "IntegratedGradients", "DeepLift", "Occlusion", "KernelShap", "CLime"])
def test_bad_targets(method, target, exc, match):
    meth, kw = ALL_METHODS[method](_mlp())
    with pytest.raises(exc, match=match):
        meth.attribute(X4, target=target, **kw)


def test_numpy_and_tensor_targets_equal_int_targets():
    m = _mlp()
    ref = Saliency(m).attribute(X4, target=[2, 2])
    for t in (2, np.int64(2), torch.tensor(2), torch.tensor([2]), torch.tensor([2, 2], dtype=torch.uint8),
              np.array([2, 2])):
        torch.testing.assert_close(Saliency(m).attribute(X4, target=t), ref)


def test_cam_target_out_of_range():
    m = _cnn()
    for cls in (GradCAM, GradCAMpp, SmoothGradCAMpp):
        with pytest.raises(ValueError, match="target index 3 out of range for 3 outputs"):
            cls(m, m.act).attribute(torch.rand(2, 1, 6, 6), target=[0, 3])


# --- inputs: NaN/inf, dtype, shape


@pytest.mark.parametrize("bad,exc,match", [
    (X4.clone().index_put_((torch.tensor([1]), torch.tensor([2])), torch.tensor(NAN)), ValueError,
     r"inputs contains NaN \(in 1 of 2 rows along the first dimension, first at index 1\)"),
    (X4 + INF, ValueError, "inputs contains inf"),
    (X4.double(), TypeError, "inputs has dtype torch.float64 but the model's parameters are torch.float32"),
    (X4.half(), TypeError, "inputs has dtype torch.float16"),
    (X4.long(), TypeError, "inputs must be a floating-point tensor; got dtype torch.int64"),
    (X4.to(torch.complex64), TypeError, "inputs must be a floating-point tensor"),
    (X4[0], ValueError, r"inputs must have at least 2 dimensions \(batch first\); got shape \(4,\)"),
    (X4[:0], ValueError, "inputs has an empty batch dimension"),
    (torch.rand(2, 5), ValueError, r"the model rejected inputs of shape \(1, 5\)"),
    (X4.tolist(), TypeError, "inputs must be a torch.Tensor"),
])
@pytest.mark.parametrize("method", sorted(ALL_METHODS))
def test_bad_inputs(method, bad, exc, match):
    meth, kw = ALL_METHODS[method](_mlp())
    with pytest.raises(exc, match=match):
        meth.attribute(bad, target=0, **kw)


# --- baselines: batch-size mismatch, NaN, dtype

BASELINE_METHODS = {
    "IntegratedGradients": lambda m: (IntegratedGradients(m), {"n_steps": 4}),
    "DeepLift": lambda m: (DeepLift(m), {}),
    "Occlusion": lambda m: (Occlusion(m), {}),
    "Lime": lambda m: (Lime(m), {"n_samples": 20, "seed": 0}),
    "KernelShap": lambda m: (KernelShap(m), {"n_samples": 20, "seed": 0}),
    "LFA": lambda m: (LocalFunctionApproximation(m), {"setting": "occlusion"}),
}


@pytest.mark.parametrize("bad,exc,match", [
    (torch.zeros(3, 4), ValueError, r"baselines must have the shape of inputs \(2, 4\) \(the same batch size 2\) or "
                                    r"of one example \(4,\); got \(3, 4\)"),
    (torch.zeros(4, 1), ValueError, r"got \(4, 1\)"),
    (torch.full((2, 4), NAN), ValueError, "baselines contains NaN"),
    (INF, ValueError, "baselines is not finite"),
    (torch.zeros(2, 4, dtype=torch.bool), TypeError, "baselines must hold real numbers"),
    ([0.0] * 4, TypeError, "baselines must be None, a number or a tensor"),
    (True, TypeError, "baselines must be None, a number or a tensor"),
])
@pytest.mark.parametrize("method", sorted(BASELINE_METHODS))
def test_bad_baselines(method, bad, exc, match):
    meth, kw = BASELINE_METHODS[method](_mlp())
    with pytest.raises(exc, match=match):
        meth.attribute(X4, target=0, baselines=bad, **kw)


def test_baselines_of_another_real_dtype_are_cast():
    m = _mlp()
    ref = IntegratedGradients(m).attribute(X4, target=0, baselines=torch.ones(4), n_steps=5)
    for b in (torch.ones(4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.int64), 1, 1.0):
        torch.testing.assert_close(IntegratedGradients(m).attribute(X4, target=0, baselines=b, n_steps=5), ref)


# --- other options of the attribution classes


def test_options_of_attribution_classes():
    m = _mlp()
    cases = [
        (lambda: Saliency(m).attribute(X4, 0, abs=1), TypeError, "abs must be bool"),
        (lambda: Saliency(m).attribute(X4, 0, chunk_size=0), ValueError, "chunk_size must be >= 1"),
        (lambda: Saliency(m).attribute(X4, 0, chunk_size=1.5), TypeError, "chunk_size must be an int"),
        (lambda: IntegratedGradients(m).attribute(X4, 0, return_convergence_delta="y"), TypeError,
         "return_convergence_delta must be bool"),
        (lambda: DeepLift(m).attribute(X4, 0, return_convergence_delta=1), TypeError, "return_convergence_delta"),
        (lambda: LRP(m).attribute(X4, 0, return_convergence_delta=None), TypeError, "return_convergence_delta"),
        (lambda: SmoothGrad(m).attribute(X4, 0, value_range=(0, INF)), ValueError, r"value_range\[1\] is not finite"),
        (lambda: SmoothGrad(m).attribute(X4, 0, value_range=("a", "b")), TypeError, r"value_range\[0\]"),
        (lambda: SmoothGrad(m).attribute(X4, 0, value_range=(1, 0)), ValueError, "value_range must satisfy low < high"),
        (lambda: SmoothGrad(m).attribute(X4, 0, stdevs=NAN), ValueError, "stdevs"),
        (lambda: Occlusion(m).attribute(X4, 0, strides=0), ValueError, "strides must be >= 1"),
        (lambda: Occlusion(m).attribute(X4, 0, strides=(-1,)), ValueError, r"strides\[0\] must be >= 1"),
        (lambda: Occlusion(m).attribute(X4, 0, sliding_window_shapes=(2,), strides=(3,)), ValueError,
         "strides must not exceed sliding_window_shapes"),
        (lambda: Occlusion(m).attribute(X4, 0, sliding_window_shapes=(True,)), TypeError,
         r"sliding_window_shapes\[0\] must be an int"),
        (lambda: Lime(m).attribute(X4, 0, interpretable_model="lasso", alpha=-1.0), ValueError, "alpha"),
        (lambda: Lime(m).attribute(X4, 0, feature_mask=torch.zeros(4, dtype=torch.bool)), TypeError,
         "feature_mask must be an integer tensor.*torch.bool"),
        (lambda: Lime(m).attribute(X4, 0, feature_mask=torch.tensor([[0, 0, 1, 1], [0, 2, 2, 0]])), ValueError,
         r"feature_mask ids must be 0, 1, ..., M-1 \(consecutive\) in every row; row 1"),
        (lambda: CLime(m).attribute(X4, 0, n_samples=3), ValueError, "n_samples=3 .* underdetermined"),
        (lambda: LocalFunctionApproximation(m).attribute(X4, 0, setting="lime", n_samples=4), ValueError,
         "Use n_samples >= 5"),
        (lambda: ge.LFASetting(ge.local_approx.GaussianNoise(0.1), kernel=3), TypeError, "setting.kernel"),
        (lambda: ge.LFASetting(3), TypeError, "setting.neighbourhood"),
        (lambda: ge.lfa_preset("lime", kernel_width=-1.0), ValueError, "width"),
        (lambda: ge.local_approx.ShapleyKernel(-1.0), ValueError, "endpoint_weight"),
        (lambda: ge.local_approx.UniformScale("a", 1.0), TypeError, "low"),
        (lambda: LocalFunctionApproximation(m).attribute(
            X4, 0, setting=ge.LFASetting(ge.local_approx.BernoulliMasks(),
                                         kernel=lambda xi, x0, x: torch.zeros(xi.shape[:-1], dtype=torch.float64)),
            n_samples=20), ValueError, "setting.kernel gives weight 0 to every sample of example 0"),
        (lambda: LocalFunctionApproximation(m).attribute(
            X4, 0, setting=ge.LFASetting(ge.local_approx.BernoulliMasks(),
                                         kernel=lambda xi, x0, x: -torch.ones(xi.shape[:-1], dtype=torch.float64)),
            n_samples=20), ValueError, "weights must be >= 0"),
        (lambda: LocalFunctionApproximation(m).attribute(X4, 0, setting="lime ", n_samples=20), ValueError,
         "setting must be one of"),
        (lambda: LocalFunctionApproximation(m).attribute(X4, 0, setting="occlusion", sigma=-1.0), ValueError,
         "sigma must be finite and >= 0"),
        (lambda: ge.local_approx.weighted_least_squares(torch.rand(1, 5, 2), torch.full((1, 5), NAN),
                                                        torch.ones(1, 5), True), ValueError, "y contains NaN"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_lime_kernel_width_follows_each_rows_feature_count():
    """With masks of different M per row, each row's default width is 0.75 sqrt(M_row) (it used the max M)."""
    m = _mlp()
    mask = torch.tensor([[0, 0, 1, 1], [0, 1, 2, 3]])
    both = Lime(m).attribute(X4, 0, feature_mask=mask, n_samples=40, seed=3)
    row0 = Lime(m).attribute(X4[:1], 0, feature_mask=mask[:1], n_samples=40, seed=3,
                             kernel_width=0.75 * math.sqrt(2))
    torch.testing.assert_close(both[:1], row0)


# --- evaluation, robust, ensembles, profiles


def test_evaluation_bad_inputs():
    x = torch.rand(2, 1, 4, 4)
    a = torch.rand(2, 1, 4, 4)
    msk = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    msk[:, :, :2] = True
    cnn = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    cases = [
        (lambda: unmask_top_k(x * NAN, a, 0.5), ValueError, "inputs contains NaN"),
        (lambda: unmask_top_k(x, a, 0.5, fill=NAN), ValueError, "fill is not finite"),
        (lambda: unmask_top_k(x, a, 0.5, fill="a"), TypeError, "fill must be a real number"),
        (lambda: unmask_top_k(x, a, 0.5, fill=torch.zeros(3)), ValueError, "fill must be a number or a tensor"),
        (lambda: unmask_top_k(x, a, 0.5, largest="no"), TypeError, "largest must be bool"),
        (lambda: unmask_top_k(x[:0], a[:0], 0.5), ValueError, "at least one instance"),
        (lambda: evaluate_accuracy(cnn, x, torch.tensor([0, 1, 2])), ValueError, r"labels must have shape \(2,\)"),
        (lambda: evaluate_accuracy(cnn, x, torch.tensor([0.0, 1.0])), TypeError, "labels must hold integer"),
        (lambda: evaluate_accuracy(cnn, x, torch.tensor([0, 5])), ValueError, "labels holds class 5"),
        (lambda: evaluate_accuracy(lambda z: cnn(z) * NAN, x, torch.tensor([0, 1])), ValueError,
         "model's output contains NaN"),
        (lambda: perturbation_faithfulness(cnn, x, a, 7, 3), ValueError, "target index 7 out of range"),
        (lambda: perturbation_faithfulness(cnn, x, a, torch.tensor([0.5, 1.0]), 3), TypeError, "target must hold"),
        (lambda: perturbation_faithfulness(cnn, x, a, None, 3), TypeError, "target must be"),
        (lambda: perturbation_faithfulness(lambda z: cnn(z) + NAN, x, a, 0, 3), ValueError, "model's output"),
        (lambda: perturbation_faithfulness(cnn, x, a, 0, 3, baseline=NAN), ValueError, "baseline is not finite"),
        (lambda: perturbation_faithfulness(cnn, x, a, 0, 3, baseline=torch.zeros(3)), ValueError, "baseline must be"),
        (lambda: perturbation_faithfulness(cnn, x, a, 0, 3, largest="x"), TypeError, "largest must be bool"),
        (lambda: ge.evaluation.perturbation_curve(cnn, x, a, 0, []), ValueError, "ks must name at least one k"),
        (lambda: ge.evaluation.perturbation_curve(cnn, x, a, 0, [1.5]), TypeError, r"ks\[0\] must be an int"),
        (lambda: pixel_auroc(a, msk.float() * 0.5), ValueError, "mask must be boolean or hold only 0 and 1"),
        (lambda: pixel_auroc(a, torch.full_like(a, NAN)), ValueError, "mask contains NaN"),
        (lambda: pixel_auroc(a, msk, absolute="no"), TypeError, "absolute must be bool"),
        (lambda: attribution_mass_in_mask(a, msk[:1]), ValueError, r"mask must have one mask per attribution map"),
        (lambda: pointing_game(a, msk, valid_mask=msk[:1]), ValueError, "valid_mask must have one mask per"),
        (lambda: attribution_mass_in_mask(a, msk.long() * 2), ValueError, "mask must be boolean"),
        (lambda: mask_fraction(msk.float() * 0.3), ValueError, "mask must be boolean"),
        (lambda: diffroar(lambda *z: cnn, x, torch.tensor([0.0, 1.0]), a, x, torch.tensor([0, 1]), a), TypeError,
         "y_train must hold integer"),
        (lambda: diffroar(3, x, torch.tensor([0, 1]), a, x, torch.tensor([0, 1]), a), TypeError,
         "train_fn must be callable"),
        (lambda: diffroar(lambda *z: cnn, x, torch.tensor([0, 1]), [1], x, torch.tensor([0, 1]), a), TypeError,
         "attr_train must be a torch.Tensor"),
        (lambda: diffroar(lambda *z: cnn, x, torch.tensor([0, 1]), a, torch.rand(2, 1, 3, 3), torch.tensor([0, 1]),
                          torch.rand(2, 1, 3, 3)), ValueError, "x_train and x_test must hold instances of one shape"),
        (lambda: diffroar(lambda *z: cnn, x, torch.tensor([0, 1]), a, x, torch.tensor([0, 1]), a, progress=3),
         TypeError, "progress must be callable"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_robust_bad_inputs():
    m = _mlp()
    y = torch.tensor([0, 1])
    cases = [
        (lambda: PGD(m, eps=0.1)(X4, torch.tensor([0.0, 1.0])), TypeError, "labels must hold integer"),
        (lambda: PGD(m, eps=0.1, clip=None)(X4, torch.tensor([0, 7])), ValueError, "labels holds class 7"),
        (lambda: PGD(m, eps=0.1)(X4, torch.tensor([0, -1])), ValueError, "labels must be >= 0"),
        (lambda: PGD(m, eps=0.1, clip="ab"), TypeError, "clip"),
        (lambda: PGD(m, eps=0.1, random_start="no"), TypeError, "random_start must be bool"),
        (lambda: PGD(m, eps=0.1, loss_fn=3), TypeError, "loss_fn must be callable"),
        (lambda: PGD(Wrap("plus_nan"), eps=0.1, clip=None)(X4, y), ValueError, "model's output contains NaN"),
        (lambda: PGD(Wrap("detach"), eps=0.1, clip=None)(X4, y), ValueError, "does not depend differentiably"),
        (lambda: PGD(m, eps=0.1, clip=None, loss_fn=lambda o, t: o.sum(1))(X4, y), ValueError,
         "loss_fn must return a scalar tensor"),
        (lambda: PGD(m, eps=0.1)(X4, y), ValueError, r"inputs must lie within clip=\(0.0, 1.0\)"),
        (lambda: ge.robust.project_l2([1.0, 2.0], 1.0), TypeError, "delta must be a torch.Tensor"),
        (lambda: train_classifier(_mlp(), X4, torch.tensor([0, 7]), epochs=1), ValueError, "labels holds class 7"),
        (lambda: train_classifier(_mlp(), X4, torch.tensor([0.0, 1.0]), epochs=1), TypeError, "labels must hold"),
        (lambda: train_classifier(Wrap("plus_nan"), X4, y, epochs=1), ValueError, "model's output contains NaN"),
        (lambda: train_classifier(_mlp(), X4, y, epochs=1, progress=3), TypeError, "progress must be callable"),
        (lambda: train_classifier(_mlp(), X4, y, epochs=1, attack=3), TypeError, "attack must be PGD"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_training_loss_becoming_non_finite_stops_training():
    """The first row is fine (the up-front probe passes); the second overflows the logits, so the loss is not finite."""
    m = nn.Linear(4, 3)
    with torch.no_grad():
        m.weight.fill_(1.0)
        m.bias.zero_()
    x = torch.tensor([[0.1, 0.2, 0.3, 0.4], [3e38, 3e38, 3e38, 3e38]])  # row 2: logits 1.2e39 = inf
    with pytest.raises(ValueError, match=r"the training loss is (nan|inf) at epoch 0"):
        train_classifier(m, x, torch.tensor([0, 1]), epochs=2, batch_size=2)


def test_ensemble_and_profile_bad_inputs():
    a, b = nn.Linear(4, 3).eval(), nn.Linear(4, 2).eval()
    cnn = _cnn()
    x = torch.rand(2, 1, 6, 6)
    cases = [
        (lambda: MultilabelEnsemble(3), TypeError, "models must be a sequence of nn.Module"),
        (lambda: MultilabelEnsemble([3]), TypeError, r"models\[0\] must be an nn.Module"),
        (lambda: MultilabelEnsemble([a, b])(X4), ValueError, r"members\[1\] returns logits of shape \(2, 2\)"),
        (lambda: MultilabelEnsemble([Wrap("plus_nan").eval()]).predict(X4), ValueError,
         r"members\[0\]: the model's output"),
        (lambda: MultilabelEnsemble([a]).predict(X4 * NAN), ValueError, "x contains NaN"),
        (lambda: MultilabelEnsemble([a]).predict(X4.double()), TypeError, "x has dtype torch.float64"),
        (lambda: micro_f1("ab", "ab"), TypeError, "y_true must be a tensor"),
        (lambda: micro_f1(torch.tensor([NAN]), torch.tensor([1.0])), ValueError, "y_true contains NaN"),
        (lambda: ge.probability_average(torch.tensor([[NAN, 0.5]])), ValueError, "member_probabilities contains NaN"),
        (lambda: neuron_activation_profiles(cnn, {"c": cnn.conv}, x, torch.tensor(0)), ValueError, "groups must be"),
        (lambda: neuron_activation_profiles(cnn, {"c": cnn.conv}, x, torch.tensor([0, 1]), group_names="ab"),
         TypeError, "group_names must be a sequence"),
        (lambda: neuron_activation_profiles(cnn, {"c": None}, x, torch.tensor([0, 1])), TypeError,
         r"layers\['c'\] must be an nn.Module"),
        (lambda: neuron_activation_profiles(cnn, {"c": cnn.conv}, x, torch.tensor([[0.5, 1.0], [1.0, 0.0]])),
         ValueError, "membership matrix"),
        (lambda: neuron_activation_profiles(cnn, {"c": cnn.conv}, x, torch.tensor([0, 1])).top_maps("zz"),
         ValueError, "layer must be one of the profiled layers"),
        (lambda: neuron_activation_profiles(cnn, {"c": cnn.conv}, x * NAN, torch.tensor([0, 1])), ValueError,
         "inputs contains NaN"),
    ]
    for call, exc, match in cases:
        with pytest.raises(exc, match=match):
            call()


def test_profiles_refuse_non_finite_activations():
    class Layer(nn.Module):
        def forward(self, x):
            return x / 0.0 * 0.0  # NaN activations, but the model's output below is finite

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = Layer()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            self.layer(x)
            return self.lin(x)

    net = Net().eval()
    with pytest.raises(ValueError, match=r"activations of layers\['l'\] contains NaN"):
        neuron_activation_profiles(net, {"l": net.layer}, X4, torch.tensor([0, 1]))


# --- the package's NaN/inf policy, clause by clause


def test_nan_inf_policy_is_written_once_in_the_package_docstring():
    doc = " ".join(ge.__doc__.split())
    assert "NaN/inf policy" in doc and doc.count("NaN/inf policy") == 1
    for clause in ("(1)", "(2)", "(3)", "raises ``ValueError`` naming the argument", "every batch a method evaluates",
                   "does not depend differentiably", "raises instead of being returned"):
        assert clause in doc, clause


POLICY_INPUTS = [  # clause (1): a NaN/inf argument raises naming it
    ("inputs", lambda: Saliency(_mlp()).attribute(X4 * NAN, 0)),
    ("baselines", lambda: IntegratedGradients(_mlp()).attribute(X4, 0, baselines=NAN)),
    ("source", lambda: LevelSetTraversal(_lst_model()).traverse(SRC * NAN, TGT)),
    ("target", lambda: LevelSetTraversal(_lst_model()).traverse(SRC, TGT * INF)),
    ("fill", lambda: unmask_top_k(X4, X4, 0.5, fill=INF)),
    ("attributions", lambda: pixel_auroc(X4 * NAN, X4 > 0)),
    ("attr_test", lambda: diffroar(lambda *a: None, X4, torch.tensor([0, 1]), X4, X4, torch.tensor([0, 1]), X4 * NAN)),
    ("mask", lambda: mask_fraction(torch.full((2, 4), NAN))),
    ("noise_level", lambda: SmoothGrad(_mlp()).attribute(X4, 0, noise_level=NAN)),
    ("value_range", lambda: SmoothGrad(_mlp()).attribute(X4, 0, value_range=(0.0, INF))),
    ("x", lambda: MultilabelEnsemble([nn.Linear(4, 3).eval()]).predict(X4 * INF)),
    ("member_probabilities", lambda: ge.probability_average(torch.full((1, 2, 3), NAN))),
]


@pytest.mark.parametrize("name,call", POLICY_INPUTS, ids=[n for n, _ in POLICY_INPUTS])
def test_policy_clause_1_non_finite_arguments(name, call):
    with pytest.raises(ValueError) as err:
        call()
    assert name in str(err.value) and ("NaN" in str(err.value) or "inf" in str(err.value)
                                       or "finite" in str(err.value))


POLICY_OUTPUTS = [  # clause (2): the model's output is checked on every evaluated batch
    ("Saliency", lambda m: Saliency(m).attribute(X4, 0)),
    ("SmoothGrad", lambda m: SmoothGrad(m).attribute(X4, 0, n_samples=2)),
    ("Occlusion", lambda m: Occlusion(m).attribute(X4, 0)),
    ("LRP", lambda m: LRP(m).attribute(X4, 0)),
    ("LevelSetTraversal", lambda m: LevelSetTraversal(m, n_steps=1).traverse(SRC, TGT)),
    ("PGD", lambda m: PGD(m, eps=0.1)(SRC, torch.tensor([0, 1]))),
    ("perturbation_faithfulness", lambda m: perturbation_faithfulness(m, X4, X4, 0, 2)),
    ("evaluate_accuracy", lambda m: evaluate_accuracy(m, X4, torch.tensor([0, 1]))),
    ("neuron_activation_profiles", lambda m: neuron_activation_profiles(m, {"n": m.net}, X4, torch.tensor([0, 1]))),
    ("MultilabelEnsemble", lambda m: MultilabelEnsemble([m]).predict(X4)),
    ("train_classifier", lambda m: train_classifier(m, X4, torch.tensor([0, 1]), epochs=1)),
]


@pytest.mark.parametrize("name,call", POLICY_OUTPUTS, ids=[n for n, _ in POLICY_OUTPUTS])
def test_policy_clause_2_non_finite_model_outputs(name, call):
    with pytest.raises(ValueError, match="the model's output contains inf"):
        call(Wrap("inf").eval())


def test_policy_clause_3_non_finite_results():
    f = lambda x: torch.log(x).sum(1)  # noqa: E731
    x = torch.tensor([[1.0, 2.0], [0.5, 0.0]])
    with pytest.raises(ValueError, match="produced NaN or inf for 1 example"):
        InputXGradient(f).attribute(torch.tensor([[1.0, 2.0], [0.5, 1e-45]]))
    with pytest.raises(ValueError, match="model's output contains inf"):  # log(0) = -inf is an output already
        Saliency(f).attribute(x)
    # the documented exception: an all-zero map has an undefined mass ratio, NaN on purpose
    out = attribution_mass_in_mask(torch.zeros(1, 4), torch.tensor([[True, False, False, False]]))
    assert bool(torch.isnan(out).all())


# ============================================================================================ property tests
# Each drawn argument comes with a flag ok (False: invalid). Half of the examples draw only valid arguments
# (``valid``), the others draw from valid and invalid ones. The property: if every argument is ok the result
# equals the reference, otherwise a ValueError/TypeError names one of the invalid arguments.


def _outcome(call, bad: list[str], reference=None, atol: float = 1e-5):
    if bad:
        with pytest.raises(BAD) as err:
            call()
        assert _names_one(err.value, bad), (bad, str(err.value))
        return None
    got = call()
    if reference is not None:
        torch.testing.assert_close(got, reference(), atol=atol, rtol=1e-4)
    return got


def _pick(data, options, valid: bool):
    """Draw one ``(value, ok)`` option (only ok ones when ``valid``)."""
    return data.draw(st.sampled_from([o for o in options if o[1]] if valid else options))


def _bad(*pairs) -> list[str]:
    return [name for name, ok in pairs if not ok]


@st.composite
def targets(draw, n: int, valid: bool, c: int = 3):
    ok_kinds = ["int", "list", "tensor", "tensor0", "numpy"]
    kinds = ok_kinds if valid else ok_kinds + ["none", "big", "neg", "float", "float_tensor", "bool_tensor",
                                               "wrong_len", "col", "str"]
    kind = draw(st.sampled_from(kinds))
    ok_classes = st.integers(0, c - 1)
    if kind == "int":
        return draw(ok_classes), True
    if kind == "list":
        return draw(st.lists(ok_classes, min_size=n, max_size=n)), True
    if kind == "tensor":
        return torch.tensor(draw(st.lists(ok_classes, min_size=n, max_size=n))), True
    if kind == "tensor0":
        return torch.tensor(draw(ok_classes)), True
    if kind == "numpy":
        return np.int64(draw(ok_classes)), True
    if kind == "none":
        return None, False  # the models have C = 3 outputs: a target is required
    if kind == "big":
        return draw(st.integers(c, c + 5)), False
    if kind == "neg":
        return draw(st.integers(-5, -1)), False
    if kind == "float":
        return float(draw(ok_classes)), False
    if kind == "float_tensor":
        return torch.zeros(n), False
    if kind == "bool_tensor":
        return torch.zeros(n, dtype=torch.bool), False
    if kind == "wrong_len":
        return [0] * (n + draw(st.integers(1, 2))), False
    if kind == "col":
        return torch.zeros(n, 1, dtype=torch.long), False
    return "0", False


@st.composite
def input_batches(draw, valid: bool, shape=(4,)):
    n = draw(st.integers(1, 3))
    size = n * math.prod(shape)
    vals = draw(st.lists(st.floats(-2, 2, allow_nan=False, width=32), min_size=size, max_size=size))
    x = torch.tensor(vals, dtype=torch.float32).view(n, *shape)
    kind = "ok" if valid else draw(st.sampled_from(["ok", "nan", "inf", "float64", "int", "flat"]))
    if kind == "ok":
        return x, n, True
    if kind in ("nan", "inf"):
        x = x.clone()
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = NAN if kind == "nan" else -INF
        return x, n, False
    if kind == "float64":
        return x.double(), n, False
    if kind == "int":
        return x.long(), n, False
    return x.reshape(-1), n, False


CHUNK_SIZES = [(None, True), (1, True), (2, True), (64, True), (0, False), (-3, False), (1.5, False), ("2", False)]


@st.composite
def baselines_for(draw, n: int, valid: bool, d: int = 4):
    ok_kinds = ["none", "number", "example", "row", "batch"]
    kind = draw(st.sampled_from(ok_kinds if valid else ok_kinds + ["batch+1", "nan", "bool", "list"]))
    if kind == "none":
        return None, torch.zeros(n, d), True
    if kind == "number":
        v = draw(st.floats(-1, 1, width=32))
        return v, torch.full((n, d), v), True
    b = torch.tensor(draw(st.lists(st.floats(-1, 1, width=32), min_size=d, max_size=d)))
    if kind == "example":
        return b, b.expand(n, d), True
    if kind == "row":
        return b.view(1, d), b.expand(n, d), True
    if kind == "batch":
        bb = b.expand(n, d) * torch.arange(1, n + 1).view(n, 1) / n
        return bb, bb, True
    if kind == "batch+1":
        return b.expand(n + 1, d), None, False
    if kind == "nan":
        return b * NAN, None, False
    if kind == "bool":
        return b > 0, None, False
    return b.tolist(), None, False


def _t(target):
    """A target in Captum's format for the reference call."""
    if isinstance(target, (int, np.integer)):
        return int(target)
    t = torch.as_tensor(target).long().reshape(-1)
    return int(t) if t.numel() == 1 else t


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_saliency_inputxgradient_vs_captum(data, valid):
    m = _mlp(1)
    x, n, x_ok = data.draw(input_batches(valid))
    target, t_ok = data.draw(targets(n, valid))
    cs, cs_ok = _pick(data, CHUNK_SIZES, valid)
    abs_, abs_ok = _pick(data, [(False, True), (True, True), (1, False), ("no", False)], valid)
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("chunk_size", cs_ok), ("abs", abs_ok))
    _outcome(lambda: Saliency(m).attribute(x, target=target, abs=abs_, chunk_size=cs), bad,
             lambda: ca.Saliency(m).attribute(x.clone(), target=_t(target), abs=abs_))
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("chunk_size", cs_ok))
    _outcome(lambda: InputXGradient(m).attribute(x, target=target, chunk_size=cs), bad,
             lambda: ca.InputXGradient(m).attribute(x.clone(), target=_t(target)))


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_integrated_gradients_vs_captum(data, valid):
    m = _mlp(2)
    x, n, x_ok = data.draw(input_batches(valid))
    target, t_ok = data.draw(targets(n, valid))
    b, b_ref, b_ok = data.draw(baselines_for(n, valid))
    cs, cs_ok = _pick(data, CHUNK_SIZES, valid)
    steps, s_ok = _pick(data, [(3, True), (1, True), (0, False), (2.0, False)], valid)
    method, m_ok = _pick(data, [("gausslegendre", True), ("riemann_trapezoid", True), ("simpson", False)], valid)
    s_ok = s_ok and not (steps == 1 and method == "riemann_trapezoid")  # the trapezoid rule needs 2 nodes
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("baselines", b_ok), ("chunk_size", cs_ok), ("n_steps", s_ok),
               ("method", m_ok))
    _outcome(lambda: IntegratedGradients(m).attribute(x, target=target, baselines=b, n_steps=steps, method=method,
                                                      chunk_size=cs), bad,
             lambda: ca.IntegratedGradients(m).attribute(x.clone(), baselines=b_ref, target=_t(target), n_steps=steps,
                                                         method=method))


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_deeplift_guided_backprop_lrp_vs_captum(data, valid):
    m = _mlp(3)
    x, n, x_ok = data.draw(input_batches(valid))
    target, t_ok = data.draw(targets(n, valid))
    b, b_ref, b_ok = data.draw(baselines_for(n, valid))
    cs, cs_ok = _pick(data, CHUNK_SIZES, valid)
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("chunk_size", cs_ok))
    _outcome(lambda: GuidedBackprop(m).attribute(x, target=target, chunk_size=cs), bad,
             lambda: ca.GuidedBackprop(copy.deepcopy(m)).attribute(x.clone(), target=_t(target)))
    _outcome(lambda: LRP(m).attribute(x, target=target, chunk_size=cs), bad,
             lambda: ca.LRP(copy.deepcopy(m)).attribute(x.clone(), target=_t(target)))
    bad += _bad(("baselines", b_ok))
    _outcome(lambda: DeepLift(m).attribute(x, target=target, baselines=b, chunk_size=cs), bad,
             lambda: ca.DeepLift(copy.deepcopy(m)).attribute(x.clone(), baselines=b_ref, target=_t(target)))


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_smoothgrad_on_a_linear_model_is_its_weight(data, valid):
    """The gradient of a linear model is its weight at every noisy copy: SmoothGrad = w exactly."""
    m = _linear(4)
    x, n, x_ok = data.draw(input_batches(valid))
    target, t_ok = _pick(data, [(None, True), (0, True), ([0] * n, True), (1, False), (-1, False)], valid)
    n_samples, ns_ok = _pick(data, [(4, True), (1, True), (0, False), (2.5, False)], valid)
    level, l_ok = _pick(data, [(None, True), (0.2, True), (-0.1, False), (NAN, False)], valid)
    cs, cs_ok = _pick(data, CHUNK_SIZES, valid)
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("n_samples", ns_ok), ("noise_level", l_ok), ("chunk_size", cs_ok))
    _outcome(lambda: SmoothGrad(m).attribute(x, target=target, n_samples=n_samples, noise_level=level, seed=1,
                                             chunk_size=cs), bad, lambda: m.weight.detach().expand(n, 4))


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_occlusion_vs_captum(data, valid):
    m = _mlp(5)
    x, n, x_ok = data.draw(input_batches(valid))
    target, t_ok = data.draw(targets(n, valid))
    b, b_ref, b_ok = data.draw(baselines_for(n, valid))
    window, w_ok = _pick(data, [((1,), True), ((2,), True), ((4,), True), ((0,), False), ((5,), False),
                                ((1, 1), False), ((1.0,), False)], valid)
    stride, s_ok = _pick(data, [(None, True), (1, True), ((1,), True), (0, False), ((9,), False)], valid)
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("baselines", b_ok), ("sliding_window_shapes", w_ok),
               ("strides", s_ok))
    _outcome(lambda: Occlusion(m).attribute(x, target=target, sliding_window_shapes=window, strides=stride,
                                            baselines=b), bad,
             lambda: ca.Occlusion(m).attribute(x.clone(), sliding_window_shapes=window, strides=stride,
                                               baselines=b_ref, target=_t(target)))


MASKS = [(None, True), (torch.tensor([0, 0, 1, 1]), True), (torch.tensor([[1, 0, 0, 1]]), True),
         (torch.tensor([0, 2, 2, 0]), False), (torch.tensor([0.0, 0.0, 1.0, 1.0]), False),
         (torch.tensor([0, 1, 2]), False), (torch.tensor([True, False, True, False]), False)]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), valid=st.booleans())
def test_property_lime_kernelshap_recover_a_linear_model(data, valid):
    """On a linear model with baseline 0 both fits are exact: coefficient of feature group G = sum_{i in G} w_i x_i."""
    m = _linear(6)
    x, n, x_ok = data.draw(input_batches(valid))
    target, t_ok = _pick(data, [(0, True), (None, True), (2, False), (0.0, False)], valid)
    n_samples, ns_ok = _pick(data, [(24, True), (1, False)], valid)
    fm, fm_ok = _pick(data, MASKS, valid)
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("n_samples", ns_ok), ("feature_mask", fm_ok))

    def truth():
        wx = (m.weight.detach() * x).detach()
        if fm is None:
            return wx
        ids = fm.reshape(-1)
        return torch.zeros(n, 2).index_add_(1, ids, wx)[:, ids]

    for cls in (Lime, KernelShap):
        _outcome(lambda: cls(m).attribute(x, target=target, n_samples=n_samples, feature_mask=fm, seed=0), bad,
                 truth, atol=1e-4)


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_lfa_on_a_linear_model(data, valid):
    """Every LFA preset recovers a linear model: w (Gaussian neighbourhoods) or w * x (removal/path ones)."""
    m = _linear(7)
    x, n, x_ok = data.draw(input_batches(valid))
    target, t_ok = _pick(data, [(0, True), (None, True), (1, False)], valid)
    setting, st_ok = _pick(data, [("clime", True), ("occlusion", True), ("gradient", True),
                                  ("integrated_gradients", True), ("nope", False), (3, False)], valid)
    sigma, sg_ok = _pick(data, [(0.1, True), (0.05, True), (-0.1, False), (INF, False)], valid)
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("setting", st_ok), ("sigma", sg_ok or not isinstance(setting, str)))
    w = m.weight.detach()
    _outcome(lambda: LocalFunctionApproximation(m).attribute(x, target, setting=setting, n_samples=40, sigma=sigma),
             bad, lambda: w.expand(n, 4) if setting in ("clime", "gradient") else w * x, atol=1e-4)


@st.composite
def image_batches(draw, valid: bool):
    n = draw(st.integers(1, 2))
    x = torch.rand(n, 1, 6, 6, generator=torch.Generator().manual_seed(draw(st.integers(0, 1000))))
    kind = "ok" if valid else draw(st.sampled_from(["ok", "nan", "float64", "wrong_channels"]))
    if kind == "ok":
        return x, n, True
    if kind == "nan":
        x[0, 0, draw(st.integers(0, 5)), 0] = NAN
        return x, n, False
    if kind == "float64":
        return x.double(), n, False
    return torch.rand(n, 2, 6, 6), n, False


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_gradcam_vs_captum(data, valid):
    m = _cnn(8)
    x, n, x_ok = data.draw(image_batches(valid))
    target, t_ok = data.draw(targets(n, valid))
    relu, r_ok = _pick(data, [(True, True), (False, True), ("yes", False)], valid)
    upsample, u_ok = _pick(data, [(True, True), (False, True), (0, False)], valid)
    layer, l_ok = _pick(data, [(m.act, True), (m.conv2, True), (m.unused, False)], valid)
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("relu", r_ok), ("upsample", u_ok), ("layer", l_ok))

    def ref():
        cam = ca.LayerGradCam(m, layer).attribute(x.clone(), target=_t(target), relu_attributions=relu)
        return F.interpolate(cam, size=(6, 6), mode="bilinear", align_corners=False) if upsample else cam

    _outcome(lambda: GradCAM(m, layer).attribute(x, target=target, relu=relu, upsample=upsample), bad, ref)


def _gradcampp_reference(m: CNN, x: torch.Tensor, target) -> torch.Tensor:
    """alpha = g^2 / (2 g^2 + g^3 sum A) (piecewise-linear head), from autograd g on a hand-written forward."""
    a = m.act(m.conv(x)).detach().requires_grad_(True)
    t = _t(target)
    t = torch.full((x.shape[0],), t) if isinstance(t, int) else t
    (g,) = torch.autograd.grad(m.head(a).gather(1, t.view(-1, 1)).sum(), a)
    den = 2 * g**2 + g**3 * a.detach().sum((2, 3), keepdim=True)
    alpha = torch.where(den != 0, g**2 / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(den))
    w = (alpha * g.clamp(min=0)).sum((2, 3), keepdim=True)
    return (w * a.detach()).sum(1, keepdim=True).clamp(min=0)


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_gradcampp_and_smooth_vs_reference(data, valid):
    m = _cnn(9)
    x, n, x_ok = data.draw(image_batches(valid))
    target, t_ok = data.draw(targets(n, valid))
    fmaps, f_ok = _pick(data, [(None, True), ([0, 2], True), ([3], False), ([1.0], False), (1, False)], valid)
    bad = _bad(("inputs", x_ok), ("target", t_ok), ("feature_maps", f_ok))
    ref = (lambda: _gradcampp_reference(m, x, target)) if fmaps is None else None
    got = _outcome(lambda: GradCAMpp(m, m.act).attribute(x, target=target, upsample=False, feature_maps=fmaps),
                   bad, ref)
    # one noise-free sample of Smooth Grad-CAM++ is Grad-CAM++ exactly
    _outcome(lambda: SmoothGradCAMpp(m, m.act).attribute(x, target=target, n_samples=1, stdevs=0.0, upsample=False,
                                                         feature_maps=fmaps), bad,
             (lambda: got) if got is not None else None)


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_level_set_traversal(data, valid):
    model = _lst_model()
    n = data.draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    src, tgt = torch.rand(n, 4, generator=g), torch.rand(n, 4, generator=g)
    src_kind, src_ok = _pick(data, [("ok", True), ("nan", False), ("outside", False), ("same", False)], valid)
    if src_kind == "nan":
        src[0, 0] = NAN
    elif src_kind == "outside":
        src[0, 1] = 1.5
    elif src_kind == "same":
        tgt[-1] = src[-1]
    value, c_ok = _pick(data, [(None, True), (2, True), (torch.tensor([1] * n), True), (np.int64(0), True), (3, False),
                               (-2, False), (torch.zeros(n), False), (torch.zeros(n + 1, dtype=torch.long), False)],
                        valid)
    bad = _bad(("source", src_ok), ("source_class", c_ok)) + ([] if src_ok else ["target"])
    res = _outcome(lambda: LevelSetTraversal(model, n_steps=3, p_thresh=0.2).traverse(src, tgt, source_class=value),
                   bad)
    if res is not None:  # a correct result: the requested class, a finite path inside clip, accepted steps only
        expected = model(src).argmax(1) if value is None else torch.as_tensor(value).expand(n)
        assert torch.equal(res.source_class, expected)
        assert bool(torch.isfinite(res.path).all()) and float(res.path.min()) >= 0 and float(res.path.max()) <= 1
        moved = (res.path[1:] != res.path[:-1]).any(dim=2)
        assert bool(((res.source_confidence - res.confidences[1:])[moved] < 0.2).all())


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_localization_vs_sklearn(data, valid):
    n = data.draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    a = torch.randn(n, 1, 3, 3, generator=g)
    mask = torch.zeros(n, 1, 3, 3, dtype=torch.bool)
    mask[:, :, 0] = True
    kind, ok = _pick(data, [("bool", True), ("float01", True), ("int01", True), ("no_channel", True), ("half", False),
                            ("batch+1", False), ("nan_attr", False), ("nan_mask", False)], valid)
    m = {"bool": mask, "float01": mask.float(), "int01": mask.long(), "no_channel": mask[:, 0],
         "half": mask.float() * 0.5, "batch+1": mask[:1].expand(n + 1, 1, 3, 3), "nan_attr": mask,
         "nan_mask": torch.where(mask, NAN, 0.0)}[kind]
    if kind == "nan_attr":
        a[0, 0, 1, 1] = NAN
    bad = _bad(("attributions" if kind == "nan_attr" else "mask", ok))
    got = _outcome(lambda: pixel_auroc(a, m), bad)
    if got is not None:
        ref = [roc_auc_score(mask[i].flatten().numpy(), a[i].abs().flatten().numpy()) for i in range(n)]
        torch.testing.assert_close(got.double(), torch.tensor(ref, dtype=torch.float64), atol=1e-6, rtol=0)
        mass = attribution_mass_in_mask(a, m)
        torch.testing.assert_close(mass, (a.abs() * mask).flatten(1).sum(1) / a.abs().flatten(1).sum(1))
        hit = pointing_game(a, m)
        torch.testing.assert_close(hit, mask.flatten(1).gather(1, a.abs().flatten(1).argmax(1, keepdim=True))[:, 0]
                                   .float())


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_unmask_and_faithfulness(data, valid):
    n = data.draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 10_000)))
    x, a = torch.rand(n, 4, generator=g), torch.randn(n, 4, generator=g)
    frac, f_ok = _pick(data, [(0.5, True), (1.0, True), (0.0, False), (1.5, False), (NAN, False)], valid)
    fill, fill_ok = _pick(data, [(0.0, True), (torch.full((4,), -1.0), True), (NAN, False), (torch.zeros(3), False),
                                 ("x", False)], valid)
    out = _outcome(lambda: unmask_top_k(x, a, frac, fill=fill, seed=None), _bad(("fraction", f_ok), ("fill", fill_ok)))
    if out is not None:  # exactly k = round(frac d) largest-|a| coordinates kept, the others filled
        k = max(1, round(frac * 4))
        top = a.abs().argsort(dim=1, descending=True, stable=True)[:, :k]
        keep = torch.zeros(n, 4, dtype=torch.bool).scatter_(1, top, True)
        torch.testing.assert_close(out, torch.where(keep, x, torch.as_tensor(fill).expand(n, 4)))
    m = _mlp(10)
    target, t_ok = data.draw(targets(n, valid))
    k, k_ok = _pick(data, [(2, True), (4, True), (0, False), (5, False)], valid)
    got = _outcome(lambda: perturbation_faithfulness(m, x, a, target, k), _bad(("target", t_ok), ("k", k_ok)))
    if got is not None:
        t = _t(target)
        t = torch.full((n,), t) if isinstance(t, int) else t
        top = a.abs().argsort(dim=1, descending=True, stable=True)[:, :k]
        sel = torch.zeros(n, 4, dtype=torch.bool).scatter_(1, top, True)
        with torch.no_grad():
            ref = (m(x).gather(1, t.view(-1, 1)) - m(torch.where(sel, 0.0, x)).gather(1, t.view(-1, 1))).abs()[:, 0]
        torch.testing.assert_close(got, ref)


@PROPS
@given(data=st.data(), valid=st.booleans())
def test_property_micro_f1_vs_sklearn_and_pgd_labels(data, valid):
    shape = (data.draw(st.integers(1, 4)), data.draw(st.integers(1, 3)))
    size = math.prod(shape)
    yt = torch.tensor(data.draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))).view(shape)
    yp = torch.tensor(data.draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))).view(shape)
    kind, ok = _pick(data, [("int", True), ("bool", True), ("float", True), ("two", False), ("nan", False),
                            ("shape", False)], valid)
    yt_in = {"int": yt, "bool": yt.bool(), "float": yt.float(), "two": yt * 2 + 2, "nan": yt.float() * NAN,
             "shape": yt.reshape(-1)[:-1] if size > 1 else yt.reshape(1, 1, 1)}[kind]
    got = _outcome(lambda: micro_f1(yt_in, yp), _bad(("y_true", ok)))
    if got is not None:
        # sklearn reads a single column as a binary task (micro-averaging over the classes 0 and 1), so the pooled
        # multilabel count is its binary F1 there
        ref = f1_score(yt.numpy(), yp.numpy(), average="micro" if shape[1] > 1 else "binary", zero_division=0)
        assert got == pytest.approx(ref)
    # PGD: labels are validated; with eps = 0 the attack returns the inputs unchanged
    n = data.draw(st.integers(1, 3))
    labels, l_ok = _pick(data, [(torch.zeros(n, dtype=torch.long), True), (torch.tensor([2] * n), True),
                                (torch.full((n,), 3), False), (torch.zeros(n), False),
                                (torch.zeros(n + 1, dtype=torch.long), False)], valid)
    x = torch.rand(n, 4)
    out = _outcome(lambda: PGD(_mlp(11), eps=0.0, steps=2)(x, labels), _bad(("labels", l_ok)))
    if out is not None:
        torch.testing.assert_close(out, x)
