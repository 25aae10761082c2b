"""LFA solver: model recovery on a linear model, special cases equal the direct methods, C-LIME, exact Shapley."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LinearRegression
from torch import nn

import captum.attr as ca
from gradlab.explain import InputXGradient, Saliency
from gradlab.explain.local_approx import (
    LFA_METHODS,
    BernoulliMasks,
    CLime,
    ExponentialKernel,
    GaussianNoise,
    LFASetting,
    LocalFunctionApproximation,
    ShapleyKernel,
    lfa_preset,
    weighted_least_squares,
)

torch.set_num_threads(1)
torch.manual_seed(0)
LIN = nn.Linear(5, 3).double().eval()
X = torch.randn(4, 5, dtype=torch.float64)


def _mlp():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)).double().eval()


@pytest.mark.parametrize("method", LFA_METHODS)
def test_every_method_recovers_a_linear_model(method):
    w = LIN.weight[2].detach()
    expected = w.expand_as(X) if method in ("clime", "smoothgrad", "gradient") else X * w
    got = LocalFunctionApproximation(LIN).attribute(X, target=2, setting=method, n_samples=200, seed=3)
    torch.testing.assert_close(got, expected, atol=1e-8, rtol=1e-7)


def test_special_cases_equal_the_direct_methods_on_an_mlp():
    m = _mlp()
    lfa = LocalFunctionApproximation(m)
    t = torch.tensor([0, 1, 1, 0])
    torch.testing.assert_close(lfa.attribute(X, t, "gradient"), Saliency(m).attribute(X, target=t))
    torch.testing.assert_close(lfa.attribute(X, t, "gradient_x_input"), InputXGradient(m).attribute(X, target=t))
    ig = ca.IntegratedGradients(m).attribute(X, target=t, n_steps=16, method="riemann_middle")
    torch.testing.assert_close(lfa.attribute(X, t, "integrated_gradients", n_samples=16), ig)
    occ = ca.Occlusion(m).attribute(X, target=t, sliding_window_shapes=(1,))
    torch.testing.assert_close(lfa.attribute(X, t, "occlusion"), occ.double(), atol=1e-6, rtol=1e-5)
    # SmoothGrad: the mean gradient at the neighbourhood's own samples
    gen = torch.Generator()
    gen.manual_seed(5)
    xi = torch.stack([GaussianNoise(0.3).sample(50, 5, gen, torch.float64) for _ in range(4)])
    pts = (X.unsqueeze(1) + xi).reshape(200, 5)
    sg = Saliency(m).attribute(pts, target=t.repeat_interleave(50)).view(4, 50, 5).mean(1)
    torch.testing.assert_close(lfa.attribute(X, t, lfa_preset("smoothgrad", sigma=0.3), n_samples=50, seed=5), sg)


def test_lime_and_clime_equal_sklearn_weighted_regression_on_the_same_samples():
    m = _mlp()
    x = X[:1]
    for setting, n in ((lfa_preset("lime", kernel_width=1.3), 64), (lfa_preset("clime", sigma=0.2), 64)):
        got = LocalFunctionApproximation(m).attribute(x, 1, setting, n_samples=n, seed=11)
        gen = torch.Generator()
        gen.manual_seed(11)
        xi = setting.neighbourhood.sample(n, 5, gen, torch.float64)
        pts = x + xi if setting.neighbourhood.mode == "additive" else xi * x
        y = m(pts)[:, 1].detach().numpy()
        wts = setting.kernel(xi.unsqueeze(0), x, pts.unsqueeze(0))[0].numpy()
        ref = LinearRegression().fit(xi.numpy(), y, sample_weight=wts).coef_
        np.testing.assert_allclose(got[0].numpy(), ref, atol=1e-8, rtol=1e-6)


def test_exhaustive_kernelshap_equals_brute_force_shapley_values():
    m = _mlp()
    x = X[1:2, :4].clone()
    m4 = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 1)).double().eval()
    got = LocalFunctionApproximation(m4).attribute(x, None, lfa_preset("kernelshap", exhaustive=True))
    f = lambda z: float(m4(torch.tensor(z, dtype=torch.float64).view(1, 4) * x)[0, 0])  # noqa: E731
    phi = np.zeros(4)
    for i in range(4):
        others = [j for j in range(4) if j != i]
        for k in range(4):
            for s in itertools.combinations(others, k):
                z = np.zeros(4)
                z[list(s)] = 1
                zi = z.copy()
                zi[i] = 1
                phi[i] += math.factorial(k) * math.factorial(4 - k - 1) / math.factorial(4) * (f(zi) - f(z))
    np.testing.assert_allclose(got[0].numpy(), phi, atol=1e-5)
    del m


def test_shapley_kernel_values():
    z = torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]])
    k = ShapleyKernel()(z, None, None)
    assert k[0] == 1e6 and k[3] == 1e6
    assert torch.isclose(k[1], torch.tensor(3 / (4 * 1 * 3), dtype=torch.float64))
    assert torch.isclose(k[2], torch.tensor(3 / (6 * 2 * 2), dtype=torch.float64))


def test_clime_tends_to_smoothgrad_stein():
    m = _mlp()
    x = X[:1]
    cl = CLime(m).attribute(x, target=0, n_samples=20000, sigma=0.3, seed=0)
    sg = LocalFunctionApproximation(m).attribute(x, 0, lfa_preset("smoothgrad", sigma=0.3), n_samples=20000, seed=1)
    assert (cl - sg).abs().max() < 0.03 * sg.abs().max() + 1e-3


def test_weighted_least_squares_and_bad_settings():
    torch.manual_seed(0)
    z = torch.randn(2, 30, 3, dtype=torch.float64)
    beta = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, 1.0]], dtype=torch.float64)
    y = (z * beta.unsqueeze(1)).sum(-1) + 4.0
    torch.testing.assert_close(weighted_least_squares(z, y, torch.rand(2, 30), intercept=True), beta)
    with pytest.raises(ValueError):
        LocalFunctionApproximation(LIN).attribute(X, 0, "nonsense")
    with pytest.raises(ValueError):
        LocalFunctionApproximation(LIN).attribute(X, 0, LFASetting(GaussianNoise(0.1), loss="hinge"))
    with pytest.raises(ValueError):
        BernoulliMasks(p=0.0)
    with pytest.raises(ValueError):
        GaussianNoise(-1.0)
    with pytest.raises(TypeError):
        LocalFunctionApproximation(LIN).attribute(X.float(), 0, "clime")
    k = ExponentialKernel(1.0)(torch.zeros(1, 2, 5), X[:1], X[:1].unsqueeze(1).expand(1, 2, 5))
    torch.testing.assert_close(k, torch.ones(1, 2, dtype=torch.float64))
