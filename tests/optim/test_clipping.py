"""coordinate_clip / CoordinateClip against a numpy reference (sort-based threshold) and against the wrapped
optimizers run on their own."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from gradlab.optim import CoordinateClip, DiffGrad, Lion, clip_coordinates, coordinate_clip


def np_clip(updates, fraction, scope):
    """Reference: clip the floor(fraction * n) largest |u| to the next magnitude (skipped if that is 0)."""

    def clip_one(flat):
        n = flat.size
        j = math.floor(fraction * n)
        if j == 0:
            return flat.copy()
        tau = np.sort(np.abs(flat))[n - j - 1]
        if tau == 0:
            return flat.copy()
        return np.clip(flat, -tau, tau)

    if scope == "per_tensor":
        return [clip_one(u.ravel()).reshape(u.shape) for u in updates]
    flat = clip_one(np.concatenate([u.ravel() for u in updates]))
    out, start = [], 0
    for u in updates:
        out.append(flat[start:start + u.size].reshape(u.shape))
        start += u.size
    return out


@pytest.mark.parametrize("scope", ["per_tensor", "global"])
@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.5, 0.9])
def test_clip_coordinates_matches_numpy(scope, fraction):
    rng = np.random.default_rng(0)
    shapes = [(7, 5), (35,), (3, 4, 2), (1,), (0, 3), (7, 5)]
    ups = [rng.standard_t(2, size=s) for s in shapes]  # heavy tails: a few large coordinates
    got = clip_coordinates([torch.tensor(u) for u in ups], fraction, scope)
    for g, r in zip(got, np_clip(ups, fraction, scope)):
        np.testing.assert_array_equal(g.numpy(), r)


def test_exactly_the_top_fraction_is_changed():
    u = torch.randperm(1000).double() - 500.0  # distinct magnitudes except +-k pairs
    u = u + 0.25 * torch.sign(u)
    out = coordinate_clip(u, fraction=0.1)
    changed = (out != u).sum().item()
    assert changed == 100 - 1 or changed == 100  # ties at the threshold magnitude stay unchanged
    assert out.abs().max() == torch.sort(u.abs()).values[899]
    assert torch.equal(torch.sign(out), torch.sign(u))


def test_zero_threshold_does_not_erase_a_sparse_update():
    u = torch.zeros(100, dtype=torch.float64)
    u[3], u[50] = 2.0, -5.0
    assert torch.equal(coordinate_clip(u, fraction=0.1), u)


def test_bad_arguments():
    with pytest.raises(ValueError, match="fraction"):
        coordinate_clip(torch.ones(3), fraction=1.0)
    with pytest.raises(ValueError, match="fraction"):
        coordinate_clip(torch.ones(3), fraction=-0.1)
    with pytest.raises(ValueError, match="scope"):
        coordinate_clip(torch.ones(3), scope="layer")
    with pytest.raises(TypeError, match="optimizer_or_update"):
        coordinate_clip("sgd")
    with pytest.raises(TypeError, match="floating"):
        coordinate_clip(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="optimizer"):
        CoordinateClip(nn.Linear(2, 2))


def _setup(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3)).double()
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randint(0, 3, (32,))
    return model, x, y


def _grad(model, x, y):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()


@pytest.mark.parametrize("scope", ["per_tensor", "global"])
def test_wrapped_sgd_takes_the_clipped_gradient_step(scope):
    model, x, y = _setup()
    opt = coordinate_clip(torch.optim.SGD(model.parameters(), lr=0.5), fraction=0.2, scope=scope)
    for _ in range(3):
        _grad(model, x, y)
        before = [p.detach().numpy().copy() for p in model.parameters()]
        grads = [p.grad.numpy().copy() for p in model.parameters()]
        opt.step()
        expected = np_clip([-0.5 * g for g in grads], 0.2, scope)
        for p, b, e in zip(model.parameters(), before, expected):
            np.testing.assert_allclose(p.detach().numpy() - b, e, rtol=0, atol=1e-15)


@pytest.mark.parametrize("inner", ["adam", "adamw", "lion", "diffgrad", "sgd_momentum"])
def test_wrapper_clips_the_update_of_any_optimizer_and_leaves_its_state_alone(inner):
    make = {
        "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
        "lion": lambda ps: Lion(ps, lr=1e-3, weight_decay=0.1),
        "diffgrad": lambda ps: DiffGrad(ps, lr=1e-2),
        "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
    }[inner]
    model, x, y = _setup()
    shadow = copy.deepcopy(model)
    opt = coordinate_clip(make(list(model.parameters())), fraction=0.1)
    for _ in range(4):
        # one unclipped step of a fresh copy of the inner optimizer, from the wrapped run's current state
        shadow.load_state_dict(model.state_dict())
        shadow_opt = make(list(shadow.parameters()))
        shadow_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
        _grad(model, x, y)
        _grad(shadow, x, y)
        before = [p.detach().clone() for p in model.parameters()]
        opt.step()
        shadow_opt.step()
        deltas = [(s - b).detach().numpy() for s, b in zip(shadow.parameters(), before)]
        for p, b, e in zip(model.parameters(), before, np_clip(deltas, 0.1, "per_tensor")):
            np.testing.assert_allclose((p - b).detach().numpy(), e, rtol=0, atol=1e-14)
        # the inner optimizer's state is its own: identical to the unclipped copy's
        for k, v in shadow_opt.state_dict()["state"].items():
            for name, t in v.items():
                assert torch.equal(opt.state_dict()["state"][k][name], t)


def test_fraction_zero_is_exactly_the_inner_optimizer():
    m1, x, y = _setup()
    m2 = copy.deepcopy(m1)
    o1 = coordinate_clip(torch.optim.Adam(m1.parameters(), lr=1e-2), fraction=0.0)
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-2)
    for _ in range(5):
        _grad(m1, x, y)
        _grad(m2, x, y)
        o1.step()
        o2.step()
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


def test_unclipped_coordinates_keep_the_inner_result_bit_for_bit():
    m1, x, y = _setup()
    m2 = copy.deepcopy(m1)
    o1 = coordinate_clip(torch.optim.Adam(m1.parameters(), lr=1e-2), fraction=0.05)
    o2 = torch.optim.Adam(m2.parameters(), lr=1e-2)
    _grad(m1, x, y)
    _grad(m2, x, y)
    o1.step()
    o2.step()
    equal = torch.cat([(a == b).reshape(-1) for a, b in zip(m1.parameters(), m2.parameters())])
    n = equal.numel()
    clipped_per_tensor = sum(math.floor(0.05 * p.numel()) for p in m1.parameters())
    assert (~equal).sum().item() <= clipped_per_tensor and equal.sum().item() >= n - clipped_per_tensor


def test_wrapper_works_with_schedulers_state_dict_deepcopy_and_closures():
    model, x, y = _setup()
    opt = coordinate_clip(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), fraction=0.1)
    assert isinstance(opt, torch.optim.Optimizer) and opt.param_groups is opt.optimizer.param_groups
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    losses = [opt.step(closure).item()]
    sched.step()
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    losses.append(opt.step(closure).item())
    sd = copy.deepcopy(opt.state_dict())
    twin = copy.deepcopy(opt)
    assert twin.fraction == 0.1 and twin.scope == "per_tensor"
    assert twin.optimizer.state_dict()["state"].keys() == sd["state"].keys()

    model2 = copy.deepcopy(model)
    opt2 = coordinate_clip(torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9), fraction=0.1)
    opt2.load_state_dict(sd)
    assert opt2.param_groups is opt2.optimizer.param_groups and opt2.param_groups[0]["lr"] == pytest.approx(0.05)
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    assert "CoordinateClip" in repr(opt)


def test_parameters_without_gradients_are_left_out_of_the_global_threshold():
    torch.manual_seed(0)
    a, b = nn.Parameter(torch.randn(10, dtype=torch.float64)), nn.Parameter(torch.randn(1000, dtype=torch.float64))
    opt = coordinate_clip(torch.optim.SGD([a, b], lr=1.0), fraction=0.1, scope="global")
    g = torch.randn(10, dtype=torch.float64)
    a.grad = g.clone()
    before = a.detach().clone()
    opt.step()  # b has no gradient: its zeros must not dilute the threshold (which would make it 0)
    expected = np_clip([-g.numpy()], 0.1, "global")[0]
    np.testing.assert_allclose((a - before).detach().numpy(), expected, rtol=0, atol=1e-15)


def test_clipping_large_model_global_scope_runs_without_quantile_limits():
    big = [torch.randn(3000, 100), torch.randn(50)]
    out = clip_coordinates(big, fraction=0.01, scope="global")
    tau = torch.cat([t.reshape(-1) for t in big]).abs().kthvalue(300050 - 3000).values
    assert max(o.abs().max().item() for o in out) == tau.item()
