import math

import numpy as np
import pytest
import torch

from gradlab.dynamics.permutations import (
    TwoLayerNTKEnsemble,
    TwoLayerNTKNet,
    augment_bias,
    binary_inputs,
    empirical_ntk,
    exact_recovery_probability,
    exact_recovery_rate,
    fit_ensemble,
    ntk_gp_posterior,
    ntk_regression,
    permutation_ensemble_complexity,
    permute_bits,
    relu_nngp,
    relu_ntk,
    required_ensemble_size,
    round_outputs,
)


def test_binary_inputs_and_permutation():
    x = binary_inputs(4)
    assert x.shape == (15, 4) and len({tuple(r) for r in x.tolist()}) == 15 and (x.sum(1) > 0).all()
    px = permute_bits(x, [2, 0, 3, 1])
    assert torch.equal(px[:, 0], x[:, 2]) and torch.equal(px.sum(1), x.sum(1))
    with pytest.raises(ValueError, match="perm"):
        permute_bits(x, [0, 0, 1, 2])


def test_nngp_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    w = torch.randn(400_000, 3, generator=g, dtype=torch.float64)
    h = torch.relu(x @ w.T)
    mc = h @ h.T / w.shape[0]
    assert torch.allclose(relu_nngp(x, x), mc, rtol=0.02, atol=0.01)


def test_empirical_ntk_equals_jacobian_product():
    torch.manual_seed(0)
    net = TwoLayerNTKNet(3, 7, 2, bias=0.5).double()
    x1, x2 = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    params = [net.weight, net.readout]

    def jac(x):
        def f(w, a):
            h = torch.relu(augment_bias(x, 0.5) @ w.T)
            return (h @ a.T / math.sqrt(7)).reshape(-1)

        js = torch.autograd.functional.jacobian(f, tuple(p.detach() for p in params))
        return torch.cat([j.reshape(j.shape[0], -1) for j in js], 1)  # (n * o, P)

    full = (jac(x1) @ jac(x2).T).reshape(4, 2, 5, 2).permute(0, 2, 1, 3)
    emp = empirical_ntk(net, x1, x2, mode="full")
    assert torch.allclose(emp, full, atol=1e-10)
    assert torch.allclose(empirical_ntk(net, x1, x2, mode="trace"), full.diagonal(dim1=2, dim2=3).sum(-1))
    with pytest.raises(ValueError, match="mode"):
        empirical_ntk(net, x1, x2, mode="diag")


def test_empirical_ntk_approaches_closed_form_at_large_width():
    torch.manual_seed(1)
    x = binary_inputs(3, torch.float32)
    net = TwoLayerNTKNet(3, 6000, 1)
    emp = empirical_ntk(net, x, x, mode="full")[..., 0, 0].double()
    closed = relu_ntk(x.double(), x.double())
    assert (emp - closed).abs().max() < 0.06 * closed.abs().max()


def test_fit_ensemble_gradient_matches_autograd():
    torch.manual_seed(2)
    ens = TwoLayerNTKEnsemble(3, 4, 16, 4, bias=0.3, dtype=torch.float64)
    x, y = torch.eye(4, dtype=torch.float64), torch.rand(4, 4, dtype=torch.float64)
    w0, a0 = ens.weight.detach().clone(), ens.readout.detach().clone()
    loss = 0.5 * (ens(x) - y).pow(2).sum() / 4
    gw, ga = torch.autograd.grad(loss, [ens.weight, ens.readout])
    fit_ensemble(ens, x, y, lr=0.7, steps=1, tol=0.0)
    assert torch.allclose(ens.weight, w0 - 0.7 * gw) and torch.allclose(ens.readout, a0 - 0.7 * ga)
    # members are independent: member(i) reproduces slice i of the ensemble output
    assert torch.allclose(ens.member(1)(x), ens(x)[1])


