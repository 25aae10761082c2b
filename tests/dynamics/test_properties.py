"""Hypothesis property tests for the public entry points of gradlab.dynamics.

Each test draws a small valid problem and, half of the time, one corruption of it. A corrupted call must raise
ValueError/TypeError whose message names the corrupted argument; a valid one must agree with an independent
reference (numpy/scipy closed forms and loops written here). The NaN/inf policy of the package docstring is
tested clause by clause at the end.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import norm as normal

import gradlab.dynamics as dyn
from gradlab.dynamics.coord_check import LrSweepResult, coord_check, fit_width_slope, lr_transfer_sweep
from gradlab.dynamics.parametrization import AbcParametrization, abc_param_groups, abc_preset
from gradlab.dynamics.permutations import (
    TwoLayerNTKEnsemble, TwoLayerNTKNet, augment_bias, binary_inputs, exact_recovery_probability,
    exact_recovery_rate, fit_ensemble, ntk_gp_posterior, ntk_regression, permute_bits, relu_nngp, relu_ntk,
    required_ensemble_size, round_outputs,
)
from gradlab.dynamics.width_models import MLP, TinyTransformer
from gradlab.dynamics.xor_cluster import XORClusterBatch, XORClusterTask, XORTwoLayerReLU, accuracy, train_xor_gd

torch.set_num_threads(1)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ERRORS = (ValueError, TypeError)


def raises_naming(name, fn):
    with pytest.raises(ERRORS) as info:
        fn()
    assert name in str(info.value), f"message {str(info.value)!r} does not name {name!r}"


def poison(t, value=float("nan")):
    t = t.clone()
    t.view(-1)[0] = value
    return t


# ---------------------------------------------------------------------------------------------- kernels


def _arccos_ref(x1, x2, ntk):
    """Cho & Saul's degree-1 arc-cosine kernel (and the two-layer NTK), in numpy."""
    out = np.zeros((len(x1), len(x2)))
    for i, a in enumerate(x1):
        for j, b in enumerate(x2):
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            if na == 0 or nb == 0:
                continue
            th = np.arccos(np.clip(a @ b / (na * nb), -1, 1))
            k = na * nb * (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
            out[i, j] = k + (a @ b * (np.pi - th) / (2 * np.pi) if ntk else 0.0)
    return out


@SETTINGS
@given(n1=st.integers(1, 4), n2=st.integers(1, 4), d=st.integers(1, 4), seed=st.integers(0, 10**4),
       kind=st.sampled_from(["none", "nan_x1", "inf_x2", "features", "dtype", "rank", "int"]))
def test_relu_kernels_match_the_arccos_formula(n1, n2, d, seed, kind):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(n1, d, generator=g, dtype=torch.float64)
    x2 = torch.randn(n2, d, generator=g, dtype=torch.float64)
    bad = {"nan_x1": (poison(x1), x2, "x1"), "inf_x2": (x1, poison(x2, float("inf")), "x2"),
           "features": (x1, torch.zeros(n2, d + 1, dtype=torch.float64), "x1 and x2"),
           "dtype": (x1, x2.float(), "x2"), "rank": (x1[0], x2, "x1"), "int": (x1, x2.long(), "x2")}
    if kind in bad:
        a, b, name = bad[kind]
        raises_naming(name, lambda: relu_nngp(a, b))
        raises_naming(name, lambda: relu_ntk(a, b))
        return
    np.testing.assert_allclose(relu_nngp(x1, x2).numpy(), _arccos_ref(x1.numpy(), x2.numpy(), False), atol=1e-10)
    np.testing.assert_allclose(relu_ntk(x1, x2).numpy(), _arccos_ref(x1.numpy(), x2.numpy(), True), atol=1e-10)


@SETTINGS
@given(n=st.integers(1, 5), d=st.integers(2, 5), o=st.integers(1, 3), seed=st.integers(0, 10**4),
       kind=st.sampled_from(["none", "duplicate", "y_rows", "y_dtype", "x_test_features", "nan_y", "kernel"]))
def test_ntk_regression_interpolates_the_training_set(n, d, o, seed, kind):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(n, o, generator=g, dtype=torch.float64)
    xt = torch.randn(3, d, generator=g, dtype=torch.float64)
    bad = {"duplicate": (lambda: ntk_regression(torch.cat([x, x[:1]]), torch.cat([y, y[:1]]), xt), "x_train"),
           "y_rows": (lambda: ntk_regression(x, y[:-1] if n > 1 else torch.zeros(2, o, dtype=y.dtype), xt), "y_train"),
           "y_dtype": (lambda: ntk_regression(x, y.float(), xt), "y_train"),
           "x_test_features": (lambda: ntk_regression(x, y, torch.zeros(3, d + 1, dtype=x.dtype)), "x_test"),
           "nan_y": (lambda: ntk_regression(x, poison(y), xt), "y_train"),
           "kernel": (lambda: ntk_regression(x, y, xt, kernel="ntk"), "kernel")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    gram = _arccos_ref(x.numpy(), x.numpy(), True)
    if np.linalg.cond(gram) > 1e8:
        return
    np.testing.assert_allclose(ntk_regression(x, y, x).numpy(), y.numpy(), atol=1e-6)
    ref = _arccos_ref(xt.numpy(), x.numpy(), True) @ np.linalg.solve(gram, y.numpy())
    np.testing.assert_allclose(ntk_regression(x, y, xt).numpy(), ref, atol=1e-6)
    coef, var = ntk_gp_posterior(x, x)
    np.testing.assert_allclose(coef.numpy(), np.eye(n), atol=1e-6)
    np.testing.assert_allclose(var.numpy(), 0.0, atol=1e-6)


@SETTINGS
@given(k=st.integers(1, 8), kind=st.sampled_from(["none", "k_zero", "k_big", "dtype"]))
def test_binary_inputs_are_the_binary_codes(k, kind):
    if kind == "k_zero":
        raises_naming("k", lambda: binary_inputs(0))
        return
    if kind == "k_big":
        raises_naming("k", lambda: binary_inputs(25))
        return
    if kind == "dtype":
        raises_naming("dtype", lambda: binary_inputs(k, dtype="float64"))
        return
    x = binary_inputs(k)
    ref = np.array([[(i >> j) & 1 for j in range(k)] for i in range(1, 2**k)], dtype=float)
    np.testing.assert_array_equal(x.numpy(), ref)


@SETTINGS
@given(perm=st.permutations(list(range(5))), k=st.integers(1, 5),
       kind=st.sampled_from(["none", "float_perm", "not_perm", "float_tensor", "x_rank"]))
def test_permute_bits_indexes_by_perm(perm, k, kind):
    perm = [p for p in perm if p < k]
    x = binary_inputs(k)
    bad = {"float_perm": (lambda: permute_bits(x, [float(p) + 0.5 for p in perm]), "perm"),
           "not_perm": (lambda: permute_bits(x, [0] * k if k > 1 else [1]), "perm"),
           "float_tensor": (lambda: permute_bits(x, torch.tensor(perm, dtype=torch.float32)), "perm"),
           "x_rank": (lambda: permute_bits(x[0], perm), "x")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    np.testing.assert_array_equal(permute_bits(x, perm).numpy(), x.numpy()[:, perm])
    out = augment_bias(x, 0.5)
    assert out.shape == (x.shape[0], k + 1) and bool((out[:, -1] == 0.5).all())


@SETTINGS
@given(n=st.integers(1, 4), k=st.integers(1, 4), m=st.floats(1.0, 1e4), thr=st.floats(-0.5, 0.5),
       seed=st.integers(0, 10**4),
       kind=st.sampled_from(["none", "var_neg", "var_shape", "targets_shape", "nan_mean", "thr_nan", "m_zero",
                             "targets_nonbinary"]))
def test_exact_recovery_probability_is_a_product_of_normal_cdfs(n, k, m, thr, seed, kind):
    rng = np.random.default_rng(seed)
    mean = torch.from_numpy(rng.normal(0.5, 0.5, (n, k)))
    var = torch.from_numpy(rng.uniform(0.01, 1.0, n))
    targets = torch.from_numpy(rng.integers(0, 2, (n, k)).astype(float))
    bad = {"var_neg": (lambda: exact_recovery_probability(mean, -var, targets, m, thr), "var"),
           "var_shape": (lambda: exact_recovery_probability(mean, var[:0], targets, m, thr), "var"),
           "targets_shape": (lambda: exact_recovery_probability(mean, var, targets[:, :0], m, thr), "targets"),
           "nan_mean": (lambda: exact_recovery_probability(poison(mean), var, targets, m, thr), "mean"),
           "thr_nan": (lambda: exact_recovery_probability(mean, var, targets, m, float("nan")), "threshold"),
           "m_zero": (lambda: exact_recovery_probability(mean, var, targets, 0, thr), "ensemble_size"),
           "targets_nonbinary": (lambda: exact_recovery_probability(mean, var, targets * 2 + 1, m, thr), "targets")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    mu, sd, t = mean.numpy(), np.sqrt(var.numpy() / m)[:, None], targets.numpy()
    ref = np.where(t > 0.5, normal.cdf((mu - thr) / sd), normal.cdf((thr - mu) / sd)).prod(1)
    np.testing.assert_allclose(exact_recovery_probability(mean, var, targets, m, thr), ref, rtol=1e-9, atol=1e-300)
    size = required_ensemble_size(mean, var, targets, 0.1, thr)
    if math.isfinite(size):  # the smallest M with min_x P >= 0.9
        assert exact_recovery_probability(mean, var, targets, size, thr).min() >= 0.9 - 1e-12
        if size > 1:
            assert exact_recovery_probability(mean, var, targets, size - 1, thr).min() < 0.9


@SETTINGS
@given(e=st.integers(1, 6), n=st.integers(1, 4), o=st.integers(1, 3), seed=st.integers(0, 1000),
       kind=st.sampled_from(["none", "targets_shape", "size_big", "size_str", "nan", "thr_inf"]))
def test_exact_recovery_rate_counts_rounded_group_means(e, n, o, seed, kind):
    rng = np.random.default_rng(seed)
    out = torch.from_numpy(rng.normal(0.3, 1.0, (e, n, o)))
    targets = torch.from_numpy(rng.integers(0, 2, (n, o)).astype(float))
    bad = {"targets_shape": (lambda: exact_recovery_rate(out, targets[:, :0], [1]), "targets"),
           "size_big": (lambda: exact_recovery_rate(out, targets, [e + 1]), "ensemble_sizes"),
           "size_str": (lambda: exact_recovery_rate(out, targets, "1"), "ensemble_sizes"),
           "nan": (lambda: exact_recovery_rate(poison(out), targets, [1]), "member_outputs"),
           "thr_inf": (lambda: exact_recovery_rate(out, targets, [1], threshold=float("inf")), "threshold")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    sizes = list(range(1, e + 1))
    res = exact_recovery_rate(out, targets, sizes)
    for m, per_input, all_inputs in zip(sizes, res["per_input"], res["all_inputs"]):
        groups = out.numpy()[: (e // m) * m].reshape(e // m, m, n, o).mean(1)
        exact = ((groups > 0).astype(float) == targets.numpy()).all(-1)
        assert per_input == pytest.approx(exact.mean())
        assert all_inputs == pytest.approx(exact.all(-1).mean())
    np.testing.assert_array_equal(round_outputs(out).numpy(), (out.numpy() > 0).astype(float))


@SETTINGS
@given(n=st.integers(1, 4), d=st.integers(1, 3), m=st.integers(1, 6), o=st.integers(1, 2), bias=st.floats(0, 1),
       kind=st.sampled_from(["none", "features", "dtype", "nan", "members"]))
def test_two_layer_ntk_net_and_ensemble_forward(n, d, m, o, bias, kind):
    g = torch.Generator().manual_seed(n + d + m)
    net = TwoLayerNTKNet(d, m, o, bias=bias, generator=g)
    ens = TwoLayerNTKEnsemble(2, d, m, o, bias=bias, generator=g, dtype=torch.float64)
    x = torch.randn(n, d)
    bad = {"features": (lambda: net(torch.zeros(n, d + 1)), "x"), "dtype": (lambda: net(x.double()), "x"),
           "nan": (lambda: ens(poison(x).double()), "x"), "members": (lambda: ens(x.double(), members=0), "members")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    xa = np.concatenate([x.numpy(), np.full((n, 1), bias)], 1) if bias > 0 else x.numpy()
    ref = np.maximum(xa @ net.weight.detach().numpy().T, 0) @ net.readout.detach().numpy().T / math.sqrt(m)
    np.testing.assert_allclose(net(x).detach().numpy(), ref, rtol=1e-5, atol=1e-5)
    member = ens.member(1)
    torch.testing.assert_close(ens(x.double())[1], member(x.double()))


@settings(max_examples=10, deadline=None)
@given(k=st.integers(2, 4), kind=st.sampled_from(["none", "x_features", "y_shape", "tol_neg", "not_ensemble"]))
def test_fit_ensemble_reaches_the_targets(k, kind):
    ens = TwoLayerNTKEnsemble(3, k, 256, k, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    x = torch.eye(k, dtype=torch.float64)
    bad = {"x_features": (lambda: fit_ensemble(ens, torch.eye(k + 1, dtype=torch.float64), x), "x"),
           "y_shape": (lambda: fit_ensemble(ens, x, x[:, :-1]), "y"),
           "tol_neg": (lambda: fit_ensemble(ens, x, x, tol=-1.0), "tol"),
           "not_ensemble": (lambda: fit_ensemble(TwoLayerNTKNet(k, 4, k), x, x), "ensemble")}
    if kind in bad:
        before = ens.weight.detach().clone()
        fn, name = bad[kind]
        raises_naming(name, fn)
        torch.testing.assert_close(ens.weight.detach(), before)  # validated before mutating
        return
    resid = fit_ensemble(ens, x, x, lr=1.0, steps=3000, tol=1e-6)
    assert resid < 1e-6
    np.testing.assert_allclose(ens(x).detach().numpy(), np.broadcast_to(x.numpy(), (3, k, k)), atol=1e-6)


# ---------------------------------------------------------------------------------------------- XOR cluster


@SETTINGS
@given(p=st.integers(2, 8), n=st.integers(1, 30), flip=st.floats(0.0, 0.49), seed=st.integers(0, 10**4),
       kind=st.sampled_from(["none", "flip_half", "means_shape", "means_nan", "generator", "flip_int"]))
def test_xor_cluster_samples_follow_the_mixture(p, n, flip, seed, kind):
    bad = {"flip_half": (lambda: XORClusterTask(p, 2.0, flip_prob=0.5), "flip_prob"),
           "means_shape": (lambda: XORClusterTask(p, 2.0, means=torch.eye(p + 1)[:3]), "means"),
           "means_nan": (lambda: XORClusterTask(p, 2.0, means=poison(torch.eye(p)[:2])), "means"),
           "generator": (lambda: XORClusterTask(p, 2.0).sample(n, generator=seed), "generator"),
           "flip_int": (lambda: XORClusterTask(p, 2.0).sample(n, flip=1), "flip")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    task = XORClusterTask(p, 3.0, flip_prob=flip, noise_std=0.0)
    batch = task.sample(n, torch.Generator().manual_seed(seed))
    mu = task.means.numpy()
    signs = np.where(batch.cluster.numpy() % 2 == 0, 1.0, -1.0)
    np.testing.assert_allclose(batch.x.numpy(), signs[:, None] * mu[batch.cluster.numpy() // 2], atol=1e-6)
    np.testing.assert_array_equal(batch.y_clean.numpy(), np.where(batch.cluster.numpy() < 2, 1.0, -1.0))
    np.testing.assert_array_equal(batch.y.numpy(), np.where(batch.flipped.numpy(), -1, 1) * batch.y_clean.numpy())


@SETTINGS
@given(n=st.integers(1, 12), seed=st.integers(0, 10**4),
       kind=st.sampled_from(["none", "shape_n1", "broadcast", "nan_scores", "nan_labels", "not_tensor", "empty"]))
def test_accuracy_matches_numpy(n, seed, kind):
    rng = np.random.default_rng(seed)
    s = torch.from_numpy(rng.normal(size=n))
    y = torch.from_numpy(rng.choice([-1.0, 1.0], n))
    bad = {"broadcast": (lambda: accuracy(s[:, None], y[None].expand(n, n) if n > 1 else torch.ones(1, 2)), "scores"),
           "nan_scores": (lambda: accuracy(poison(s), y), "scores"),
           "nan_labels": (lambda: accuracy(s, poison(y)), "labels"),
           "not_tensor": (lambda: accuracy(s.tolist(), y), "scores"),
           "empty": (lambda: accuracy(s[:0], y[:0]), "scores")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    ref = float(np.mean(s.numpy() * y.numpy() > 0))
    assert accuracy(s, y) == pytest.approx(ref)
    if kind == "shape_n1":
        assert accuracy(s[:, None], y) == pytest.approx(ref)


@settings(max_examples=15, deadline=None)
@given(p=st.integers(2, 5), m=st.sampled_from([2, 4, 6]), n=st.integers(2, 10), lr=st.floats(0.01, 1.0),
       kind=st.sampled_from(["none", "x_features", "x_dtype", "labels", "test_features", "record_str", "model"]))
def test_train_xor_gd_takes_hand_computed_steps(p, m, n, lr, kind):
    task = XORClusterTask(p, 2.0, flip_prob=0.2)
    train = task.sample(n, torch.Generator().manual_seed(n))
    model = XORTwoLayerReLU(p, m, init_std=0.5, generator=torch.Generator().manual_seed(p))
    before = model.weight.detach().clone()
    bt = XORClusterBatch
    bad = {"x_features": (lambda: train_xor_gd(model, bt(torch.zeros(n, p + 1), train.y, train.y_clean,
                                                           train.flipped, train.cluster), lr, 1), "train.x"),
           "x_dtype": (lambda: train_xor_gd(model, bt(train.x.double(), train.y, train.y_clean, train.flipped,
                                                       train.cluster), lr, 1), "train.x"),
           "labels": (lambda: train_xor_gd(model, bt(train.x, train.y * 0.5, train.y_clean, train.flipped,
                                                      train.cluster), lr, 1), "train.y"),
           "test_features": (lambda: train_xor_gd(model, train, lr, 1, test=bt(torch.zeros(3, p + 1), train.y[:3],
                                                                                 train.y_clean[:3], train.flipped[:3],
                                                                                 train.cluster[:3])), "test.x"),
           "record_str": (lambda: train_xor_gd(model, train, lr, 1, record_at="01"), "record_at"),
           "model": (lambda: train_xor_gd(torch.nn.Linear(p, 1), train, lr, 1), "model")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        torch.testing.assert_close(model.weight.detach(), before)
        return
    hist = train_xor_gd(model, train, lr, 1)
    W, a = before.double().numpy(), model.second_layer.double().numpy()
    X, Y = train.x.double().numpy(), train.y.double().numpy()
    pre = X @ W.T
    f = np.maximum(pre, 0) @ a
    sig = 1 / (1 + np.exp(Y * f))  # sigmoid(-y f)
    grad = -(a[:, None] / n) * (((Y * sig)[:, None] * (pre > 0)).T @ X)
    np.testing.assert_allclose(model.weight.detach().double().numpy(), W - lr * grad, rtol=1e-4, atol=1e-5)
    assert hist.steps == [0, 1]
    assert hist.train_loss[0] == pytest.approx(float(np.log1p(np.exp(-Y * f)).mean()), rel=1e-5)


# ---------------------------------------------------------------------------------------------- muP


finite = st.floats(-2, 2, allow_nan=False)


@SETTINGS
@given(a=st.tuples(finite, finite, finite), b=st.tuples(finite, finite, finite), c=finite, theta=finite,
       kind=st.sampled_from(["none", "a_nan", "b_len", "c_inf", "theta_nan", "name_int", "layers_zero"]))
def test_abc_parametrization_symmetry_and_exponents(a, b, c, theta, kind):
    bad = {"a_nan": (lambda: AbcParametrization(a=(a[0], float("nan"), a[2]), b=b, c=c), "a[1]"),
           "b_len": (lambda: AbcParametrization(a=a, b=b[:2], c=c), "b"),
           "c_inf": (lambda: AbcParametrization(a=a, b=b, c=float("inf")), "c"),
           "theta_nan": (lambda: AbcParametrization(a=a, b=b, c=c).shifted(float("nan")), "theta"),
           "name_int": (lambda: AbcParametrization(a=a, b=b, c=c, name=3), "name"),
           "layers_zero": (lambda: AbcParametrization(a=a, b=b, c=c).feature_learning_exponent(0),
                           "num_hidden_layers")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    spec = AbcParametrization(a=a, b=b, c=c)
    sh = spec.shifted(theta)
    for i, role in enumerate(("input", "hidden", "output")):
        assert spec.init_exponent(role) == pytest.approx(a[i] + b[i])
        assert sh.init_exponent(role) == pytest.approx(spec.init_exponent(role), abs=1e-12)
        assert spec.lr_exponent(role, "sgd") == pytest.approx(c + 2 * a[i])
        assert spec.lr_exponent(role, "adam") == pytest.approx(c + a[i])
        assert sh.lr_exponent(role, "sgd") == pytest.approx(spec.lr_exponent(role, "sgd"), abs=1e-12)
    for L in (1, 2, 3):
        assert sh.feature_learning_exponent(L) == pytest.approx(spec.feature_learning_exponent(L), abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(base=st.sampled_from([4, 8]), mult=st.sampled_from([2, 4]), lr=st.floats(1e-3, 1.0),
       preset=st.sampled_from(["sp", "ntk", "mup"]),
       kind=st.sampled_from(["none", "lr_nan", "extra_lr", "extra_list", "generator", "reinit_int"]))
def test_abc_param_groups_learning_rates(base, mult, lr, preset, kind):
    make = lambda w: MLP(3, w, 2)  # noqa: E731
    model = make(base * mult)
    bad = {"lr_nan": (lambda: abc_param_groups(model, preset, float("nan"), base=make(base)), "lr"),
           "extra_lr": (lambda: abc_param_groups(model, preset, lr, base=make(base), extra={"lr": 1.0}), "extra"),
           "extra_list": (lambda: abc_param_groups(model, preset, lr, base=make(base), extra=[("momentum", 0.9)]),
                          "extra"),
           "generator": (lambda: abc_param_groups(model, preset, lr, base=make(base), generator=0), "generator"),
           "reinit_int": (lambda: abc_param_groups(model, preset, lr, base=make(base), reinit=1), "reinit")}
    if kind in bad:
        before = [p.detach().clone() for p in model.parameters()]
        fn, name = bad[kind]
        raises_naming(name, fn)
        for p, q in zip(model.parameters(), before):
            torch.testing.assert_close(p.detach(), q)
        return
    spec = abc_preset(preset)
    groups = abc_param_groups(model, preset, lr, base=make(base), extra={"momentum": 0.9})
    for gr in groups:
        role = "input" if gr["role"] == "vector" else gr["role"]
        expected = lr if gr["role"] == "fixed" else lr * gr["width_mult"] ** (-spec.lr_exponent(role, "sgd"))
        assert gr["lr"] == pytest.approx(expected, rel=1e-12)
        assert gr["momentum"] == 0.9
    assert sum(len(gr["params"]) for gr in groups) == len(list(model.parameters()))


@SETTINGS
@given(widths=st.lists(st.integers(1, 4096), min_size=2, max_size=5, unique=True), slope=st.floats(-2, 2),
       const=st.floats(0.1, 10),
       kind=st.sampled_from(["none", "zero_width", "nan_width", "one_width", "values_len", "values_str"]))
def test_fit_width_slope_recovers_exact_power_laws(widths, slope, const, kind):
    values = [const * w**slope for w in widths]
    bad = {"zero_width": (lambda: fit_width_slope([0] + widths[1:], values), "widths[0]"),
           "nan_width": (lambda: fit_width_slope([float("nan")] + widths[1:], values), "widths[0]"),
           "one_width": (lambda: fit_width_slope(widths[:1], values[:1]), "widths"),
           "values_len": (lambda: fit_width_slope(widths, values[:-1]), "value"),
           "values_str": (lambda: fit_width_slope(widths, "abc"), "values")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    assert fit_width_slope(widths, values) == pytest.approx(slope, abs=1e-8)


def _mse(out, y):
    return 0.5 * (out - y).pow(2).sum(-1).mean()


@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(["modules", "x_nan", "xy_len", "seeds_empty", "loss", "param", "diverge", "lrs_empty",
                             "widths_str", "batch_size"]))
def test_coord_check_and_sweep_validate_before_training(kind):
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    make = lambda w: MLP(3, w, 2)  # noqa: E731
    cc = lambda **kw: coord_check(**{"make_model": make, "widths": [4, 8], "x": x, "y": y, "loss_fn": _mse,  # noqa
                                     "parametrization": "mup", "lr": 0.1, "base_width": 4, **kw})
    sw = lambda **kw: lr_transfer_sweep(**{"make_model": make, "widths": [4, 8], "lrs": [0.1], "x": x, "y": y,  # noqa
                                           "loss_fn": _mse, "parametrization": "mup", "steps": 2, "base_width": 4,
                                           **kw})
    cases = {"modules": (lambda: cc(modules=["layers.9"]), "modules"),
             "x_nan": (lambda: sw(x=poison(x)), "x"),
             "xy_len": (lambda: cc(y=y[:-1]), "x and y"),
             "seeds_empty": (lambda: sw(seeds=()), "seeds"),
             "loss": (lambda: cc(loss_fn="mse"), "loss_fn"),
             "param": (lambda: cc(parametrization=0.5), "parametrization"),
             "diverge": (lambda: sw(diverge_factor=0.5), "diverge_factor"),
             "lrs_empty": (lambda: sw(lrs=[]), "lrs"),
             "widths_str": (lambda: cc(widths="48"), "widths"),
             "batch_size": (lambda: sw(batch_size=9), "batch_size")}
    fn, name = cases[kind]
    raises_naming(name, fn)


def test_lr_sweep_best_lr_is_the_argmin():
    res = LrSweepResult(widths=[4, 8], lrs=[0.1, 0.2, 0.4], losses=np.array([[3.0, 1.0, np.inf], [0.5, 2.0, 4.0]]),
                        parametrization="sp")
    assert res.best_lrs() == [0.2, 0.1]
    assert res.best_lr_shift() == pytest.approx(1.0)


@SETTINGS
@given(vocab=st.integers(2, 10), t=st.integers(1, 6), kind=st.sampled_from(["none", "oob", "neg", "long", "float",
                                                                            "rank", "empty"]))
def test_tiny_transformer_token_contract(vocab, t, kind):
    torch.manual_seed(0)
    model = TinyTransformer(vocab, 8, depth=1, heads=2, max_len=6)
    tok = torch.randint(0, vocab, (2, t))
    bad = {"oob": lambda: model(torch.full((1, t), vocab)), "neg": lambda: model(torch.full((1, t), -1)),
           "long": lambda: model(torch.zeros(1, 7, dtype=torch.long)), "float": lambda: model(tok.float()),
           "rank": lambda: model(tok[0]), "empty": lambda: model(tok[:, :0])}
    if kind in bad:
        raises_naming("tokens", bad[kind])
        return
    logits = model(tok)
    assert logits.shape == (2, t, vocab)
    tok2 = tok.clone()
    tok2[:, -1] = (tok2[:, -1] + 1) % vocab  # causal: earlier positions do not see the last token
    torch.testing.assert_close(model(tok2)[:, :-1], logits[:, :-1])


@SETTINGS
@given(d=st.integers(1, 4), w=st.integers(1, 8), kind=st.sampled_from(["none", "features", "dtype", "nan"]))
def test_mlp_forward_contract(d, w, kind):
    torch.manual_seed(d * w)
    model = MLP(d, w, 2, num_hidden_layers=1)
    x = torch.randn(3, d)
    bad = {"features": lambda: model(torch.zeros(3, d + 1)), "dtype": lambda: model(x.double()),
           "nan": lambda: model(poison(x))}
    if kind in bad:
        raises_naming("x", bad[kind])
        return
    W1, b1 = model.layers[0].weight.detach().numpy(), model.layers[0].bias.detach().numpy()
    W2, b2 = model.readout.weight.detach().numpy(), model.readout.bias.detach().numpy()
    ref = np.maximum(x.numpy() @ W1.T + b1, 0) @ W2.T + b2
    np.testing.assert_allclose(model(x).detach().numpy(), ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- NaN/inf policy


def test_nan_inf_policy_is_documented_once_in_the_package_docstring():
    doc = dyn.__doc__
    assert "NaN/inf policy" in doc and "contains NaN" in doc and "singular kernel" in doc.lower().replace("\n", " ")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_policy_nonfinite_data_raise_valueerror_naming_the_argument(value):
    x = torch.eye(3, dtype=torch.float64)
    task = XORClusterTask(4, 2.0)
    train = task.sample(6, torch.Generator().manual_seed(0))
    ens = TwoLayerNTKEnsemble(2, 3, 8, 3, dtype=torch.float64)
    cases = [
        ("x1", lambda: relu_ntk(poison(x, value), x)),
        ("y_train", lambda: ntk_regression(x, poison(x, value), x)),
        ("mean", lambda: exact_recovery_probability(poison(x, value), torch.ones(3, dtype=torch.float64), x, 2)),
        ("x", lambda: fit_ensemble(ens, poison(x, value), x)),
        ("train.x", lambda: train_xor_gd(XORTwoLayerReLU(4, 4), XORClusterBatch(
            poison(train.x, value), train.y, train.y_clean, train.flipped, train.cluster), 0.1, 1)),
        ("x", lambda: MLP(3, 4, 2)(poison(x.float(), value))),
        ("member_outputs", lambda: exact_recovery_rate(poison(torch.ones(2, 3, 3), value), x, [1])),
    ]
    for name, fn in cases:
        with pytest.raises(ValueError, match="NaN or inf") as info:
            fn()
        assert str(info.value).startswith(name), (name, str(info.value))


def test_policy_singular_kernel_is_a_valueerror():
    x = torch.eye(2, dtype=torch.float64)
    for fn in (lambda: ntk_gp_posterior(torch.cat([x, x]), x), lambda: ntk_regression(torch.zeros(2, 2,
               dtype=torch.float64), x, x)):
        with pytest.raises(ValueError, match="singular"):
            fn()
