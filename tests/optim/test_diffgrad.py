"""DiffGrad against independent references: the paper's equations (numpy), a hand-computed step,
torch.optim.Adam/AdamW where the friction coefficient is exactly 1, and the aliasing bug of the original code."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.optim import DiffGrad


def reference_diffgrad(theta0, grads, lr, beta1, beta2, eps, wd=0.0, decoupled=False, maximize=False):
    """The equations of Dubey et al. (2020) in numpy float64, eps added to the bias-corrected sqrt(v)."""
    theta = np.array(theta0, dtype=np.float64)
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    g_prev = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = -np.asarray(g) if maximize else np.asarray(g)
        if wd and decoupled:
            theta = theta * (1 - lr * wd)
        elif wd:
            g = g + wd * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        xi = 1.0 / (1.0 + np.exp(-np.abs(g_prev - g)))
        g_prev = g.copy()
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        theta = theta - lr * xi * m_hat / (np.sqrt(v_hat) + eps)
    return theta


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"weight_decay": 0.1},
        {"weight_decay": 0.1, "decoupled_weight_decay": True},
        {"maximize": True, "weight_decay": 0.05},
        {"betas": (0.5, 0.9), "eps": 1e-3},
    ],
)
def test_matches_equations_over_50_random_steps(kw, foreach):
    rng = np.random.default_rng(0)
    theta0 = rng.normal(size=(7, 5))
    grads = [rng.normal(size=(7, 5)) * rng.uniform(0.1, 3) for _ in range(50)]
    lr, betas, eps = 0.01, kw.get("betas", (0.9, 0.999)), kw.get("eps", 1e-8)
    p = nn.Parameter(torch.tensor(theta0))
    opt = DiffGrad([p], lr=lr, foreach=foreach, **kw)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    ref = reference_diffgrad(theta0, grads, lr, betas[0], betas[1], eps, wd=kw.get("weight_decay", 0.0),
                             decoupled=kw.get("decoupled_weight_decay", False), maximize=kw.get("maximize", False))
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=0, atol=1e-12)


def test_first_step_by_hand():
    # theta=1, g=0.5, lr=0.1, betas=(0.9, 0.999): m_hat = 0.5, v_hat = 0.25, xi = sigmoid(0.5)
    p = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    opt = DiffGrad([p], lr=0.1, eps=1e-8)
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    opt.step()
    xi = 1 / (1 + math.exp(-0.5))
    assert p.item() == pytest.approx(1.0 - 0.1 * xi * 0.5 / (0.5 + 1e-8), abs=1e-15)
    # second step, g=0.5 again: xi = sigmoid(0) = 0.5 exactly, m_hat = v_hat ** 0.5 = 0.5
    p.grad = torch.tensor([0.5], dtype=torch.float64)
    before = p.item()
    opt.step()
    assert before - p.item() == pytest.approx(0.1 * 0.5 * 0.5 / (0.5 + 1e-8), rel=1e-12)
    assert torch.equal(opt.state[p]["prev_grad"], torch.tensor([0.5], dtype=torch.float64))


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("decoupled", "ref_cls"), [(False, torch.optim.Adam), (True, torch.optim.AdamW)])
def test_equals_adam_bitwise_when_friction_is_one(foreach, decoupled, ref_cls):
    """Gradients that flip sign with magnitude > 40 make sigmoid(|g_prev - g|) == 1.0 exactly in float64."""
    torch.manual_seed(0)
    init = torch.randn(6, 3, dtype=torch.float64)
    p, q = nn.Parameter(init.clone()), nn.Parameter(init.clone())
    kw = dict(lr=0.05, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01)
    opt = DiffGrad([p], decoupled_weight_decay=decoupled, foreach=foreach, **kw)
    ref = ref_cls([q], foreach=foreach, **kw)
    for t in range(12):
        g = (50 + 10 * torch.rand(6, 3, dtype=torch.float64)) * (-1) ** t
        p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        assert torch.equal(p, q), f"step {t}"
    assert torch.equal(opt.state[p]["exp_avg"], ref.state[q]["exp_avg"])
    assert torch.equal(opt.state[p]["exp_avg_sq"], ref.state[q]["exp_avg_sq"])


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("set_to_none", [False, True])
def test_previous_gradient_is_a_copy_not_an_alias(set_to_none, foreach):
    """The original code stored p.grad itself as g_prev: with in-place zero_grad and backward the "previous"
    gradient became the current one, freezing xi at 0.5. A real training loop must match the equations."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    init = [p.detach().numpy().copy() for p in model.parameters()]
    opt = DiffGrad(model.parameters(), lr=0.05, foreach=foreach)
    grads_seen: list[list[np.ndarray]] = []
    for i in range(15):
        opt.zero_grad(set_to_none=set_to_none)
        xb, yb = x[i % 4 * 8:(i % 4 + 1) * 8], y[i % 4 * 8:(i % 4 + 1) * 8]
        nn.functional.mse_loss(model(xb), yb).backward()
        grads_seen.append([p.grad.numpy().copy() for p in model.parameters()])
        opt.step()
    for k, p in enumerate(model.parameters()):
        g_k = [gs[k] for gs in grads_seen]
        # the trajectory is driven by the gradients seen, so replaying them through the equations must agree
        np.testing.assert_allclose(p.detach().numpy(), reference_diffgrad(init[k], g_k, 0.05, 0.9, 0.999, 1e-8),
                                   rtol=0, atol=1e-12)
        np.testing.assert_array_equal(opt.state[p]["prev_grad"].numpy(), g_k[-1])
    # and the check above can fail: the aliasing bug (xi = 0.5 after step 1) gives a different trajectory
    w = model[0].weight
    g_w = [gs[0] for gs in grads_seen]
    frozen = _frozen_half_friction(init[0], g_w, 0.05, 0.9, 0.999, 1e-8)
    assert np.abs(frozen - w.detach().numpy()).max() > 1e-3