def test_ensemble_mean_matches_ntk_regression():
    k = 4
    x_train = torch.eye(k)
    y_train = permute_bits(x_train, [1, 3, 0, 2])
    ens = TwoLayerNTKEnsemble(384, k, 1024, k, generator=torch.Generator().manual_seed(0))
    lam = float(torch.linalg.eigvalsh(relu_ntk(x_train.double(), x_train.double())).max())
    resid = fit_ensemble(ens, x_train, y_train, lr=k / lam, steps=200, tol=1e-5)
    assert resid < 1e-5
    x_test = binary_inputs(k, torch.float32)
    outs = ens.predict(x_test)
    mean = ntk_regression(x_train.double(), y_train.double(), x_test.double())
    _, var = ntk_gp_posterior(x_train.double(), x_test.double())
    # statistical tolerance: 4 standard errors of a 384-member mean plus a finite-width allowance
    tol = 4 * var.sqrt().max() / math.sqrt(384) + 0.03
    assert (outs.mean(0).double() - mean).abs().max() < tol
    assert torch.allclose(outs.std(0).mean(1).double(), var.sqrt(), atol=0.08)


def test_gp_posterior_zero_variance_at_training_points_and_sign_features():
    k = 5
    x_train = torch.eye(k, dtype=torch.float64)
    x = binary_inputs(k)
    coef, var = ntk_gp_posterior(x_train, x)
    single = x.sum(1) == 1
    assert torch.all(var[single] == 0) and torch.all(var[~single] > 0)
    mean = coef @ x_train  # identity permutation
    assert torch.all(mean[x > 0.5] > 0) and torch.all(mean[x < 0.5] <= 1e-12)


def test_exact_recovery_probability_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mean = torch.tensor([[0.6, -0.1, 0.3], [0.2, 0.1, -0.2]], dtype=torch.float64)
    var = torch.tensor([0.5, 0.3], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    m = 7
    p = exact_recovery_probability(mean, var, targets, m)
    draws = mean.numpy()[None] + rng.standard_normal((200_000, 2, 3)) * np.sqrt(var.numpy() / m)[None, :, None]
    mc = ((draws > 0) == (targets.numpy()[None] > 0.5)).all(-1).mean(0)
    assert np.allclose(p, mc, atol=0.005)
    # deterministic rows: mean exactly at the threshold is a 0-bit
    p0 = exact_recovery_probability(torch.tensor([[1.0, 0.0]]), torch.zeros(1), torch.tensor([[1.0, 0.0]]), 1)
    assert p0[0] == 1.0


def test_required_ensemble_size_is_the_smallest_sufficient_size():
    mean = torch.tensor([[0.5, -0.05]], dtype=torch.float64)
    var = torch.tensor([1.0], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    m = required_ensemble_size(mean, var, t, delta=0.05)
    assert exact_recovery_probability(mean, var, t, m)[0] >= 0.95
    assert exact_recovery_probability(mean, var, t, m - 1)[0] < 0.95
    wrong_sign = torch.tensor([[-0.5, -0.05]], dtype=torch.float64)
    assert required_ensemble_size(wrong_sign, var, t) == math.inf


def test_complexity_by_symmetry_equals_full_enumeration():
    k = 4
    res = permutation_ensemble_complexity(k, delta=0.05)
    x_train, x = torch.eye(k, dtype=torch.float64), binary_inputs(k)
    coef, var = ntk_gp_posterior(x_train, x)
    mean = coef @ x_train
    assert res["single"] == required_ensemble_size(mean, var, x, 0.05)
    assert res["all"] == required_ensemble_size(mean, var, x, 0.05, joint=True)
    assert res["all"] > res["single"] > 1


def test_exact_recovery_rate_and_rounding():
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    good = targets.expand(4, 2, 2).clone() * 2 - 0.5  # every member correct
    outs = torch.cat([good, -good])  # 4 correct members, then 4 inverted ones
    r = exact_recovery_rate(outs, targets, [1, 4, 8])
    assert r["per_input"] == [0.5, 0.5, 0.0] and r["all_inputs"] == [0.5, 0.5, 0.0]
    assert torch.equal(round_outputs(torch.tensor([0.0, 1e-9, -1.0])), torch.tensor([0.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="targets"):
        exact_recovery_rate(outs, targets[:1], [1])
