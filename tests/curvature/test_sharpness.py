import math

import pytest
import torch
from torch import nn

from gradlab.curvature import directional_sharpness

from ._models import explicit_hessian, flat_objective, tiny_batch, tiny_mlp

CE = nn.CrossEntropyLoss()


def _reference(model, batch):
    H = explicit_hessian(model, CE, batch)
    f, theta0 = flat_objective(model, CE, batch)
    theta = theta0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(theta), theta)
    model.eval()
    return H, g


def test_matches_explicit_hessian_and_taylor_formulas():
    model, batch = tiny_mlp(), tiny_batch()
    H, g = _reference(model, batch)
    d = torch.randn(g.numel(), dtype=torch.float64)
    r = directional_sharpness(model, CE, batch, d)
    u = d / d.norm()
    s, c = float(u @ H @ u), float(g @ u)
    assert r.sharpness == pytest.approx(s, rel=1e-10)
    assert r.gradient_correlation == pytest.approx(c, rel=1e-10)
    assert r.optimal_reduction == pytest.approx(c * c / (2 * s), rel=1e-10)
    assert r.optimal_step == pytest.approx(c / s, rel=1e-10)
    assert r.direction_norm == pytest.approx(float(d.norm()))
    raw = directional_sharpness(model, CE, batch, d, normalize=False)
    assert raw.sharpness == pytest.approx(float(d @ H @ d), rel=1e-10)


def test_gradient_direction_and_batched_directions():
    model, batch = tiny_mlp(), tiny_batch()
    H, g = _reference(model, batch)
    D = torch.stack([g, torch.sign(g), torch.randn_like(g)], dim=1)
    res = directional_sharpness(model, CE, batch, D)
    assert len(res) == 3
    for i, r in enumerate(res):
        u = D[:, i] / D[:, i].norm()
        assert r.sharpness == pytest.approx(float(u @ H @ u), rel=1e-9)
    assert res[0].gradient_correlation == pytest.approx(float(g.norm()), rel=1e-10)  # <g, g/|g|> = |g|
    # the quadratic model at the optimal step really decreases by optimal_reduction
    r0, u = res[0], g / g.norm()
    q = -r0.optimal_step * float(g @ u) + 0.5 * r0.optimal_step**2 * float(u @ H @ u)
    assert q == pytest.approx(-r0.optimal_reduction, rel=1e-10)


def test_list_direction_and_nonpositive_curvature():
    torch.manual_seed(0)
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.3, -0.2]], dtype=torch.float64))
    # loss = -(w x)^2 : Hessian -2 x x^T is negative semi-definite
    batch = (torch.tensor([[1.0, 2.0]], dtype=torch.float64), None)
    loss = lambda out, _: -(out**2).sum()  # noqa: E731
    r = directional_sharpness(model, loss, batch, [torch.tensor([[1.0, 2.0]], dtype=torch.float64)])
    assert r.sharpness < 0 and math.isinf(r.optimal_reduction)


def test_bad_direction():
    model, batch = tiny_mlp(), tiny_batch()
    P = sum(p.numel() for p in model.parameters())
    with pytest.raises(ValueError, match="non-zero"):
        directional_sharpness(model, CE, batch, torch.zeros(P, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        directional_sharpness(model, CE, batch, torch.ones(P + 1))
    with pytest.raises(ValueError, match="NaN"):
        directional_sharpness(model, CE, batch, torch.full((P,), float("nan")))
    with pytest.raises(TypeError):
        directional_sharpness(model, CE, batch, "x")
