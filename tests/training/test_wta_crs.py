"""WTA-CRS (arXiv 2305.15265): unbiasedness at rate 1/sqrt(M), |C| against brute force, the residual-mass weights,
keep = 1 bit-identical to nn.Linear, saved bytes, convert_linear, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.training import WTACRSLinear, convert_linear, estimate_gtx, saved_tensor_bytes
from gradlab.training.wta_crs import crs_sample, deterministic_count, sample_count, wta_crs_sample


def heavy_rows(n: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    return torch.as_tensor(rng.standard_normal((n, d)) * (rng.pareto(1.5, (n, 1)) + 1.0), dtype=dtype)


def brute_force_count(p: list[float], k: int) -> int:
    """argmin over c = 0..k-1 of (1 - sum of the c largest p) / (k - c), first minimum, in plain Python."""
    total = sum(p)
    q = sorted((v / total for v in p), reverse=True)
    best_c, best = 0, math.inf
    for c in range(k):
        score = max(0.0, 1.0 - sum(q[:c])) / (k - c)
        if score < best - 1e-15:
            best_c, best = c, score
    return best_c


# --- estimator ---------------------------------------------------------------------------------------------------

def per_draw_variance(g: torch.Tensor, x: torch.Tensor, k: int, method: str) -> float:
    """E||estimate - G^T X||_F^2 of one estimate, in closed form: for i.i.d. draws j ~ q with weight m/(n q_j),
    Var = (1/n) (m^2 sum_j ||g_j||^2 ||x_j||^2 / q_j - ||S||^2) with S the sampled part and m its mass."""
    a = (torch.linalg.vector_norm(g, dim=1) * torch.linalg.vector_norm(x, dim=1)).double()
    n_rows = a.numel()
    if method == "uniform":
        q, c = torch.full((n_rows,), 1.0 / n_rows, dtype=torch.float64), 0
    else:
        q = a / a.sum()
        c = deterministic_count(q, k) if method == "wta-crs" else 0
    rest = torch.ones(n_rows, dtype=torch.bool)
    rest[torch.argsort(q, descending=True)[:c]] = False
    mass = float(q[rest].sum())
    s = g[rest].T @ x[rest]
    return (mass * float((a[rest] ** 2 / q[rest]).sum()) - float((s ** 2).sum())) / (k - c)


@pytest.mark.parametrize("method", ["wta-crs", "crs", "uniform"])
def test_mean_of_m_estimates_converges_at_rate_one_over_sqrt_m(method):
    rng = np.random.default_rng(1)
    g = torch.as_tensor(rng.standard_normal((256, 8)) * (rng.pareto(3.0, (256, 1)) + 1.0))
    x = torch.as_tensor(rng.standard_normal((256, 12)) * (rng.pareto(3.0, (256, 1)) + 1.0))
    exact = g.T @ x
    var = per_draw_variance(g, x, 32, method)
    gen = torch.Generator().manual_seed(0)
    one = estimate_gtx(g, x, 32, method, gen, draws=20000)
    assert float(((one - exact) ** 2).sum((1, 2)).mean()) / var == pytest.approx(1.0, abs=0.1)
    reps = 16
    for m in (4, 64, 1024):
        means = estimate_gtx(g, x, 32, method, gen, draws=m * reps).reshape(reps, m, 8, 12).mean(1)
        err = float(((means - exact) ** 2).sum((1, 2)).mean())  # E||mean_M - exact||^2 over the repeats
        # unbiased: E||mean_M - exact||^2 = Var / M, i.e. error ~ 1/sqrt(M); a bias b would add ||b||^2 at every M
        assert err * m / var == pytest.approx(1.0, abs=0.4), (m, err * m / var)


def test_variance_ordering_on_heavy_tailed_rows():
    g, x = heavy_rows(512, 32, 3, torch.float32), heavy_rows(512, 64, 4, torch.float32)
    exact = (g.double().T @ x.double())
    gen = torch.Generator().manual_seed(1)
    mse = {}
    for method in ("uniform", "crs", "wta-crs"):
        est = estimate_gtx(g, x, 64, method, gen, draws=1000).double()
        mse[method] = float(((est - exact) ** 2).sum((1, 2)).mean() / (exact ** 2).sum())
    assert mse["wta-crs"] < mse["crs"] < mse["uniform"]


def test_concentrated_probabilities_make_the_estimate_exact():
    g = torch.zeros(50, 3, dtype=torch.float64)
    x = torch.zeros(50, 4, dtype=torch.float64)
    g[[3, 17, 40]] = torch.randn(3, 3, dtype=torch.float64)
    x[[3, 17, 40]] = torch.randn(3, 4, dtype=torch.float64)
    idx, w, c = wta_crs_sample(torch.linalg.vector_norm(g, dim=1) * torch.linalg.vector_norm(x, dim=1), 10)
    assert c == 3 and sorted(idx.tolist()) == [3, 17, 40] and torch.equal(w, torch.ones(3, dtype=torch.float64))
    est = estimate_gtx(g, x, 10, "wta-crs", torch.Generator().manual_seed(0))
    torch.testing.assert_close(est, g.T @ x, rtol=0, atol=1e-14)


def test_zero_product_gives_zero_estimate():
    g = torch.zeros(20, 3)
    x = torch.randn(20, 4)
    for method in ("wta-crs", "crs"):
        assert torch.equal(estimate_gtx(g, x, 5, method), torch.zeros(3, 4))


@pytest.mark.parametrize("seed", range(6))
def test_deterministic_count_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    p = (rng.pareto(0.8 + seed * 0.3, 200) + 1e-3).tolist()
    for k in (1, 2, 10, 50, 200):
        assert deterministic_count(torch.tensor(p, dtype=torch.float64), k) == brute_force_count(p, k)


def test_deterministic_count_uniform_is_crs():
    assert deterministic_count(torch.ones(100, dtype=torch.float64), 10) == 0


def test_residual_mass_weights():
    p = torch.tensor([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=torch.float64)
    k = 3
    c = brute_force_count(p.tolist(), k)
    idx, w, got_c = wta_crs_sample(p, k, torch.Generator().manual_seed(0))
    assert got_c == c and idx.shape == (k,) and w.shape == (k,)
    top = torch.argsort(p, descending=True)[:c]
    assert torch.equal(idx[:c], top) and torch.equal(w[:c], torch.ones(c, dtype=torch.float64))
    mass_c = float(p[top].sum())
    for j, wj in zip(idx[c:].tolist(), w[c:].tolist()):
        assert j not in top.tolist()
        assert wj == pytest.approx((1 - mass_c) / ((k - c) * float(p[j])), rel=1e-12)


def test_crs_weights_and_uniform():
    p = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    idx, w = crs_sample(p, 5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(w, 1.0 / (5 * p[idx]))
    _, wu = crs_sample(torch.ones(8, dtype=torch.float64), 4)
    torch.testing.assert_close(wu, torch.full((4,), 2.0, dtype=torch.float64))


def test_sample_count():
    assert sample_count(0.3, 8192) == 2458
    assert sample_count(0.3, 10) == 10 and sample_count(0.3, 5) == 5 and sample_count(0.3, 40) == 12
    assert sample_count(0.1, 30) == 10 and sample_count(1.0, 7) == 7 and sample_count(0.3, 0) == 0


# --- layer -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(37, 6), (4, 9, 6), (6,)])
def test_keep_one_is_nn_linear_bit_for_bit(shape):
    torch.manual_seed(0)
    lin = nn.Linear(6, 5)
    wta = WTACRSLinear.from_linear(lin, keep=1.0)
    x = torch.randn(*shape, requires_grad=True)
    a, b = lin(x), wta(x)
    assert torch.equal(a, b)
    g = torch.randn_like(a)
    for ga, gb in zip(torch.autograd.grad(a, (x, lin.weight, lin.bias), g),
                      torch.autograd.grad(b, (x, lin.weight, lin.bias), g)):
        assert torch.equal(ga, gb)


def test_small_inputs_are_exact():
    torch.manual_seed(1)
    lin = nn.Linear(4, 3)
    wta = WTACRSLinear.from_linear(lin, keep=0.3)
    x = torch.randn(10, 4)  # k = max(3, 10) = 10 = N
    ga = torch.autograd.grad(lin(x).sum(), lin.weight)[0]
    gb = torch.autograd.grad(wta(x).sum(), lin.weight)[0]
    assert torch.equal(ga, gb)


def test_forward_input_and_bias_gradients_exact_weight_gradient_unbiased():
    torch.manual_seed(2)
    lin = nn.Linear(16, 8).double()
    wta = WTACRSLinear.from_linear(lin, keep=0.2, generator=torch.Generator().manual_seed(0))
    x = heavy_rows(200, 16, 5).requires_grad_(True)
    g = heavy_rows(200, 8, 6)
    ref = torch.autograd.grad(lin(x), (x, lin.weight, lin.bias), g)
    grads = []
    for _ in range(400):
        out = wta(x)
        assert torch.equal(out, lin(x))
        gx, gw, gb = torch.autograd.grad(out, (x, lin.weight, lin.bias), g)
        torch.testing.assert_close(gx, ref[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gb, ref[2], rtol=1e-12, atol=1e-12)
        grads.append(gw)
    grads = torch.stack(grads)
    # the cache now holds the exact row norms of g: the average converges to G^T X at 1/sqrt(M)
    sd_of_mean = float(((grads[1:] - ref[1]) ** 2).sum((1, 2)).mean().sqrt()) / math.sqrt(len(grads) - 1)
    err = float(torch.linalg.norm(grads[1:].mean(0) - ref[1]))
    assert err < 3 * sd_of_mean
    assert err / float(torch.linalg.norm(ref[1])) < 0.05


def test_gradient_norm_cache_from_previous_step():
    torch.manual_seed(3)
    wta = WTACRSLinear(5, 4, keep=0.5)
    assert wta._grad_norms.norms is None
    x = torch.randn(30, 5)
    g = torch.randn(30, 4)
    wta(x).backward(g)
    torch.testing.assert_close(wta._grad_norms.norms, torch.linalg.vector_norm(g.double(), dim=1), rtol=1e-6, atol=0)
    wta(torch.randn(50, 5)).sum().backward()  # a different N falls back to activation norms, then refreshes
    assert wta._grad_norms.norms.shape == (50,)


def test_saved_bytes_scale_with_keep():
    torch.manual_seed(4)
    lin = nn.Linear(64, 32)
    x = torch.randn(1000, 64)
    exact_bytes, out = saved_tensor_bytes(lambda: lin(x), modules=[lin])
    assert exact_bytes == 1000 * 64 * 4 and out.shape == (1000, 32)  # the input only; the weight is a Parameter
    wta = WTACRSLinear.from_linear(lin, keep=0.3)
    wta_bytes, _ = saved_tensor_bytes(lambda: wta(x), modules=[wta])
    assert wta_bytes == 300 * 64 * 4 + 300 * 8  # k rows of X and k int64 indices
    frozen = WTACRSLinear.from_linear(nn.Linear(64, 32).requires_grad_(False), keep=0.3)
    xg = x.clone().requires_grad_(True)
    frozen_bytes, _ = saved_tensor_bytes(lambda: frozen(xg), modules=[frozen])
    assert frozen_bytes == 0


def test_generator_makes_draws_reproducible():
    torch.manual_seed(5)
    lin = nn.Linear(8, 4)
    x = torch.randn(100, 8)
    grads = []
    for _ in range(2):
        wta = WTACRSLinear.from_linear(lin, keep=0.2, generator=torch.Generator().manual_seed(42))
        grads.append(torch.autograd.grad(wta(x).pow(2).sum(), lin.weight)[0])
    assert torch.equal(grads[0], grads[1])


def test_layer_is_a_drop_in_linear():
    wta = WTACRSLinear(6, 3, bias=False, keep=0.5)
    assert isinstance(wta, nn.Linear) and wta.bias is None and "keep=0.5" in repr(wta)
    x = torch.randn(40, 6, requires_grad=True)
    gx = torch.autograd.grad(wta(x).sum(), x)[0]
    torch.testing.assert_close(gx, torch.ones(40, 3) @ wta.weight.detach())
    sd = wta.state_dict()
    assert set(sd) == {"weight"}
    nn.Linear(6, 3, bias=False).load_state_dict(sd)


def test_layer_rejects_nan_input():
    wta = WTACRSLinear(3, 2, keep=0.3)
    x = torch.randn(100, 3)
    x[5, 1] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        wta(x)


# --- convert_linear ----------------------------------------------------------------------------------------------

def _model() -> nn.Module:
    torch.manual_seed(6)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(),
                         nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 3)),
                         nn.MultiheadAttention(3, 1, batch_first=True))


def test_convert_linear_all_and_shares_parameters():
    model = _model()
    params = {n: p for n, p in model.named_parameters()}
    out = convert_linear(model, 0.3)
    assert out is model
    assert isinstance(model[0], WTACRSLinear) and isinstance(model[2][0], WTACRSLinear)
    assert isinstance(model[2][2], WTACRSLinear)
    assert type(model[3].out_proj) is not WTACRSLinear  # MultiheadAttention bypasses out_proj.forward
    for n, p in model.named_parameters():
        assert p is params[n]
    assert model[0].keep == 0.3


def test_convert_linear_include_patterns_and_callable():
    model = convert_linear(_model(), 0.5, include="2.*")
    assert type(model[0]) is nn.Linear and isinstance(model[2][0], WTACRSLinear)
    model = convert_linear(_model(), 0.5, include=["0", "2.2"])
    assert isinstance(model[0], WTACRSLinear) and type(model[2][0]) is nn.Linear and isinstance(model[2][2],
                                                                                               WTACRSLinear)
    model = convert_linear(_model(), 0.5, include=lambda name, m: m.out_features == 8)
    assert isinstance(model[0], WTACRSLinear) and isinstance(model[2][0], WTACRSLinear)
    assert type(model[2][2]) is nn.Linear


def test_convert_bare_linear_returns_converted():
    lin = nn.Linear(3, 2)
    new = convert_linear(lin, 0.3)
    assert isinstance(new, WTACRSLinear) and new.weight is lin.weight


def test_convert_linear_validates_before_mutating():
    model = _model()
    for kwargs, exc in ((dict(keep=0.0), ValueError), (dict(keep=1.5), ValueError), (dict(keep="0.3"), TypeError),
                        (dict(keep=0.3, include=["0", "nosuch.*"]), ValueError),
                        (dict(keep=0.3, include=3), TypeError), (dict(keep=0.3, include=[1]), TypeError),
                        (dict(keep=0.3, generator="gen"), TypeError)):
        with pytest.raises(exc):
            convert_linear(model, **kwargs)
        assert type(model[0]) is nn.Linear
    with pytest.raises(TypeError, match="model"):
        convert_linear("model", 0.3)


# --- bad input ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("keep", "exc"), [(0.0, ValueError), (-0.1, ValueError), (1.01, ValueError),
                                           (math.nan, ValueError), ("0.3", TypeError), (None, TypeError)])
def test_layer_rejects_bad_keep(keep, exc):
    with pytest.raises(exc, match="keep"):
        WTACRSLinear(3, 2, keep=keep)
    with pytest.raises(exc, match="keep"):
        WTACRSLinear.from_linear(nn.Linear(3, 2), keep=keep)


def test_estimator_bad_input():
    g, x = torch.randn(10, 3), torch.randn(10, 4)
    with pytest.raises(ValueError, match="same number of rows"):
        estimate_gtx(g, torch.randn(9, 4), 3)
    with pytest.raises(ValueError, match="method"):
        estimate_gtx(g, x, 3, "topk")
    with pytest.raises(ValueError, match="k must be <="):
        estimate_gtx(g, x, 11)
    with pytest.raises(ValueError, match="k must be >="):
        estimate_gtx(g, x, 0)
    with pytest.raises(ValueError, match="NaN"):
        estimate_gtx(g, x.masked_fill(x > 1, math.nan), 3)
    with pytest.raises(ValueError, match="dimensions"):
        estimate_gtx(g.reshape(-1), x, 3)
    with pytest.raises(TypeError, match="generator"):
        estimate_gtx(g, x, 3, generator=0)
    with pytest.raises(ValueError, match="draws"):
        estimate_gtx(g, x, 3, draws=0)
    with pytest.raises(ValueError, match="non-negative"):
        wta_crs_sample(torch.tensor([0.5, -0.1, 0.6]), 2)
    with pytest.raises(ValueError, match="positive sum"):
        wta_crs_sample(torch.zeros(4), 2)
    with pytest.raises(TypeError, match="floating"):
        deterministic_count(torch.tensor([1, 2, 3]), 2)
    with pytest.raises(ValueError, match="k must be <="):
        deterministic_count(torch.ones(3), 4)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), data=st.data(), tail=st.floats(0.3, 5.0), seed=st.integers(0, 10_000))
def test_property_sample_is_valid_and_count_matches_brute_force(n, data, tail, seed):
    k = data.draw(st.integers(1, n))
    rng = np.random.default_rng(seed)
    p = rng.pareto(tail, n) + 1e-6
    p[rng.random(n) < 0.2] = 0.0
    if p.sum() == 0:
        p[0] = 1.0
    probs = torch.tensor(p, dtype=torch.float64)
    idx, w, c = wta_crs_sample(probs, k, torch.Generator().manual_seed(seed))
    assert c == brute_force_count(p.tolist(), k)
    assert idx.dtype == torch.long and ((idx >= 0) & (idx < n)).all() and idx.numel() <= k
    assert (w > 0).all() and torch.isfinite(w).all()
    assert (probs[idx] > 0).all()  # a zero-probability row is never drawn
    assert not set(idx[c:].tolist()) & set(idx[:c].tolist())


@settings(max_examples=30, deadline=None)
@given(keep=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0001), st.just(math.nan), st.none(),
                      st.text(max_size=2)))
def test_property_bad_keep_always_rejected(keep):
    with pytest.raises((TypeError, ValueError)):
        WTACRSLinear(2, 2, keep=keep)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 4), d=st.integers(1, 4), data=st.data(),
       method=st.sampled_from(["wta-crs", "crs", "uniform"]), seed=st.integers(0, 10_000))
def test_property_estimate_shape_and_scale_equivariance(n, m, d, data, method, seed):
    k = data.draw(st.integers(1, n if method == "wta-crs" else 2 * n))
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, m, generator=gen, dtype=torch.float64)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    state = gen.get_state()
    est = estimate_gtx(g, x, k, method, gen)
    assert est.shape == (m, d) and torch.isfinite(est).all()
    gen.set_state(state)  # p is invariant to scaling g, so the same draws give exactly 2x the estimate
    torch.testing.assert_close(estimate_gtx(2 * g, x, k, method, gen), 2 * est, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(keep=st.one_of(st.floats(0.01, 1.0), st.floats(max_value=0.0), st.floats(min_value=1.001), st.just(math.nan)),
       pattern=st.sampled_from([None, "*", "0", "2.*", ["0", "2.0"], "nosuch"]))
def test_property_convert_linear_converts_or_rejects_without_mutation(keep, pattern):
    model = _model()
    valid_keep = 0.0 < keep <= 1.0
    if not valid_keep or pattern == "nosuch":
        with pytest.raises(ValueError):
            convert_linear(model, keep, include=pattern)
        assert not any(isinstance(mod, WTACRSLinear) for mod in model.modules())
        return
    out = convert_linear(model, keep, include=pattern)
    converted = {n for n, mod in out.named_modules() if isinstance(mod, WTACRSLinear)}
    expected = {"*": {"0", "2.0", "2.2"}, None: {"0", "2.0", "2.2"}, "0": {"0"}, "2.*": {"2.0", "2.2"}}
    assert converted == expected.get(pattern if isinstance(pattern, (str, type(None))) else "", {"0", "2.0"})
    x = torch.randn(30, 4)
    assert out[2](out[1](out[0](x))).shape == (30, 3)
