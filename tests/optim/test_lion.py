"""Lion against independent references: the paper's equations (numpy), exact invariants of the sign update,
and (when installed) lucidrains' lion_pytorch and pytorch_optimizer's Lion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.optim import Lion


def reference_lion(theta0, grads, lr, beta1, beta2, wd=0.0, maximize=False):
    """Chen et al. (2023), Program 1, in numpy float64."""
    theta = np.array(theta0, dtype=np.float64)
    m = np.zeros_like(theta)
    for g in grads:
        g = -np.asarray(g) if maximize else np.asarray(g)
        c = beta1 * m + (1 - beta1) * g
        theta = theta - lr * (np.sign(c) + wd * theta)
        m = beta2 * m + (1 - beta2) * g
    return theta


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("kw", [{}, {"weight_decay": 0.1}, {"maximize": True, "weight_decay": 0.3},
                                {"betas": (0.5, 0.95)}])
def test_matches_equations_over_50_random_steps(kw, foreach):
    rng = np.random.default_rng(0)
    theta0 = rng.normal(size=(7, 5))
    grads = [rng.normal(size=(7, 5)) for _ in range(50)]
    betas = kw.get("betas", (0.9, 0.99))
    p = nn.Parameter(torch.tensor(theta0))
    opt = Lion([p], lr=1e-2, foreach=foreach, **kw)
    for g in grads:
        p.grad = torch.tensor(g)
        opt.step()
    ref = reference_lion(theta0, grads, 1e-2, *betas, wd=kw.get("weight_decay", 0.0), maximize=kw.get("maximize", False))
    np.testing.assert_allclose(p.detach().numpy(), ref, rtol=0, atol=1e-14)


def test_first_step_by_hand():
    # m0 = 0 -> c = (1 - beta1) g, so the step is -lr * sign(g); decay applied outside the sign
    p = nn.Parameter(torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64))
    opt = Lion([p], lr=0.1, betas=(0.9, 0.99), weight_decay=0.5)
    p.grad = torch.tensor([3.0, -0.001, 0.0], dtype=torch.float64)
    opt.step()
    expected = torch.tensor([2.0 * 0.95 - 0.1, -1.0 * 0.95 + 0.1, 0.5 * 0.95], dtype=torch.float64)
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.01 * p.grad, rtol=1e-14, atol=0)


def test_every_coordinate_moves_by_lr_or_zero_without_decay():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(50, dtype=torch.float64))
    opt = Lion([p], lr=3e-3)
    for _ in range(10):
        g = torch.randn(50, dtype=torch.float64)
        g[:5] = 0.0
        p.grad = g
        before = p.detach().clone()
        opt.step()
        moved = (p - before).abs()
        ok = torch.isclose(moved, torch.full_like(moved, 3e-3), rtol=1e-10, atol=0) | (moved == 0)
        assert bool(ok.all())


def test_momentum_is_the_beta2_ema_whatever_beta1():
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=4) for _ in range(8)]
    ema = np.zeros(4)
    for g in grads:
        ema = 0.99 * ema + 0.01 * g
    for beta1 in (0.0, 0.5, 0.9):
        p = nn.Parameter(torch.zeros(4, dtype=torch.float64))
        opt = Lion([p], lr=1e-3, betas=(beta1, 0.99))
        for g in grads:
            p.grad = torch.tensor(g)
            opt.step()
        np.testing.assert_allclose(opt.state[p]["exp_avg"].numpy(), ema, rtol=0, atol=1e-15)


def test_one_state_buffer_and_half_of_adamw_state_bytes():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    lion, adamw = Lion(model.parameters()), torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 64)).sum().backward()
    lion.step()
    adamw.step()
    p = model[0].weight
    assert set(lion.state[p]) == {"step", "exp_avg"}

    def nbytes(opt):
        return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))

    n_params = sum(p.numel() for p in model.parameters())
    assert nbytes(lion) == n_params * 4 + 4 * 4
    assert nbytes(adamw) == 2 * n_params * 4 + 4 * 4


@pytest.mark.parametrize("foreach", [False, True])
def test_against_lion_pytorch_and_pytorch_optimizer_when_installed(foreach):
    import lion_pytorch as lp
    import pytorch_optimizer as po
    rng = np.random.default_rng(2)
    theta0, grads = rng.normal(size=(7, 5)), [rng.normal(size=(7, 5)) for _ in range(50)]
    params = [nn.Parameter(torch.tensor(theta0)) for _ in range(3)]
    opts = [
        Lion([params[0]], lr=1e-2, weight_decay=0.1, foreach=foreach),
        lp.Lion([params[1]], lr=1e-2, weight_decay=0.1),
        po.Lion([params[2]], lr=1e-2, weight_decay=0.1, foreach=foreach),
    ]
    for g in grads:
        for p, o in zip(params, opts):
            p.grad = torch.tensor(g)  # a fresh tensor each: references may modify p.grad
            o.step()
    for other in params[1:]:
        np.testing.assert_allclose(params[0].detach().numpy(), other.detach().numpy(), rtol=0, atol=1e-14)
