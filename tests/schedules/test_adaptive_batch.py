"""Adaptive batch-size tests: per-sample gradients vs a loop, statistics vs numpy brute force, the policy, loader."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradlab.schedules import (AdaptiveBatchSampler, AdaptiveBatchSize, adaptive_loader, batch_test_statistics,
                               flatten_per_sample, per_sample_grads)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()


def test_per_sample_grads_match_a_loop_of_autograd():
    model = _mlp()
    x = torch.randn(7, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    got = per_sample_grads(model, F.cross_entropy, x, y, chunk_size=3)
    for i in range(7):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(got[name][i], p.grad, rtol=0, atol=1e-13)
    assert flatten_per_sample(got).shape == (7, sum(p.numel() for p in model.parameters()))


def _linear_problem(b=9, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(b, d))
    y = rng.normal(size=b)
    w = rng.normal(size=d)
    # closed form per-sample gradient of 0.5 (x^T w - y)^2 : (x^T w - y) x
    G = (X @ w - y)[:, None] * X
    return X, y, w, G


def _numpy_stats(G):
    """Brute force with explicit loops over samples and coordinates (ddof=1)."""
    b, d = G.shape
    g = G.sum(0) / b
    gn2 = sum(gj * gj for gj in g)
    var_trace = sum(sum((G[i, j] - g[j]) ** 2 for i in range(b)) / (b - 1) for j in range(d))
    ips = [sum(G[i, j] * g[j] for j in range(d)) for i in range(b)]
    mip = sum(ips) / b
    var_ip = sum((v - mip) ** 2 for v in ips) / (b - 1)
    orth = np.array([[G[i, j] - ips[i] / gn2 * g[j] for j in range(d)] for i in range(b)])
    om = orth.sum(0) / b
    var_orth = sum(sum((orth[i, j] - om[j]) ** 2 for i in range(b)) / (b - 1) for j in range(d))
    return gn2, var_trace, var_ip, var_orth


def test_statistics_match_numpy_brute_force_on_a_linear_model():
    X, y, w, G = _linear_problem()
    # the vmap per-sample gradients reproduce the closed form
    model = torch.nn.Linear(4, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor(w)[None])
    ps = per_sample_grads(model, lambda out, t: 0.5 * (out.squeeze(-1) - t).pow(2).sum(), torch.tensor(X),
                          torch.tensor(y))
    torch.testing.assert_close(ps["weight"][:, 0, :], torch.tensor(G), rtol=0, atol=1e-12)
    gn2, var_trace, var_ip, var_orth = _numpy_stats(G)
    eta, theta, nu = 0.3, 0.4, 0.7
    r = batch_test_statistics(ps, "norm", eta=eta)
    assert r.statistics["grad_norm_sq"] == pytest.approx(gn2, rel=1e-10)
    assert r.required == pytest.approx(var_trace / (eta**2 * gn2), rel=1e-10)
    r = batch_test_statistics(ps, "inner_product", theta=theta)
    assert r.required == pytest.approx(var_ip / (theta**2 * gn2**2), rel=1e-10)
    r = batch_test_statistics(ps, "augmented_inner_product", theta=theta, nu=nu)
    assert r.statistics["orthogonal_variance_trace"] == pytest.approx(var_orth, rel=1e-10)
    assert r.required == pytest.approx(max(var_ip / (theta**2 * gn2**2), var_orth / (nu**2 * gn2)), rel=1e-10)


def test_coordinatewise_statistics():
    _, _, _, G = _linear_problem(b=11, d=5, seed=3)
    g = G.mean(0)
    ratios = G.var(0, ddof=1) / (0.5**2 * g**2)
    r = batch_test_statistics(torch.tensor(G), "norm", eta=0.5, coordinatewise=True, coordinate_quantile=1.0)
    assert r.required == pytest.approx(ratios.max(), rel=1e-10)
    r = batch_test_statistics(torch.tensor(G), "norm", eta=0.5, coordinatewise=True, coordinate_quantile=0.5)
    assert r.required == pytest.approx(np.median(ratios), rel=1e-10)
    for q in (0.0, 0.3, 0.77, 1.0):
        r = batch_test_statistics(torch.tensor(G), "norm", eta=0.5, coordinatewise=True, coordinate_quantile=q)
        assert r.required == pytest.approx(np.quantile(ratios, q), rel=1e-10)
    # for a single coordinate the inner-product test is the norm test with theta in place of eta
    r_ip = batch_test_statistics(torch.tensor(G), "augmented_inner_product", theta=0.5, coordinatewise=True,
                                 coordinate_quantile=0.5)
    assert r_ip.required == pytest.approx(np.median(ratios), rel=1e-10)


def test_noiseless_gradients_need_no_growth_and_zero_mean_needs_the_cap():
    same = torch.ones(5, 3)
    assert batch_test_statistics(same, "norm").required == 0.0
    cancel = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert math.isinf(batch_test_statistics(cancel, "norm").required)
    policy = AdaptiveBatchSize(4, 100)
    assert policy.update(cancel) == 100


def test_policy_is_non_decreasing_capped_and_respects_interval():
    torch.manual_seed(0)
    policy = AdaptiveBatchSize(4, 50, "augmented_inner_product", theta=0.5, nu=1.0, test_interval=2)
    sizes = []
    for k in range(12):
        z = torch.randn(8, 3)
        G = torch.ones(8, 3) + 0.1 * 2.0**k * (z - z.mean(0))  # the mean gradient stays (1, 1, 1)
        sizes.append(policy.update(G))
    assert all(a <= b for a, b in zip(sizes, sizes[1:]))
    assert sizes[0] == 4  # first call is not a test step with interval 2
    assert max(sizes) <= 50 and sizes[-1] == 50
    assert policy.history == [4] + sizes
    state = policy.state_dict()
    other = AdaptiveBatchSize(4, 50, "augmented_inner_product", theta=0.5, test_interval=2)
    other.load_state_dict(state)
    assert other.batch_size == policy.batch_size and other.num_updates == 12


def test_policy_norm_test_value_and_update_from_model():
    model = _mlp()
    x = torch.randn(64, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (64,))
    policy = AdaptiveBatchSize(8, 10_000, "norm", eta=0.5, max_test_samples=16)
    expected = batch_test_statistics(per_sample_grads(model, F.cross_entropy, x[:16], y[:16]), "norm", eta=0.5)
    new = policy.update_from_model(model, F.cross_entropy, x, y)
    assert new == max(8, min(10_000, math.ceil(expected.required)))


@pytest.mark.parametrize("kwargs", [dict(initial_batch_size=1, max_batch_size=10),
                                    dict(initial_batch_size=8, max_batch_size=4),
                                    dict(initial_batch_size=4, max_batch_size=8, test="bogus"),
                                    dict(initial_batch_size=4, max_batch_size=8, eta=0.0),
                                    dict(initial_batch_size=4, max_batch_size=8, coordinate_quantile=1.5)])
def test_bad_policy_arguments(kwargs):
    with pytest.raises(ValueError):
        AdaptiveBatchSize(**kwargs)


def test_bad_per_sample_input():
    with pytest.raises(ValueError, match="at least 2"):
        batch_test_statistics(torch.ones(1, 3))
    with pytest.raises(ValueError, match="NaN"):
        batch_test_statistics(torch.tensor([[1.0], [float("nan")]]))
    with pytest.raises(TypeError):
        batch_test_statistics("grads")


def test_sampler_follows_policy_and_covers_each_epoch():
    policy = AdaptiveBatchSize(3, 8)
    sampler = AdaptiveBatchSampler(10, policy, max_samples=25, generator=torch.Generator().manual_seed(0))
    batches = []
    for i, batch in enumerate(sampler):
        batches.append(batch)
        if i == 1:
            policy.batch_size = 7  # as if the test had asked for more
    assert [len(b) for b in batches] == [3, 3, 7, 7, 5]
    flat = [i for b in batches for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))
    ds = torch.utils.data.TensorDataset(torch.arange(10.0))
    loader = adaptive_loader(ds, AdaptiveBatchSize(4, 8), max_samples=12)
    assert [len(b[0]) for b in loader] == [4, 4, 4]
    with pytest.raises(ValueError):
        adaptive_loader(ds, policy, num_workers=2)


def test_batch_size_lr_rules_are_reexported_as_schedules():
    import gradlab.curvature.batch_scaling as bs
    import gradlab.schedules as sched

    assert sched.LanczosLR is bs.LanczosLR and sched.scale_learning_rate is bs.scale_learning_rate
    assert sched.scale_learning_rate(0.1, 32, 128, rule="linear") == pytest.approx(0.4)
    assert sched.scale_learning_rate(0.1, 32, 128, rule="sqrt") == pytest.approx(0.2)


@pytest.mark.parametrize("due", [True, False])
def test_update_with_nonfinite_gradients_raises_and_changes_nothing(due):
    policy = AdaptiveBatchSize(4, 100, test_interval=1 if due else 5)
    before = policy.state_dict()
    bad = torch.randn(4, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        policy.update(bad)
    assert policy.state_dict() == before


@pytest.mark.parametrize("state, err", [({}, ValueError), ({"batch_size": 8, "num_updates": 1}, ValueError),
                                        ([1, 2], TypeError),
                                        ({"batch_size": 8, "num_updates": 1, "history": 3}, TypeError),
                                        ({"batch_size": 1000, "num_updates": 1, "history": []}, ValueError),
                                        ({"batch_size": 8, "num_updates": -1, "history": []}, ValueError)])
def test_load_state_dict_refuses_malformed_state_without_mutating(state, err):
    policy = AdaptiveBatchSize(4, 100)
    before = policy.state_dict()
    with pytest.raises(err):
        policy.load_state_dict(state)
    assert policy.state_dict() == before
