import numpy as np
import pytest
import torch

from gradlab.incontext.learners import (
    gd_iterates, gd_lsa_construction, gd_plus_plus, gd_plus_plus_construction, gradient_descent, mesa_construction,
    newton_iterates, newton_schulz, ols, one_step_gd_ar, prefix_predictions, ridge, zfb_gamma, zfb_population_risk,
)
from gradlab.incontext.models import LinearSelfAttention, MultiLayerLSA, ar_tokens, regression_prediction, regression_tokens
from gradlab.incontext.tasks import AutoregressiveTask, LinearRegressionTask


@pytest.fixture
def batch():
    return LinearRegressionTask(4, noise_std=0.3, seed=0, dtype=torch.float64).sample(6, 9)


def test_ols_matches_numpy_lstsq(batch):
    w = ols(batch.xs, batch.ys)
    for i in range(batch.batch_size):
        ref = np.linalg.lstsq(batch.xs[i].numpy(), batch.ys[i].numpy(), rcond=None)[0]
        np.testing.assert_allclose(w[i].numpy(), ref, atol=1e-10)


def test_ols_min_norm_underdetermined():
    b = LinearRegressionTask(6, seed=1, dtype=torch.float64).sample(3, 3)
    w = ols(b.xs, b.ys)
    for i in range(3):
        ref = np.linalg.lstsq(b.xs[i].numpy(), b.ys[i].numpy(), rcond=None)[0]  # min-norm solution
        np.testing.assert_allclose(w[i].numpy(), ref, atol=1e-10)


def test_ridge_closed_form(batch):
    lam = 0.7
    w = ridge(batch.xs, batch.ys, lam)
    x, y = batch.xs[2].numpy(), batch.ys[2].numpy()
    ref = np.linalg.solve(x.T @ x + lam * np.eye(4), x.T @ y)
    np.testing.assert_allclose(w[2].numpy(), ref, atol=1e-10)
    with pytest.raises(ValueError, match="lam"):
        ridge(batch.xs, batch.ys, 0.0)


def test_gradient_descent_hand_step(batch):
    w1 = gradient_descent(batch.xs, batch.ys, 1, 0.05)
    ref = 0.05 * torch.einsum("bnd,bn->bd", batch.xs, batch.ys)
    torch.testing.assert_close(w1, ref)
    w1n = gradient_descent(batch.xs, batch.ys, 1, 0.05, normalize=True)
    torch.testing.assert_close(w1n, ref / batch.n_context)


def test_gd_closed_form_equals_loop_and_converges(batch):
    w0 = torch.randn(4, dtype=torch.float64)
    it = gd_iterates(batch.xs, batch.ys, [0, 1, 7, 30], 0.02, w0=w0)
    for k_i, k in enumerate([0, 1, 7, 30]):
        torch.testing.assert_close(it[k_i], gradient_descent(batch.xs, batch.ys, k, 0.02, w0=w0))
    far = gd_iterates(batch.xs, batch.ys, [100000], 0.02)[0]
    torch.testing.assert_close(far, ols(batch.xs, batch.ys), atol=1e-8, rtol=1e-8)


def test_gd_closed_form_singular():
    b = LinearRegressionTask(5, seed=2, dtype=torch.float64).sample(3, 2)
    it = gd_iterates(b.xs, b.ys, [3, 20000], 0.05)
    torch.testing.assert_close(it[0], gradient_descent(b.xs, b.ys, 3, 0.05))
    torch.testing.assert_close(it[1], ols(b.xs, b.ys), atol=1e-8, rtol=1e-8)  # min-norm limit from w0 = 0


def test_lsa_construction_equals_one_gd_step(batch):
    lr = 0.8
    layer = LinearSelfAttention(5, include_query=False, dtype=torch.float64)
    layer.load_state_dict(gd_lsa_construction(4, lr, batch.n_context, torch.float64))
    pred = regression_prediction(layer(regression_tokens(batch)))
    ref = (gradient_descent(batch.xs, batch.ys, 1, lr, normalize=True) * batch.xq).sum(-1)
    assert float((pred - ref).abs().max().detach()) < 1e-6


def test_stacked_construction_equals_k_gd_steps(batch):
    model = MultiLayerLSA(5, 4, include_query=False, dtype=torch.float64)
    for layer in model.layers:
        layer.load_state_dict(gd_lsa_construction(4, 0.3, batch.n_context, torch.float64))
    pred = regression_prediction(model(regression_tokens(batch)))
    ref = (gradient_descent(batch.xs, batch.ys, 4, 0.3, normalize=True) * batch.xq).sum(-1)
    assert float((pred - ref).abs().max().detach()) < 1e-6


