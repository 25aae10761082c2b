"""SSO and TargetSurrogate (arXiv 2302.02607) against SGD, least squares, the majorisation bound and finite differences."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.training import SSO, TargetSurrogate

torch.set_num_threads(1)


def _mlp(seed: int, dtype=torch.float32) -> nn.Module:  # noqa: ANN001
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _data(seed: int, n: int = 40, dtype=torch.float32):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)


def test_one_inner_sgd_step_is_sgd_bit_for_bit():
    x, y = _data(0)
    a, b = _mlp(1), _mlp(1)
    sso = SSO(a.parameters(), eta=5.0, inner_steps=1, inner="sgd", inner_lr=0.3)
    sgd = torch.optim.SGD(b.parameters(), lr=0.3)
    ce = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(2)
    for _ in range(25):
        idx = torch.randperm(40, generator=gen)[:16]
        la = sso.step(lambda: a(x[idx]), lambda z: ce(z, y[idx]))
        sgd.zero_grad()
        lb = ce(b(x[idx]), y[idx])
        lb.backward()
        sgd.step()
        assert torch.equal(la, lb.detach())
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert sso.state["target_grad_calls"] == 25


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_many_inner_steps_on_linear_model_project_the_target_step(reduction):
    g = torch.Generator().manual_seed(0)
    n, d, k, eta = 30, 4, 2, 0.7
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, k, generator=g, dtype=torch.float64)
    lin = nn.Linear(d, k, bias=False).double()
    with torch.no_grad():
        lin.weight.normal_(generator=g)
    w0 = lin.weight.detach().clone()
    red = (lambda t: t.mean()) if reduction == "mean" else (lambda t: t.sum())

    def loss(z):  # noqa: ANN001, ANN202
        return red((z - y).square().sum(1))

    z_t = x @ w0.T
    per_example_grad = 2 * (z_t - y)
    target = z_t - eta * per_example_grad
    theta_star = torch.linalg.lstsq(x, target).solution.T
    # inner SGD with lr 1 / (largest curvature of the surrogate): converges linearly to the projection
    scale = 1.0 / n if reduction == "mean" else 1.0
    lr = 1.0 / (scale / eta * float(torch.linalg.eigvalsh(x.T @ x).max()))
    for inner, kw in (("sgd", {"inner_lr": lr}), ("armijo", {})):
        with torch.no_grad():
            lin.weight.copy_(w0)
        SSO(lin.parameters(), eta=eta, inner_steps=600, inner=inner, reduction=reduction, **kw).step(
            lambda: lin(x), loss)
        torch.testing.assert_close(lin.weight.detach(), theta_star, atol=1e-7, rtol=1e-7)


def test_majorisation_for_eta_at_most_one_over_beta():
    g = torch.Generator().manual_seed(0)
    z_t = torch.randn(20, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 5, (20,), generator=g)
    ce = nn.CrossEntropyLoss()  # softmax CE per example: Hessian diag(p) - pp^T has eigenvalues <= 1/2
    zl = z_t.clone().requires_grad_(True)
    lv = ce(zl, y)
    (gz,) = torch.autograd.grad(lv, zl)
    for eta in (2.0, 1.0, 0.3):
        sur = TargetSurrogate(z_t, gz, eta, loss_value=lv.detach())
        for s in range(50):
            z = z_t + torch.randn(z_t.shape, generator=g, dtype=torch.float64) * (0.1 + s / 5)
            assert float(sur(z)) >= float(ce(z, y)) - 1e-12
    # squared loss sum_i ||z_i - y_i||^2 is exactly quadratic with beta = 2: equality at eta = 1/2, violated above
    yt = torch.randn(20, 5, generator=g, dtype=torch.float64)
    zl = z_t.clone().requires_grad_(True)
    lv = (zl - yt).square().sum()
    (gz,) = torch.autograd.grad(lv, zl)
    z = z_t + torch.randn(z_t.shape, generator=g, dtype=torch.float64)
    exact = float((z - yt).square().sum())
    assert float(TargetSurrogate(z_t, gz, 0.5, "sum", lv.detach())(z)) == pytest.approx(exact, rel=1e-12)
    assert float(TargetSurrogate(z_t, gz, 0.4, "sum", lv.detach())(z)) > exact
    assert float(TargetSurrogate(z_t, gz, 0.6, "sum", lv.detach())(z)) < exact


def test_inner_objective_gradient_matches_finite_differences_and_closed_form():
    x, y = _data(3, n=12, dtype=torch.float64)
    model = _mlp(4, torch.float64)
    z_t = model(x).detach()
    gz = torch.randn(z_t.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    sur = TargetSurrogate(z_t, gz, 0.8)
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def objective(*ps):  # noqa: ANN002, ANN202
        h = torch.tanh(x @ ps[0].T + ps[1])
        return sur.inner(h @ ps[2].T + ps[3])

    perturbed = tuple(p + 0.3 * torch.randn_like(p) for p in params)
    assert torch.autograd.gradcheck(objective, tuple(p.detach().requires_grad_(True) for p in perturbed))
    # two inner SGD steps of SSO on a linear model equal the hand-computed updates X^T (g + s (X w - z_t) / eta)
    lin = nn.Linear(6, 3, bias=False).double()
    w = lin.weight.detach().clone()
    yy = torch.randn(12, 3, dtype=torch.float64)
    z0 = x @ w.T
    g_mean = 2 * (z0 - yy) / 12
    lr, eta = 0.1, 0.8
    for _ in range(2):
        w = w - lr * (g_mean + (x @ w.T - z0) / (12 * eta)).T @ x
    SSO(lin.parameters(), eta=eta, inner_steps=2, inner="sgd", inner_lr=lr).step(
        lambda: lin(x), lambda z: (z - yy).square().sum(1).mean())
    torch.testing.assert_close(lin.weight.detach(), w, atol=1e-12, rtol=1e-12)


def test_armijo_decreases_the_surrogate_and_resets():
    x, y = _data(6)
    model = _mlp(7)
    opt = SSO(model.parameters(), eta=5.0, inner_steps=10)
    ce = nn.CrossEntropyLoss()
    z_t = model(x).detach()
    zl = z_t.clone().requires_grad_(True)
    (gz,) = torch.autograd.grad(ce(zl, y), zl)
    sur = TargetSurrogate(z_t, gz, 5.0)
    before = float(sur.inner(z_t))
    losses = [float(opt.step(lambda: model(x), lambda z: ce(z, y))) for _ in range(5)]
    with torch.no_grad():
        assert float(ce(model(x), y)) < losses[0]
    assert 0 < opt.state["last_step_size"] <= 1.0
    # a fresh single step from the same point lowers its surrogate
    model2 = _mlp(7)
    SSO(model2.parameters(), eta=5.0, inner_steps=3).step(lambda: model2(x), lambda z: ce(z, y))
    with torch.no_grad():
        assert float(sur.inner(model2(x))) < before


def test_non_deterministic_forward_raises():
    x, y = _data(8)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    ce = nn.CrossEntropyLoss()
    opt = SSO(model.parameters(), eta=1.0, inner_steps=3, inner="sgd", inner_lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="differs from z_t"):
        opt.step(lambda: model(x), lambda z: ce(z, y))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    bn = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8, momentum=None), nn.Linear(8, 3))
    opt = SSO(bn.parameters(), eta=1.0, inner_steps=2)
    with pytest.raises(ValueError, match="differs from z_t"):
        # train-mode BN with cumulative running stats is deterministic in outputs, so mutate the batch between calls
        calls = iter(range(100))
        opt.step(lambda: bn(x + next(calls)), lambda z: ce(z, y))
    model.eval()
    SSO(model.parameters(), eta=1.0, inner_steps=3, inner="sgd", inner_lr=0.1).step(
        lambda: model(x), lambda z: ce(z, y))


def test_bad_input():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="eta"):
        SSO(p, eta=0.0, inner_steps=1)
    with pytest.raises(TypeError, match="inner_steps"):
        SSO(p, eta=1.0, inner_steps=2.0)
    with pytest.raises(ValueError, match="inner_steps"):
        SSO(p, eta=1.0, inner_steps=0)
    with pytest.raises(ValueError, match="inner"):
        SSO(p, eta=1.0, inner_steps=1, inner="adam")
    with pytest.raises(ValueError, match="inner_lr"):
        SSO(p, eta=1.0, inner_steps=1, inner="sgd")
    with pytest.raises(ValueError, match="inner_lr"):
        SSO(p, eta=1.0, inner_steps=1, inner="armijo", inner_lr=0.1)
    with pytest.raises(ValueError, match="reduction"):
        SSO(p, eta=1.0, inner_steps=1, reduction="none")
    with pytest.raises(ValueError, match="params"):
        SSO([], eta=1.0, inner_steps=1)
    with pytest.raises(TypeError, match="params"):
        SSO(p[0], eta=1.0, inner_steps=1)
    with pytest.raises(ValueError, match="require grad"):
        SSO([torch.zeros(2)], eta=1.0, inner_steps=1)
    opt = SSO(p, eta=1.0, inner_steps=2)
    with pytest.raises(TypeError, match="forward"):
        opt.step(None, lambda z: z.sum())
    with pytest.raises(TypeError, match="target_loss"):
        opt.step(lambda: p[0][None] * 1.0, 3)
    with pytest.raises(ValueError, match="scalar"):
        opt.step(lambda: p[0][None] * 1.0, lambda z: z)
    with pytest.raises(ValueError, match="NaN"):
        opt.step(lambda: p[0][None] * float("nan"), lambda z: z.sum())
    with pytest.raises(ValueError, match="NaN"):
        opt.step(lambda: p[0][None] * 1.0, lambda z: (z * float("inf")).sum())
    with pytest.raises(ValueError, match="depend on params"):
        opt.step(lambda: torch.ones(1, 2), lambda z: z.sum())
    with pytest.raises(ValueError, match="depend on params"):
        SSO(p, eta=1.0, inner_steps=1, inner="sgd", inner_lr=0.1).step(lambda: torch.ones(1, 2), lambda z: z.sum())
    z = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="grad_z"):
        TargetSurrogate(z, torch.zeros(3, 3), 1.0)
    with pytest.raises(ValueError, match="eta"):
        TargetSurrogate(z, z, -1.0)
    with pytest.raises(ValueError, match="z_t"):
        TargetSurrogate(z.clone().fill_(float("nan")), z, 1.0)
    with pytest.raises(ValueError, match="shape"):
        TargetSurrogate(z, z, 1.0)(torch.zeros(2, 2))


@pytest.mark.parametrize("m", [1, 3])
def test_target_loss_that_ignores_z_is_a_value_error_for_every_m(m):
    # the loss requires grad through a captured parameter but not through z: the same clear error for m = 1 (one
    # backward pass for grad_z and the step) and m > 1 (grad_z on a detached copy)
    w = nn.Parameter(torch.randn(2))
    before = w.detach().clone()
    opt = SSO([w], eta=1.0, inner_steps=m, inner="sgd", inner_lr=0.1)
    with pytest.raises(ValueError, match="differentiable in z"):
        opt.step(lambda: w[None] * 1.0, lambda z: (w * 2).sum())
    assert torch.equal(w.detach(), before)


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_targets_or_target_gradient_raise_before_any_change(m, bad):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    before = [t.detach().clone() for t in model.parameters()]
    opt = SSO(model.parameters(), eta=1.0, inner_steps=m, inner="sgd", inner_lr=0.1)
    x_bad = x.clone()
    x_bad[1, 2] = bad
    with pytest.raises(ValueError, match="forward\\(\\) returned NaN or inf targets"):
        opt.step(lambda: model(x_bad), lambda z: z.square().sum())
    with pytest.raises(ValueError, match="target gradient is NaN or inf"):
        opt.step(lambda: model(x), lambda z: (z * torch.tensor([bad, 1.0])).sum())
    for a, b in zip(before, model.parameters()):
        assert torch.equal(a, b)
    assert opt.state["outer_steps"] == 0


@settings(max_examples=25, deadline=None)
@given(eta=st.floats(1e-3, 1e3), m=st.integers(1, 6), inner=st.sampled_from(["armijo", "sgd"]),
       lr=st.floats(1e-4, 1.0), n=st.integers(1, 9), seed=st.integers(0, 10_000))
def test_property_step_is_finite_and_armijo_never_increases_surrogate(eta, m, inner, lr, n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g, dtype=torch.float64)
    y = torch.randn(n, 2, generator=g, dtype=torch.float64)
    lin = nn.Linear(3, 2).double()
    z_t = lin(x).detach()
    opt = SSO(lin.parameters(), eta=eta, inner_steps=m, inner=inner, inner_lr=lr if inner == "sgd" else None)

    def loss(z):  # noqa: ANN001, ANN202
        return (z - y).square().sum(1).mean()

    out = opt.step(lambda: lin(x), loss)
    assert torch.isfinite(out)
    if inner == "armijo":
        zl = z_t.clone().requires_grad_(True)
        (gz,) = torch.autograd.grad(loss(zl), zl)
        sur = TargetSurrogate(z_t, gz, eta)
        with torch.no_grad():
            assert float(sur.inner(lin(x))) <= float(sur.inner(z_t)) + 1e-12


@settings(max_examples=25, deadline=None)
@given(eta=st.one_of(st.floats(allow_nan=True), st.integers(-5, 0), st.text(max_size=2)))
def test_property_bad_eta_rejected(eta):
    import math
    ok = isinstance(eta, float) and not isinstance(eta, bool) and math.isfinite(eta) and eta > 0
    if ok:
        SSO([nn.Parameter(torch.zeros(1))], eta=eta, inner_steps=1)
    else:
        with pytest.raises((ValueError, TypeError), match="eta"):
            SSO([nn.Parameter(torch.zeros(1))], eta=eta, inner_steps=1)
