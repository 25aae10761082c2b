"""Hypothesis property tests for gradlab.schedules: the batch-size tests (against numpy formulas), the
AdaptiveBatchSize policy, per-sample gradients (against a loop of autograd calls) and the adaptive sampler."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.schedules.adaptive_batch import AdaptiveBatchSize, batch_test_statistics
from gradlab.schedules.loader import AdaptiveBatchSampler, adaptive_loader
from gradlab.schedules.per_sample import flatten_per_sample, per_sample_grads

torch.set_num_threads(1)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def raises_naming(name, fn):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    assert name in str(info.value), f"message {str(info.value)!r} does not name {name!r}"


def _reference(G, test, eta, theta, nu):
    g = G.mean(0)
    gn2 = float(g @ g)
    if test == "norm":
        return G.var(0, ddof=1).sum() / (eta**2 * gn2)
    ips = G @ g
    req = ips.var(ddof=1) / (theta**2 * gn2**2)
    if test == "augmented_inner_product":
        orth = G - np.outer(ips / gn2, g)
        req = max(req, orth.var(0, ddof=1).sum() / (nu**2 * gn2))
    return req


@SETTINGS
@given(b=st.integers(2, 12), d=st.integers(1, 6), seed=st.integers(0, 10**5), shift=st.floats(0.5, 3.0),
       test=st.sampled_from(["norm", "inner_product", "augmented_inner_product"]), eta=st.floats(0.05, 2.0),
       theta=st.floats(0.05, 2.0), nu=st.floats(0.05, 2.0),
       kind=st.sampled_from(["none", "one_sample", "nan", "int", "eta_zero", "quantile", "test", "blocks"]))
def test_batch_tests_match_their_formulas(b, d, seed, shift, test, eta, theta, nu, kind):
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((b, d)) + shift  # mean gradient away from 0
    Gt = torch.from_numpy(G)
    bad = {"one_sample": (lambda: batch_test_statistics(Gt[:1], test), "per-sample"),
           "nan": (lambda: batch_test_statistics(torch.full_like(Gt, float("nan")), test), "per-sample"),
           "int": (lambda: batch_test_statistics(Gt.long(), test), "per-sample"),
           "eta_zero": (lambda: batch_test_statistics(Gt, test, eta=0.0), "eta"),
           "quantile": (lambda: batch_test_statistics(Gt, test, coordinatewise=True, coordinate_quantile=1.5),
                        "coordinate_quantile"),
           "test": (lambda: batch_test_statistics(Gt, "t-test"), "test"),
           "blocks": (lambda: batch_test_statistics([Gt, Gt[:-1]], test), "batch size")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    res = batch_test_statistics(Gt, test, eta=eta, theta=theta, nu=nu)
    assert res.required == pytest.approx(_reference(G, test, eta, theta, nu), rel=1e-9)
    split = batch_test_statistics({"a": Gt[:, :1], "b": Gt[:, 1:].reshape(b, -1)}, test, eta=eta, theta=theta, nu=nu)
    assert split.required == pytest.approx(res.required, rel=1e-12)  # blocks are concatenated
    cw = batch_test_statistics(Gt, test, eta=eta, theta=theta, coordinatewise=True, coordinate_quantile=1.0)
    c = eta if test == "norm" else theta
    assert cw.required == pytest.approx(float((G.var(0, ddof=1) / (c**2 * G.mean(0) ** 2)).max()), rel=1e-9)


@SETTINGS
@given(b0=st.integers(2, 16), extra=st.integers(0, 64), interval=st.integers(1, 3),
       scales=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=6), seed=st.integers(0, 1000))
def test_adaptive_batch_size_is_monotone_capped_and_follows_the_test(b0, extra, interval, scales, seed):
    policy = AdaptiveBatchSize(b0, b0 + extra, eta=0.5, test_interval=interval)
    rng = np.random.default_rng(seed)
    for step, s in enumerate(scales, start=1):
        G = torch.from_numpy(1.0 + s * rng.standard_normal((6, 3)))
        before = policy.batch_size
        due = step % interval == 0 and before < policy.max_batch_size
        expected = before
        if due:
            req = _reference(G.numpy(), "norm", 0.5, 0.1, 1.0)
            expected = max(before, policy.max_batch_size if math.isinf(req) else min(policy.max_batch_size,
                                                                                   math.ceil(req)))
        assert policy.update(G) == expected
    assert policy.history == sorted(policy.history) and policy.history[-1] <= b0 + extra
    assert policy.num_updates == len(scales)
    state = policy.state_dict()
    fresh = AdaptiveBatchSize(b0, b0 + extra, eta=0.5, test_interval=interval)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state


@SETTINGS
@given(kind=st.sampled_from(["nan_update", "empty_state", "state_type", "state_big", "init_b0", "init_max",
                             "init_quantile", "init_bool"]))
def test_adaptive_batch_size_refuses_bad_input_without_changing_state(kind):
    policy = AdaptiveBatchSize(4, 32)
    before = policy.state_dict()
    bad = {"nan_update": (lambda: policy.update(torch.full((4, 2), float("nan"))), "NaN"),
           "empty_state": (lambda: policy.load_state_dict({}), "state"),
           "state_type": (lambda: policy.load_state_dict([4, 0, []]), "state"),
           "state_big": (lambda: policy.load_state_dict({"batch_size": 64, "num_updates": 0, "history": [4]}),
                         "batch_size"),
           "init_b0": (lambda: AdaptiveBatchSize(1, 8), "initial_batch_size"),
           "init_max": (lambda: AdaptiveBatchSize(8, 4), "max_batch_size"),
           "init_quantile": (lambda: AdaptiveBatchSize(2, 4, coordinate_quantile=float("nan")), "coordinate_quantile"),
           "init_bool": (lambda: AdaptiveBatchSize(2, 4, coordinatewise=1), "coordinatewise")}
    fn, name = bad[kind]
    raises_naming(name, fn)
    assert policy.state_dict() == before


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 6), d=st.integers(1, 3), o=st.integers(1, 2), seed=st.integers(0, 1000),
       chunk=st.one_of(st.none(), st.integers(1, 4)),
       kind=st.sampled_from(["none", "len", "model", "chunk", "randomness", "frozen"]))
def test_per_sample_grads_equal_a_loop_of_backward_calls(n, d, o, seed, chunk, kind):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, 4), nn.Tanh(), nn.Linear(4, o)).double()
    x, y = torch.randn(n, d, dtype=torch.float64), torch.randn(n, o, dtype=torch.float64)
    loss = nn.MSELoss()
    bad = {"len": (lambda: per_sample_grads(model, loss, x, y[:0] if n == 1 else y[:-1]), "inputs and targets"),
           "model": (lambda: per_sample_grads(lambda t: t, loss, x, y), "model"),
           "chunk": (lambda: per_sample_grads(model, loss, x, y, chunk_size=0), "chunk_size"),
           "randomness": (lambda: per_sample_grads(model, loss, x, y, randomness="any"), "randomness")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    if kind == "frozen":
        model[0].weight.requires_grad_(False)
    got = per_sample_grads(model, loss, x, y, chunk_size=chunk)
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    assert sorted(got) == sorted(names)
    for i in range(n):
        model.zero_grad()
        loss(model(x[i:i + 1]), y[i:i + 1]).backward()
        for k, p in model.named_parameters():
            if p.requires_grad:
                torch.testing.assert_close(got[k][i], p.grad)
    flat = flatten_per_sample(got)
    assert flat.shape == (n, sum(got[k][0].numel() for k in got))
    raises_naming("per_sample", lambda: flatten_per_sample("grads"))


@SETTINGS
@given(n=st.integers(1, 20), sizes=st.lists(st.integers(1, 30), min_size=1, max_size=6), cap=st.integers(1, 100),
       seed=st.integers(0, 1000), kind=st.sampled_from(["none", "n_zero", "policy", "max_zero", "generator",
                                                        "workers", "batch_size_kw"]))
def test_adaptive_sampler_follows_the_policy_and_covers_each_epoch(n, sizes, cap, seed, kind):
    class Policy:
        batch_size = 2

    bad = {"n_zero": (lambda: AdaptiveBatchSampler(0, Policy()), "num_samples"),
           "policy": (lambda: AdaptiveBatchSampler(n, object()), "policy"),
           "max_zero": (lambda: AdaptiveBatchSampler(n, Policy(), max_samples=0), "max_samples"),
           "generator": (lambda: AdaptiveBatchSampler(n, Policy(), generator=seed), "generator"),
           "workers": (lambda: adaptive_loader(list(range(n)), Policy(), num_workers=2), "num_workers"),
           "batch_size_kw": (lambda: adaptive_loader(list(range(n)), Policy(), batch_size=4), "batch_size")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    policy = Policy()
    sampler = AdaptiveBatchSampler(n, policy, max_samples=cap, generator=torch.Generator().manual_seed(seed))
    drawn, it = [], iter(sampler)
    for i, batch in enumerate(it):
        want = sizes[min(i, len(sizes) - 1)]
        policy.batch_size = want  # the next batch follows the policy
        drawn.append(batch)
        if i == 0:
            assert len(batch) == min(2, cap)
        else:
            assert len(batch) == min(sizes[min(i - 1, len(sizes) - 1)], cap - sum(map(len, drawn[:-1])))
    flat = [j for b in drawn for j in b]
    assert len(flat) == cap and all(0 <= j < n for j in flat)
    for e in range(len(flat) // n):  # every complete epoch is a permutation
        assert sorted(flat[e * n:(e + 1) * n]) == list(range(n))