def test_gd_plus_plus(batch):
    # gamma = 0 is plain GD on the mean loss
    p0 = gd_plus_plus(batch.xs, batch.ys, batch.xq, 3, 0.4, 0.0)
    ref = (gradient_descent(batch.xs, batch.ys, 3, 0.4, normalize=True) * batch.xq).sum(-1)
    torch.testing.assert_close(p0, ref)
    # the merged LSA construction reproduces the GD++ recursion
    model = MultiLayerLSA(5, 3, include_query=False, parametrization="merged", dtype=torch.float64)
    for layer in model.layers:
        layer.load_state_dict(gd_plus_plus_construction(4, 0.4, 0.01, batch.n_context, torch.float64))
    pred = regression_prediction(model(regression_tokens(batch)))
    torch.testing.assert_close(pred, gd_plus_plus(batch.xs, batch.ys, batch.xq, 3, 0.4, 0.01))


def test_newton_schulz_converges_to_pinv():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 3, dtype=torch.float64, generator=g)
    s = a @ a.T  # rank 3, singular
    m = newton_schulz(s, 20)  # past the warm-up, before rounding-level null-space eigenvalues are amplified
    torch.testing.assert_close(m, torch.linalg.pinv(s, hermitian=True), atol=1e-9, rtol=1e-9)
    # quadratic convergence: once the error is < 1 it squares at every iteration
    spd = torch.randn(6, 6, dtype=torch.float64, generator=g)
    spd = spd @ spd.T + 0.1 * torch.eye(6, dtype=torch.float64)
    inv = torch.linalg.inv(spd)
    errs = [float(torch.linalg.matrix_norm(torch.eye(6, dtype=torch.float64) - spd @ mk, ord=2))
            for mk in newton_schulz(spd, 40, return_all=True)]
    k = next(i for i, e in enumerate(errs) if e < 0.5)
    assert errs[k + 1] <= errs[k] ** 2 * 1.0001
    torch.testing.assert_close(newton_schulz(spd, 40), inv, atol=1e-8, rtol=1e-8)


def test_newton_iterates_reach_ols(batch):
    it = newton_iterates(batch.xs, batch.ys, [1, 5, 40])
    assert it.shape == (3, 6, 4)
    torch.testing.assert_close(it[2], ols(batch.xs, batch.ys), atol=1e-8, rtol=1e-8)
    gap = [(w - ols(batch.xs, batch.ys)).norm() for w in it]
    assert gap[0] > gap[1] > gap[2]


def test_prefix_predictions(batch):
    p = prefix_predictions(ols, batch.xs, batch.ys)
    assert p.shape == (6, 9)
    for i in (0, 3, 8):
        w = ols(batch.xs[:, :i], batch.ys[:, :i]) if i else torch.zeros(6, 4, dtype=torch.float64)
        torch.testing.assert_close(p[:, i], (w * batch.xs[:, i]).sum(-1))
    pk = prefix_predictions(lambda x, y: newton_iterates(x, y, [2, 3]), batch.xs, batch.ys)
    assert pk.shape == (2, 6, 9)


def test_zfb_risk_matches_monte_carlo():
    lam = torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64))
    n = 10
    g_inv = torch.linalg.inv(zfb_gamma(lam, n))
    task = LinearRegressionTask(3, covariance=lam, seed=0, dtype=torch.float64)
    b = task.sample(200000, n)
    pred = (b.xq * (torch.einsum("bnd,bn->bd", b.xs, b.ys) / n @ g_inv.T)).sum(-1)
    emp = float(0.5 * (pred - b.yq).pow(2).mean())
    formula = float(zfb_population_risk(g_inv, lam, n))
    assert abs(emp / formula - 1) < 0.03
    # Gamma^{-1} is the minimiser: the gradient of the closed form vanishes there
    bb = g_inv.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(zfb_population_risk(bb, lam, n), bb)
    assert float(grad.abs().max()) < 1e-12


def test_mesa_construction_equals_one_step_gd_ar():
    xs = AutoregressiveTask(3, seed=0, dtype=torch.complex128).sample(4, 12).xs
    layer = LinearSelfAttention(6, out_dim=3, residual=False, parametrization="merged", causal=True, normalize=True,
                                dtype=torch.complex128)
    layer.load_state_dict(mesa_construction(3, 0.5, 0.8, torch.complex128))
    torch.testing.assert_close(layer(ar_tokens(xs)), one_step_gd_ar(xs, 0.4))
    # hand-computed position t = 3 (1-based): c/2 * (x_2 x_1^H + x_3 x_2^H) x_3
    t3 = 0.4 / 2 * (xs[:, 1, :, None] * xs[:, 0, None, :].conj() + xs[:, 2, :, None] * xs[:, 1, None, :].conj())
    torch.testing.assert_close(one_step_gd_ar(xs, 0.4)[:, 2], (t3 @ xs[:, 2, :, None]).squeeze(-1))


def test_bad_arguments(batch):
    with pytest.raises(ValueError, match="ys"):
        ols(batch.xs, batch.ys[:, :3])
    with pytest.raises(ValueError, match="lr"):
        gradient_descent(batch.xs, batch.ys, 2, -1.0)
    with pytest.raises(ValueError, match="square"):
        newton_schulz(torch.randn(3, 4, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="steps"):
        gd_iterates(batch.xs, batch.ys, [], 0.1)
