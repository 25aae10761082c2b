"""Tests of NoProp-DT (arXiv 2503.24322): schedule, posterior coefficients (closed-form Gaussian conditioning and
Monte Carlo), Eq. 8 terms against a hand computation, block locality of gradients, and bad input."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.training import NoPropDT, check_alpha_bar, cosine_alpha_bar, posterior_coefficients

torch.set_num_threads(1)


def small_model(T=3, seed=0, **kw):
    torch.manual_seed(seed)
    return NoPropDT(6, 4, T=T, hidden=8, **kw)


def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 6, generator=g), torch.randint(0, 4, (n,), generator=g)


# --- schedule -------------------------------------------------------------------------------------------------
def test_cosine_schedule_matches_formula():
    T = 10
    ab = cosine_alpha_bar(T)
    t = np.arange(T + 1)
    ref = 0.999 * np.cos(np.pi / 2 * (1 - t / T)) ** 2
    ref[0] = 0.0
    np.testing.assert_allclose(ab.numpy(), ref, rtol=0, atol=1e-15)
    assert ab[0] == 0.0 and abs(float(ab[-1]) - 0.999) < 1e-15 and bool((ab[1:] > ab[:-1]).all())


def test_model_buffers_snr_weights():
    m = small_model(T=5)
    ab = cosine_alpha_bar(5).numpy()
    snr = ab / (1 - ab)
    np.testing.assert_allclose(m.snr_weight.numpy(), snr[1:] - snr[:-1], rtol=1e-6)
    assert m.snr[0] == 0.0


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([0.0, 0.5, 0.9995], dtype=torch.float64), "alpha_bar\\[T\\]"),
    (torch.tensor([0.0, 0.6, 0.5, 0.9]), "strictly increasing"),
    (torch.tensor([0.0, 0.5, 0.5, 0.9]), "strictly increasing"),
    (torch.tensor([-0.1, 0.5, 0.9]), "alpha_bar\\[0\\]"),
    (torch.tensor([0.0, float("nan"), 0.9]), "NaN"),
    (torch.tensor([0.5]), "T \\+ 1 >= 2"),
    (torch.zeros(2, 2), "dimensions"),
])
def test_bad_schedules_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        check_alpha_bar(bad)
    with pytest.raises(ValueError):
        NoPropDT(6, 4, T=bad.numel() - 1 if bad.ndim == 1 else 2, alpha_bar=bad)


def test_schedule_type_and_length_errors():
    with pytest.raises(TypeError, match="alpha_bar"):
        check_alpha_bar([0.0, 0.5])
    with pytest.raises(ValueError, match="T \\+ 1 = 4"):
        NoPropDT(6, 4, T=3, alpha_bar=cosine_alpha_bar(5))
    with pytest.raises(ValueError, match="max_alpha"):
        cosine_alpha_bar(10, max_alpha=0.9999)
    with pytest.raises(ValueError, match="T"):
        cosine_alpha_bar(0)


# --- posterior ------------------------------------------------------------------------------------------------
def gaussian_conditioning(ab_prev, ab_cur):
    """Independent reference: q(z_t, z_{t-1} | y) per coordinate (u = 1) from z_{t-1} = sqrt(α) z_t + sqrt(1-α) ε,
    then the textbook conditional z_t | z_{t-1}: mean μ_t + Σ_12/Σ_22 (z_{t-1} - μ_{t-1}), var Σ_11 - Σ_12²/Σ_22."""
    alpha = ab_prev / ab_cur
    mu = np.array([np.sqrt(ab_cur), np.sqrt(alpha) * np.sqrt(ab_cur)])
    s11 = 1 - ab_cur
    s12 = np.sqrt(alpha) * s11
    s22 = alpha * s11 + (1 - alpha)
    gain = s12 / s22
    return mu[0] - gain * mu[1], gain, s11 - s12 ** 2 / s22  # a (coefficient of u), b, c


@pytest.mark.parametrize("ab", [cosine_alpha_bar(10), torch.tensor([0.05, 0.2, 0.7, 0.95], dtype=torch.float64)])
def test_posterior_coefficients_match_gaussian_conditioning(ab):
    a, b, c = posterior_coefficients(ab)
    for t in range(1, ab.numel()):
        ra, rb, rc = gaussian_conditioning(float(ab[t - 1]), float(ab[t]))
        assert math.isclose(float(a[t - 1]), ra, rel_tol=1e-10, abs_tol=1e-12)
        assert math.isclose(float(b[t - 1]), rb, rel_tol=1e-10, abs_tol=1e-12)
        assert math.isclose(float(c[t - 1]), rc, rel_tol=1e-10, abs_tol=1e-12)
    a1, b1, c1 = float(a[0]), float(b[0]), float(c[0])
    if float(ab[0]) == 0.0:  # boundary: a_1 = sqrt(ab_1), b_1 = 0, c_1 = 1 - ab_1
        assert math.isclose(a1, math.sqrt(float(ab[1]))) and b1 == 0.0 and math.isclose(c1, 1 - float(ab[1]))


def test_posterior_moments_monte_carlo():
    """z_{t-1} ~ q(.|y), z_t = a_t u_y + b_t z_{t-1} + sqrt(c_t) ε: mean sqrt(ab_t) u_y, var 1 - ab_t, and
    Cov(z_t, z_{t-1}) = sqrt(α_{t-1}) (1 - ab_t), the joint of the forward process."""
    m = NoPropDT(6, 4, T=6, hidden=8, alpha_bar=torch.tensor([0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.99]))
    a, b, c = posterior_coefficients(m.alpha_bar.double())
    n = 200_000
    g = torch.Generator().manual_seed(0)
    y = torch.full((n,), 2, dtype=torch.long)
    u = m.W_embed[2].detach().double()
    for t in (1, 3, 6):
        z_prev = m.sample_latent(t - 1, y, g).detach().double()
        z = a[t - 1] * u + b[t - 1] * z_prev + c[t - 1].sqrt() * torch.randn(z_prev.shape, generator=g,
                                                                             dtype=torch.float64)
        abt, abp = float(m.alpha_bar[t]), float(m.alpha_bar[t - 1])
        se = math.sqrt((1 - abt) / n)
        assert torch.allclose(z.mean(0), math.sqrt(abt) * u, atol=5 * se)
        assert torch.allclose(z.var(0), torch.full((4,), 1 - abt, dtype=torch.float64), atol=5 * (1 - abt) * math.sqrt(2 / n))
        cov = ((z - z.mean(0)) * (z_prev - z_prev.mean(0))).mean(0)
        assert torch.allclose(cov, torch.full((4,), math.sqrt(abp / abt) * (1 - abt), dtype=torch.float64), atol=0.01)


def test_forward_chain_with_oracle_blocks_samples_q_of_z_T():
    """With û_t = u_y (an oracle) and noise on, the inference chain ends at z_T ~ N(sqrt(ab_T) u_y, (1 - ab_T) I)."""
    m = small_model(T=4)
    n = 100_000
    y = torch.full((n,), 1, dtype=torch.long)
    u = m.W_embed.detach()[y]
    m.predict_embedding = lambda t, x, z: u[: x.shape[0]]  # oracle replaces every block
    with torch.no_grad():
        m.out.weight.copy_(torch.eye(4))
        m.out.bias.zero_()
        z_T = m(torch.zeros(n, 6), noise=True, generator=torch.Generator().manual_seed(1)).double()
    abT = float(m.alpha_bar[-1])
    assert torch.allclose(z_T.mean(0), math.sqrt(abT) * u[0].double(), atol=5 * math.sqrt((1 - abT) / n))
    assert torch.allclose(z_T.var(0), torch.full((4,), 1 - abT, dtype=torch.float64), atol=5 * (1 - abT) * math.sqrt(2 / n))
    with torch.no_grad():  # deterministic chain: z_0 = 0 and no noise, so z_T = (Σ a_t Π b) u_y, exactly
        z_det = m(torch.zeros(3, 6)).double()
    a, b, _ = posterior_coefficients(cosine_alpha_bar(4))
    coef = 0.0
    for t in range(4):
        coef = float(a[t]) + float(b[t]) * coef
    assert torch.allclose(z_det, coef * u[:3].double(), atol=1e-6)


# --- Eq. 8 terms ----------------------------------------------------------------------------------------------
def test_loss_terms_match_hand_computation():
    ab = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)  # ab_0 > 0 so the KL term is not zero
    torch.manual_seed(3)
    m = NoPropDT(6, 4, T=2, hidden=8, eta=0.3, alpha_bar=ab, embed_dim=5)
    x, y = batch(8)
    terms = {k: v.detach() for k, v in m.loss_terms(x, y, torch.Generator().manual_seed(7)).items()}
    g = torch.Generator().manual_seed(7)  # replay the same draws in the same order: z_0, z_1, then z_T
    W = m.W_embed.detach().double().numpy()
    u = W[y.numpy()]
    abn = ab.numpy()
    snr = abn / (1 - abn)
    for t in (1, 2):
        eps = torch.randn(8, 5, generator=g).double().numpy()
        z_prev = np.sqrt(abn[t - 1]) * u + np.sqrt(1 - abn[t - 1]) * eps
        with torch.no_grad():
            logits = m.blocks[t - 1](x, torch.as_tensor(z_prev, dtype=torch.float32)).double().numpy()
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        u_hat = p @ W
        # (T/2)·η·E_t[w_t ||û_t - u||²] with E_t = (1/T)Σ_t: block t carries (η/2) w_t mean_b ||û_t - u||²
        hand = 0.5 * 0.3 * (snr[t] - snr[t - 1]) * np.mean(np.sum((u_hat - u) ** 2, 1))
        assert math.isclose(float(terms["denoise"][t - 1]), hand, rel_tol=1e-4)
    eps = torch.randn(8, 5, generator=g).double().numpy()
    z_T = np.sqrt(abn[2]) * u + np.sqrt(1 - abn[2]) * eps
    logits = z_T @ m.out.weight.detach().double().numpy().T + m.out.bias.detach().double().numpy()
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert math.isclose(float(terms["ce"]), -np.mean(logp[np.arange(8), y.numpy()]), rel_tol=1e-5)
    q0 = torch.distributions.Normal(torch.as_tensor(np.sqrt(abn[0]) * u), math.sqrt(1 - abn[0]))
    kl = torch.distributions.kl_divergence(q0, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    assert math.isclose(float(terms["kl"]), float(kl), rel_tol=1e-5)
    total = float(terms["ce"] + terms["kl"] + terms["denoise"].sum())
    assert math.isclose(float(terms["total"]), total, rel_tol=1e-6)


def test_kl_is_zero_with_alpha_bar_0_zero():
    m = small_model()
    x, y = batch()
    assert float(m.loss_terms(x, y)["kl"].detach()) == 0.0


# --- locality of gradients ------------------------------------------------------------------------------------
def test_cross_block_gradients_are_none():
    m = small_model(T=4)
    x, y = batch()
    params = [list(b.parameters()) for b in m.blocks]
    for t in range(1, 5):
        loss = m.block_loss(t, x, y, torch.Generator().manual_seed(t))
        grads = torch.autograd.grad(loss, [p for ps in params for p in ps] + [m.W_embed], allow_unused=True)
        k = 0
        for s, ps in enumerate(params, start=1):
            for gi in grads[k:k + len(ps)]:
                assert (gi is not None) == (s == t), (t, s)
            k += len(ps)
        assert grads[-1] is not None  # the shared embedding is trained by every block, as in the paper
    ce, kl = m.output_loss(y)
    grads = torch.autograd.grad(ce + kl, [p for ps in params for p in ps], allow_unused=True)
    assert all(gi is None for gi in grads)


def test_training_step_gradients_equal_full_loss_gradients():
    m = small_model(T=3)
    x, y = batch()
    torch.manual_seed(0)
    terms = m.loss_terms(x, y, torch.Generator().manual_seed(5))
    ref = torch.autograd.grad(terms["total"], list(m.parameters()))
    opt = torch.optim.SGD(m.parameters(), lr=0.0)
    out = m.training_step(x, y, opt, torch.Generator().manual_seed(5))
    for p, r in zip(m.parameters(), ref):
        assert torch.allclose(p.grad, r, rtol=1e-5, atol=1e-7)
    assert math.isclose(out["total"], float(terms["total"].detach()), rel_tol=1e-5)


def test_training_step_saves_less_than_chained_backprop_and_learns():
    torch.manual_seed(0)
    m = NoPropDT(6, 4, T=5, hidden=32)
    x, _ = batch(64)
    y = x[:, :4].argmax(1)  # a learnable rule
    torch.manual_seed(0)
    bp = NoPropDT(6, 4, T=5, hidden=32)
    np_bytes = m.training_step(x, y, torch.optim.SGD(m.parameters(), lr=0.0), measure_saved_bytes=True)
    bp_bytes = bp.backprop_step(x, y, torch.optim.SGD(bp.parameters(), lr=0.0), measure_saved_bytes=True)
    assert 0 < np_bytes["peak_saved_bytes"] < 0.5 * bp_bytes["peak_saved_bytes"]
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = [m.training_step(x, y, opt, g)["total"] for _ in range(5)]
    last = [m.training_step(x, y, opt, g)["total"] for _ in range(150)][-5:]
    assert np.mean(last) < 0.5 * np.mean(first)
    assert float((m.predict(x) == y).float().mean()) > 0.6  # posterior-chain inference far above chance (0.25)


def test_onehot_embedding_is_fixed():
    m = small_model(embedding="onehot")
    assert not isinstance(m.W_embed, nn.Parameter) and torch.equal(m.W_embed, torch.eye(4))
    assert "W_embed" not in dict(m.named_parameters())


# --- bad input ------------------------------------------------------------------------------------------------
def test_bad_input():
    m = small_model()
    x, y = batch()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="6 features"):
        m(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="dimensions"):
        m(torch.zeros(6))
    with pytest.raises(TypeError, match="floating"):
        m(torch.zeros(3, 6, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        m(torch.full((3, 6), float("nan")))
    with pytest.raises(TypeError, match="noise"):
        m(x, noise=1)
    with pytest.raises(TypeError, match="y must have dtype"):
        m.training_step(x, y.float(), opt)
    with pytest.raises(ValueError, match="class indices"):
        m.training_step(x, y + 4, opt)
    with pytest.raises(ValueError, match="one label per row"):
        m.training_step(x, y[:3], opt)
    with pytest.raises(TypeError, match="optimizer"):
        m.training_step(x, y, "adam")
    with pytest.raises(ValueError, match="t must be <= 3"):
        m.block_loss(4, x, y)
    with pytest.raises(ValueError, match="t must be >= 1"):
        m.block_loss(0, x, y)
    with pytest.raises(ValueError, match="z_prev"):
        m.block_loss(1, x, y, z_prev=torch.zeros(16, 3))
    with pytest.raises(ValueError, match="eta"):
        NoPropDT(6, 4, eta=0.0)
    with pytest.raises(ValueError, match="embedding"):
        NoPropDT(6, 4, embedding="random")
    with pytest.raises(ValueError, match="onehot"):
        NoPropDT(6, 4, embedding="onehot", embed_dim=3)
    with pytest.raises(ValueError, match="num_classes"):
        NoPropDT(6, 1)
    with pytest.raises(TypeError, match="T"):
        NoPropDT(6, 4, T=2.0)
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError):
        m.training_step(x, y + 4, opt)
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))  # validated before mutating


# --- properties -----------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(T=st.integers(1, 50), max_alpha=st.floats(1e-3, 0.999))
def test_property_cosine_posterior_identities(T, max_alpha):
    ab = cosine_alpha_bar(T, max_alpha)
    a, b, c = posterior_coefficients(ab)
    assert bool((c > 0).all()) and bool((b >= 0).all()) and bool((a > 0).all())
    torch.testing.assert_close(a + b * ab[:-1].sqrt(), ab[1:].sqrt(), rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(b ** 2 * (1 - ab[:-1]) + c, 1 - ab[1:], rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(vals=st.lists(st.floats(-0.5, 1.5, allow_nan=False), min_size=2, max_size=8))
def test_property_check_alpha_bar_accepts_exactly_valid_schedules(vals):
    t = torch.tensor(vals, dtype=torch.float64)
    valid = vals[0] >= 0 and vals[-1] <= 0.999 and all(b > a for a, b in zip(vals, vals[1:]))
    if valid:
        assert torch.equal(check_alpha_bar(t), t)
    else:
        with pytest.raises(ValueError, match="alpha_bar"):
            check_alpha_bar(t)


_MODEL = small_model()


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(st.integers(-3, 7), min_size=1, max_size=10))
def test_property_labels_valid_or_value_error(labels):
    y = torch.tensor(labels, dtype=torch.long)
    x = torch.zeros(len(labels), 6)
    if all(0 <= v < 4 for v in labels):
        terms = _MODEL.loss_terms(x, y, torch.Generator().manual_seed(0))
        assert all(bool(torch.isfinite(v).all()) for v in terms.values())
        assert _MODEL.predict(x).shape == (len(labels),)
    else:
        with pytest.raises(ValueError, match="class indices"):
            _MODEL.loss_terms(x, y)
