import math

import pytest
import torch
from torch import nn

from gradlab.explain.evaluation import perturbation_curve, perturbation_faithfulness


def _linear(d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(d, 3)
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, d, generator=g))
        model.bias.copy_(torch.randn(3, generator=g))
    return model.eval()


def test_removal_on_linear_model_is_closed_form():
    model = _linear()
    x = torch.randn(4, 6)
    w = model.weight[1].detach()
    attr = x * w  # gradient x input of class 1
    k = 2
    got = perturbation_faithfulness(model, x, attr, target=1, k=k, neighbourhood="removal")
    top = attr.abs().argsort(dim=1, descending=True)[:, :k]
    expected = (x.gather(1, top) * w[top]).sum(dim=1).abs()  # f(x) - f(x with top-k zeroed)
    torch.testing.assert_close(got, expected)
    # with k = 1 (no cancellation) the top coordinate changes the output at least as much as the bottom one
    top1 = perturbation_faithfulness(model, x, attr, target=1, k=1)
    bottom1 = perturbation_faithfulness(model, x, attr, target=1, k=1, largest=False)
    torch.testing.assert_close(top1, attr.abs().amax(dim=1))
    torch.testing.assert_close(bottom1, attr.abs().amin(dim=1))


def test_gaussian_on_linear_model_matches_expectation():
    model = _linear()
    x = torch.randn(3, 6)
    w = model.weight[2].detach()
    attr = w.expand_as(x).clone()
    k, sigma = 3, 0.2
    got = perturbation_faithfulness(model, x, attr, target=torch.tensor([2, 2, 2]), k=k, neighbourhood="gaussian",
                                    sigma=sigma, n_draws=20000, seed=1)
    s = w.abs().sort(descending=True).values[:k]
    expected = sigma * s.norm() * math.sqrt(2 / math.pi)  # E|N(0, sigma^2 ||w_S||^2)|
    torch.testing.assert_close(got, expected.expand(3), rtol=0.03, atol=0.0)


def test_curve_and_errors():
    model = _linear()
    x = torch.randn(5, 6)
    attr = torch.randn(5, 6)
    curve = perturbation_curve(model, x, attr, 0, ks=[1, 2, 6])
    assert curve.shape == (3,) and torch.isfinite(curve).all()
    with pytest.raises(ValueError, match="training mode"):
        perturbation_faithfulness(model.train(), x, attr, 0, k=1)
    model.eval()
    with pytest.raises(ValueError):
        perturbation_faithfulness(model, x, attr, 0, k=7)
    with pytest.raises(ValueError):
        perturbation_faithfulness(model, x, attr, 0, k=1, neighbourhood="uniform")
    with pytest.raises(ValueError, match="shape"):
        perturbation_faithfulness(model, x, attr[:, :3], 0, k=1)
    with pytest.raises(ValueError, match="target"):
        perturbation_faithfulness(model, x, attr, torch.tensor([0, 1]), k=1)
