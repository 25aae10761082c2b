"""NoProp-CT and NoProp-FM against closed forms, finite differences and the discrete-time posterior."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.training import NoPropCT, NoPropFM
from gradlab.training.noprop import posterior_coefficients
from gradlab.training.noprop_continuous import MonotoneSNR, time_features


def test_schedule_is_strictly_monotone_with_exact_endpoints():
    torch.manual_seed(0)
    s = MonotoneSNR(gamma_min=-5.0, gamma_max=10.0)
    with torch.no_grad():
        s.w3.normal_()  # away from the near-linear start
    t = torch.linspace(0, 1, 501, dtype=torch.float32)
    g = s.gamma(t).detach()
    assert float(g[0]) == pytest.approx(10.0, abs=1e-5) and float(g[-1]) == pytest.approx(-5.0, abs=1e-5)
    assert bool((g[1:] < g[:-1]).all())
    ab = s.alpha_bar(t).detach()
    assert torch.allclose(ab, torch.sigmoid(-g)) and torch.allclose(s.snr(t).detach(), torch.exp(-g))


def test_snr_derivative_matches_central_differences_in_float64():
    torch.manual_seed(1)
    s = MonotoneSNR().double()
    with torch.no_grad():
        s.w3.normal_()
    t = torch.tensor([0.05, 0.3, 0.5, 0.77, 0.95], dtype=torch.float64)
    h = 1e-6
    fd = (s.snr(t + h) - s.snr(t - h)).detach() / (2 * h)
    exact = s.snr_derivative(t, create_graph=False)
    assert torch.allclose(exact, fd, rtol=1e-6, atol=1e-9)
    assert bool((exact > 0).all())  # SNR rises towards the clean end t = 1


def test_time_features_closed_form():
    t = torch.tensor([0.0, 0.25])
    f = time_features(t, 4)
    expected = torch.tensor([[0.0, 0.0, 1.0, 1.0], [math.sin(math.pi / 4), math.sin(math.pi / 2),
                                                    math.cos(math.pi / 4), math.cos(math.pi / 2)]])
    assert torch.allclose(f, expected, atol=1e-6)
    with pytest.raises(ValueError, match="even"):
        time_features(t, 3)


def test_ct_sampler_uses_the_discrete_posterior_on_the_schedule_grid():
    """With a denoiser that returns u_y exactly, the CT chain is NoProp-DT's posterior mean recursion on the
    grid's alpha_bar, and ends at (a_n + b_n z) ≈ u_y: the head then sees the clean embedding."""
    torch.manual_seed(2)
    m = NoPropCT(3, 4, embedding="onehot", hidden=8).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 1])
    target = m.W_embed[y]
    m.predict_embedding = lambda x_, z_, t_: target  # an oracle denoiser
    steps = 20
    with torch.no_grad():
        m.out.weight.copy_(torch.eye(4, dtype=torch.float64))
        m.out.bias.zero_()
    logits = m(x, steps=steps)
    grid = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    ab = m.schedule.alpha_bar(grid).detach()
    a, b, _ = posterior_coefficients(ab)
    z = torch.zeros(5, 4, dtype=torch.float64)
    for k in range(steps):
        z = a[k] * target + b[k] * z
    assert torch.allclose(logits, z, atol=1e-12)
    assert torch.equal(m.predict(x, steps=steps), y)


def test_fm_euler_with_the_exact_single_class_field_lands_on_the_embedding():
    """For one class, the flow-matching field is v*(z, t) = (u - z)/(1 - t); Euler reaches z_1 = u exactly."""
    m = NoPropFM(2, 3, hidden=8).double()
    x = torch.zeros(4, 2, dtype=torch.float64)
    u = m.W_embed[1]
    m.velocity = lambda x_, z_, t_: (u - z_) / (1 - t_)[:, None]
    with torch.no_grad():
        m.out.weight.copy_(torch.eye(3, dtype=torch.float64))
        m.out.bias.zero_()
    for steps in (1, 7, 50):
        assert torch.allclose(m(x, steps=steps), u.expand(4, 3), atol=1e-12)