def _frozen_half_friction(theta0, grads, lr, beta1, beta2, eps):
    theta, m, v = np.array(theta0), np.zeros_like(theta0), np.zeros_like(theta0)
    for t, g in enumerate(grads, start=1):
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        xi = 1 / (1 + np.exp(-np.abs(g))) if t == 1 else 0.5
        theta = theta - lr * xi * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps)
    return theta


def test_friction_halves_adam_on_a_constant_gradient():
    """With a constant gradient xi = 0.5 from step 2 on: each step is half of Adam's."""
    p, q = nn.Parameter(torch.ones(3, dtype=torch.float64)), nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt, adam = DiffGrad([p], lr=0.01), torch.optim.Adam([q], lr=0.01)
    for t in range(5):
        p.grad = torch.full((3,), 2.0, dtype=torch.float64)
        q.grad = p.grad.clone()
        a, b = p.detach().clone(), q.detach().clone()
        opt.step()
        adam.step()
        if t > 0:
            torch.testing.assert_close(a - p, 0.5 * (b - q), rtol=1e-12, atol=0)


def test_state_has_three_buffers_in_param_dtype():
    p = nn.Parameter(torch.randn(4, 2))
    opt = DiffGrad([p])
    p.grad = torch.randn_like(p)
    opt.step()
    assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq", "prev_grad"}
    assert opt.state[p]["step"].ndim == 0 and opt.state[p]["step"].item() == 1.0


def test_against_pytorch_optimizer_when_installed():
    """pytorch_optimizer adds eps before the bias correction (and 1e-15 inside the sqrt); with a negligible eps
    both follow the same equations."""
    import pytorch_optimizer as po
    rng = np.random.default_rng(3)
    theta0, grads = rng.normal(size=(7, 5)), [rng.normal(size=(7, 5)) for _ in range(50)]
    for decoupled in (False, True):
        p, q = nn.Parameter(torch.tensor(theta0)), nn.Parameter(torch.tensor(theta0))
        ours = DiffGrad([p], lr=0.01, eps=1e-16, weight_decay=0.1, decoupled_weight_decay=decoupled)
        theirs = po.DiffGrad([q], lr=0.01, eps=1e-16, weight_decay=0.1, weight_decouple=decoupled)
        for g in grads:
            p.grad, q.grad = torch.tensor(g), torch.tensor(g)  # fresh tensors: the reference mutates p.grad
            ours.step()
            theirs.step()
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=1e-9, atol=1e-10)
