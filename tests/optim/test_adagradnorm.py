"""Tests of AdaGradNorm against references written from the equations and torch.optim.Adagrad."""

import copy
import math

import pytest
import torch

from gradlab.optim.adagradnorm import AdaGradNorm


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2)).double()


def _loss(model: torch.nn.Module, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 5, generator=g, dtype=torch.float64)
    return model(x).pow(2).mean()


def _reference(params, grads_seq, lr, b0sq, eps, wd=0.0, decoupled=False, maximize=False):
    """AdaGrad-Norm written from the equations over the flattened parameter vector."""
    x = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    bsq = b0sq
    for g in grads_seq:
        d = -g if maximize else g.clone()
        if wd and not decoupled:
            d = d + wd * x
        bsq = bsq + float((d * d).sum())
        if wd and decoupled:
            x = x * (1 - lr * wd)
        x = x - lr * d / (math.sqrt(bsq) + eps)
    return x


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("wd,decoupled,maximize", [(0.0, False, False), (0.1, False, False), (0.1, True, False),
                                                   (0.0, False, True)])
def test_matches_equations(foreach, wd, decoupled, maximize):
    model = _model()
    params = list(model.parameters())
    x0 = [p.detach().clone() for p in params]
    opt = AdaGradNorm(params, lr=0.3, initial_accumulator_value=0.5, eps=1e-8, weight_decay=wd,
                      decoupled_weight_decay=decoupled, maximize=maximize, foreach=foreach)
    grads = []
    for t in range(6):
        opt.zero_grad()
        _loss(model, t).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in params]).clone())
        opt.step()
    ref = _reference(x0, grads, 0.3, 0.5, 1e-8, wd, decoupled, maximize)
    got = torch.cat([p.detach().reshape(-1) for p in params])
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-13)
    if wd == 0:
        assert float(opt.accumulator()) == pytest.approx(0.5 + sum(float(g.pow(2).sum()) for g in grads), rel=1e-12)


def test_single_scalar_equals_torch_adagrad():
    """For one scalar parameter, ||g|| = |g|, so AdaGrad-Norm is torch.optim.Adagrad."""
    a = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    ours = AdaGradNorm([a], lr=0.2, initial_accumulator_value=0.3, eps=1e-10)
    ref = torch.optim.Adagrad([b], lr=0.2, initial_accumulator_value=0.3, eps=1e-10)
    for _ in range(20):
        for p, o in ((a, ours), (b, ref)):
            o.zero_grad()
            (p.pow(4).sum() - 3 * p.sum()).backward()
            o.step()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_one_scalar_for_the_whole_group_not_per_tensor():
    """Both tensors are scaled by the same b: the 1-D bias must use its own gradient and the group norm."""
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = AdaGradNorm([w, bias], lr=1.0, eps=0.0 + 1e-300)
    w.grad = torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64)
    bias.grad = torch.tensor([4.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.tensor([-0.6, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(bias.detach(), torch.tensor([-0.8], dtype=torch.float64))


def test_foreach_equals_loop_bitwise_float64_with_none_grads():
    m1, m2 = _model(1), _model(1)
    e1 = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    e2 = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    o1 = AdaGradNorm([*m1.parameters(), e1], lr=0.1, weight_decay=0.01, foreach=False)
    o2 = AdaGradNorm([*m2.parameters(), e2], lr=0.1, weight_decay=0.01, foreach=True)
    for t in range(7):
        for m, o, e in ((m1, o1, e1), (m2, o2, e2)):
            o.zero_grad(set_to_none=True)
            _loss(m, t).backward()
            e.grad = torch.zeros(0, dtype=torch.float64)
            if t == 3:
                m[0].weight.grad = None
            o.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
        for k in ("sum_sq", "step"):
            if o1.state[p1]:
                assert torch.equal(o1.state[p1][k], o2.state[p2][k])


def test_state_dict_round_trip_mid_training():
    m1 = _model(2)
    o1 = AdaGradNorm(m1.parameters(), lr=0.05)
    for t in range(3):
        o1.zero_grad()
        _loss(m1, t).backward()
        o1.step()
    m2 = copy.deepcopy(m1)
    o2 = AdaGradNorm(m2.parameters(), lr=0.05)
    o2.load_state_dict(copy.deepcopy(o1.state_dict()))
    assert o2.state[next(m2.parameters())]["step"].item() == 3
    for t in range(3, 6):
        for m, o in ((m1, o1), (m2, o2)):
            o.zero_grad()
            _loss(m, t).backward()
            o.step()
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)


def test_param_groups_are_isolated_and_grad_not_mutated():
    a = torch.ones(2, dtype=torch.float64, requires_grad=True)
    b = torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = AdaGradNorm([{"params": [a]}, {"params": [b], "lr": 1e-28}], lr=0.5, maximize=True, weight_decay=0.1)
    a.grad = torch.tensor([1.0, 2.0], dtype=torch.float64)
    b.grad = torch.tensor([100.0, 100.0], dtype=torch.float64)
    ga = a.grad.clone()
    opt.step()
    assert torch.equal(a.grad, ga)
    assert torch.equal(b.detach(), torch.ones(2, dtype=torch.float64))
    # group 0's accumulator ignores group 1's huge gradient: b^2 = ||-g + 0.1 a||^2
    d = -ga + 0.1 * torch.ones(2, dtype=torch.float64)
    assert float(opt.accumulator(0)) == pytest.approx(float(d.pow(2).sum()))


def test_goes_right_direction_and_works_with_scheduler():
    model = _model(3)
    opt = AdaGradNorm(model.parameters(), lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    first = None
    for t in range(20):
        opt.zero_grad()
        loss = _loss(model, 0)
        first = first if first is not None else loss.item()
        loss.backward()
        opt.step()
        sched.step()
    assert _loss(model, 0).item() < 0.5 * first
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * 0.5**4)


def test_zero_grads_are_noop_and_deepcopy():
    p = torch.ones(3, requires_grad=True)
    opt = AdaGradNorm([p], lr=0.1, initial_accumulator_value=1.0)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3))
    clone = copy.deepcopy(opt)
    assert clone.param_groups[0]["lr"] == 0.1 and clone.param_groups[0]["params"][0] is not p
    assert torch.equal(clone.state[clone.param_groups[0]["params"][0]]["sum_sq"], opt.state[p]["sum_sq"])
    with pytest.raises(ValueError):
        AdaGradNorm([], lr=0.1)


@pytest.mark.parametrize("kwargs,exc", [({"lr": -1.0}, ValueError), ({"lr": float("nan")}, ValueError),
                                        ({"eps": 0.0}, ValueError), ({"weight_decay": -0.1}, ValueError),
                                        ({"initial_accumulator_value": -1.0}, ValueError),
                                        ({"maximize": 1}, TypeError)])
def test_bad_hyperparameters(kwargs, exc):
    with pytest.raises(exc):
        AdaGradNorm([torch.zeros(2, requires_grad=True)], **kwargs)


def test_sparse_and_complex_rejected_with_typeerror_like_diffgrad_and_lion():
    emb = torch.nn.Embedding(4, 2, sparse=True)
    opt = AdaGradNorm(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()
    c = torch.zeros(2, dtype=torch.complex64, requires_grad=True)
    c.grad = torch.ones(2, dtype=torch.complex64)
    with pytest.raises(TypeError, match="complex"):
        AdaGradNorm([c]).step()