def test_fm_loss_is_the_flow_matching_regression():
    torch.manual_seed(3)
    m = NoPropFM(3, 4, hidden=8)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    g = torch.Generator().manual_seed(5)
    terms = m.loss_terms(x, y, generator=g)
    g = torch.Generator().manual_seed(5)
    t = torch.rand(6, generator=g)
    z0 = torch.randn(6, 4, generator=g)
    u = m.W_embed[y]
    z_t = t[:, None] * u + (1 - t[:, None]) * z0
    flow = ((m.velocity(x, z_t, t) - (u - z0)) ** 2).sum(-1).mean()
    assert torch.allclose(terms["flow"], flow) and torch.allclose(terms["total"], flow + terms["ce"])


@pytest.mark.parametrize("cls", [NoPropCT, NoPropFM])
def test_training_reduces_the_loss_and_learns_a_separable_problem(cls):
    torch.manual_seed(4)
    n, d = 256, 6
    x = torch.randn(n, d)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    m = cls(d, 4, hidden=32)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = m.training_step(x, y, opt, generator=g)["total"]
    for _ in range(300):
        last = m.training_step(x, y, opt, generator=g)["total"]
    assert last < first
    acc = float((m.predict(x, steps=20) == y).float().mean())
    assert acc > 0.8


def test_ct_gradients_reach_the_schedule_and_the_network_only_through_one_time_step():
    torch.manual_seed(5)
    m = NoPropCT(3, 4, hidden=8)
    x, y = torch.randn(8, 3), torch.randint(0, 4, (8,))
    m.loss_terms(x, y)["denoise"].backward()
    assert m.schedule.w3.grad is not None and bool(m.schedule.w3.grad.abs().sum() > 0)
    assert all(p.grad is not None for p in m.net.parameters())


def test_bad_input():
    m = NoPropCT(3, 4, hidden=8)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="x must have shape"):
        m.training_step(torch.randn(4, 5), torch.zeros(4, dtype=torch.long), opt)
    with pytest.raises(ValueError, match="y must hold class indices"):
        m.training_step(torch.randn(4, 3), torch.full((4,), 7), opt)
    with pytest.raises(ValueError, match="one label per row"):
        m.training_step(torch.randn(4, 3), torch.zeros(3, dtype=torch.long), opt)
    with pytest.raises(ValueError, match="x"):
        m(torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match="steps"):
        m(torch.randn(2, 3), steps=0)
    with pytest.raises(TypeError, match="optimizer"):
        m.training_step(torch.randn(4, 3), torch.zeros(4, dtype=torch.long), "sgd")
    with pytest.raises(ValueError, match="t must lie"):
        m.schedule.gamma(torch.tensor([1.5]))
    with pytest.raises(ValueError, match="gamma_min must be <"):
        MonotoneSNR(gamma_min=3.0, gamma_max=1.0)
    with pytest.raises(ValueError, match="onehot"):
        NoPropFM(3, 4, embed_dim=5)
    with pytest.raises(TypeError, match="schedule"):
        NoPropCT(3, 4, schedule="cosine")


@settings(max_examples=25, deadline=None)
@given(steps=st.integers(1, 30), batch=st.integers(1, 5), noise=st.booleans(), seed=st.integers(0, 2**16))
def test_samplers_return_finite_logits_of_the_right_shape(steps, batch, noise, seed):
    torch.manual_seed(seed)
    for m in (NoPropCT(3, 4, hidden=8), NoPropFM(3, 4, hidden=8)):
        out = m(torch.randn(batch, 3), steps=steps, noise=noise, generator=torch.Generator().manual_seed(seed))
        assert out.shape == (batch, 4) and bool(torch.isfinite(out).all())
