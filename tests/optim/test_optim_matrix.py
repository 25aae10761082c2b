"""torch.optim-style test matrix over gradlab's optimizers (DiffGrad, Lion, and AdaGradNorm for the fused path).

Mirrors the generic tests of ``torch/test/test_optim.py``: foreach == for-loop (bit for bit in float64),
fused == for-loop (bit for bit for Lion; within a few ulps where the fused arithmetic differs, see FUSED_RTOL),
state_dicts interchangeable between the paths, state_dict lockstep, param-group isolation, None/zero gradients,
empty parameter lists, deepcopy, p.grad untouched, every LR scheduler (float and tensor lr, every path), right
direction (and maximize), bad hyperparameters, sparse/complex gradients.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler

from gradlab.optim import AdaGradNorm, DiffGrad, Lion

CONFIGS = [
    (DiffGrad, {}),
    (DiffGrad, {"lr": 0.05, "weight_decay": 0.1}),
    (DiffGrad, {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    (DiffGrad, {"lr": 0.05, "betas": (0.5, 0.6), "eps": 1e-3, "maximize": True, "weight_decay": 0.2}),
    (Lion, {}),
    (Lion, {"lr": 0.01, "weight_decay": 0.5}),
    (Lion, {"lr": 0.01, "betas": (0.5, 0.0), "maximize": True, "weight_decay": 0.1}),
]
IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(CONFIGS)]
FUSED_CONFIGS = CONFIGS + [
    (AdaGradNorm, {"lr": 0.1}),
    (AdaGradNorm, {"lr": 0.1, "weight_decay": 0.1, "maximize": True}),
    (AdaGradNorm, {"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True, "initial_accumulator_value": 0.5}),
]
FUSED_IDS = [f"{cls.__name__}-{i}" for i, (cls, _) in enumerate(FUSED_CONFIGS)]
# Where the fused arithmetic differs from the loop path's (fixed before running, from the kernels' design):
# DiffGrad's sqrt and sigmoid (about 1 ulp each) and AdaGrad-Norm's squared-norm sums (another summation order)
# round differently; every step then differs by a few ulps, so the trajectories agree to a small multiple of the
# unit roundoff. Lion reproduces ATen's operation order and must agree bit for bit.
FUSED_RTOL = {Lion: {torch.float64: 0.0, torch.float32: 0.0},
              DiffGrad: {torch.float64: 1e-13, torch.float32: 1e-5},
              AdaGradNorm: {torch.float64: 1e-13, torch.float32: 1e-5}}


def _model(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)).to(dtype)
    m.register_parameter("scalar", nn.Parameter(torch.tensor(0.3, dtype=dtype)))  # 0-dim
    m.register_parameter("empty", nn.Parameter(torch.zeros(0, 3, dtype=dtype)))  # empty
    return m


def _loss(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m(x).pow(2).sum() + (m.scalar - 1.0) ** 2 * x.sum().abs() + m.empty.sum()


def _train(m: nn.Module, opt: torch.optim.Optimizer, steps: int, none_at: int | None = 3) -> None:
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        x = torch.randn(5, 3, generator=g, dtype=next(m.parameters()).dtype)
        opt.zero_grad()
        _loss(m, x).backward()
        if i == none_at:  # some parameters get no gradient on this step
            m[0].weight.grad = None
            m.scalar.grad = None
        opt.step()


def _state_equal(a: torch.optim.Optimizer, b: torch.optim.Optimizer) -> bool:
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    if sa.keys() != sb.keys():
        return False
    return all(sa[k].keys() == sb[k].keys() and all(torch.equal(sa[k][n], sb[k][n]) for n in sa[k]) for k in sa)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=IDS)
def test_foreach_matches_forloop_bitwise(cls, kw):
    m1, m2 = _model(), _model()
    o1, o2 = cls(m1.parameters(), foreach=False, **kw), cls(m2.parameters(), foreach=True, **kw)
    _train(m1, o1, 7)
    _train(m2, o2, 7)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert _state_equal(o1, o2)
    # the step counters are per parameter: parameters that missed a gradient are one step behind
    assert o1.state[m1[0].weight]["step"].item() == 6 and o1.state[m1[0].bias]["step"].item() == 7


@pytest.mark.parametrize("cls", [DiffGrad, Lion])
def test_foreach_mixed_dtypes_matches_forloop(cls):
    torch.manual_seed(0)
    ps = [torch.randn(4, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float32), torch.randn(2, dtype=torch.float64)]
    p1 = [nn.Parameter(p.clone()) for p in ps]
    p2 = [nn.Parameter(p.clone()) for p in ps]
    o1, o2 = cls(p1, lr=0.01, foreach=False), cls(p2, lr=0.01, foreach=True)
    for _ in range(4):
        for params, o in ((p1, o1), (p2, o2)):
            o.zero_grad()
            sum((p.double() ** 3).sum() for p in params).backward()
            o.step()
    for a, b in zip(p1, p2):
        assert a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=IDS)
def test_state_dict_roundtrip_mid_training(cls, kw):
    m1 = _model()
    o1 = cls(m1.parameters(), **kw)
    _train(m1, o1, 3)
    m2 = copy.deepcopy(m1)
    o2 = cls(m2.parameters(), **kw)
    o2.load_state_dict(copy.deepcopy(o1.state_dict()))
    assert _state_equal(o1, o2)
    assert isinstance(o2.state[m2[0].bias]["step"], torch.Tensor)
    for _ in range(4):  # lockstep on identical data
        _train(m1, o1, 1, none_at=None)
        _train(m2, o2, 1, none_at=None)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert _state_equal(o1, o2)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=IDS)
def test_deepcopy_is_independent(cls, kw):
    m = _model()
    o = cls(m.parameters(), **kw)
    _train(m, o, 2)
    c = copy.deepcopy(o)
    assert _state_equal(o, c)
    assert c.param_groups[0]["params"][0] is not o.param_groups[0]["params"][0]
    assert c.defaults == o.defaults
    _train(m, o, 1)
    assert not _state_equal(o, c)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=IDS)
def test_param_group_with_zero_lr_does_not_move(cls, kw):
    m = _model()
    frozen = [m[2].weight, m[2].bias]
    rest = [p for p in m.parameters() if all(p is not f for f in frozen)]
    before = [p.detach().clone() for p in frozen]
    kw_frozen = dict(kw, lr=0.0)
    o = cls([{"params": rest}, {"params": frozen, **{k: v for k, v in kw_frozen.items()}}], **kw)
    _train(m, o, 4)
    assert all(torch.equal(a, b) for a, b in zip(before, frozen))
    assert not torch.equal(m[0].bias, _model()[0].bias)


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=IDS)
def test_no_op_without_gradients_and_with_zero_gradients(cls, kw):
    m = _model()
    o = cls(m.parameters(), **kw)
    before = [p.detach().clone() for p in m.parameters()]
    o.step()  # no gradients at all
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters())) and len(o.state) == 0
    kw0 = dict(kw, weight_decay=0.0)
    o0 = cls(m.parameters(), **kw0)
    for p in m.parameters():
        p.grad = torch.zeros_like(p)
    o0.step()
    assert all(torch.equal(a, b) for a, b in zip(before, m.parameters()))


@pytest.mark.parametrize(("cls", "kw"), CONFIGS, ids=IDS)
def test_grad_is_never_mutated(cls, kw):
    m = _model()
    o = cls(m.parameters(), **kw)
    x = torch.randn(5, 3, dtype=torch.float64)
    for _ in range(3):
        o.zero_grad()
        _loss(m, x).backward()
        grads = [p.grad.clone() for p in m.parameters()]
        o.step()
        assert all(torch.equal(g, p.grad) for g, p in zip(grads, m.parameters()))


@pytest.mark.parametrize("cls", [DiffGrad, Lion])
@pytest.mark.parametrize("maximize", [False, True])
def test_goes_right_direction(cls, maximize):
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(10, 5))
    b = nn.Parameter(torch.randn(10))
    x = torch.randn(5)
    lr = 1e-2 if cls is Lion else 1e-1
    o = cls([w, b], lr=lr, maximize=maximize)

    def closure():
        o.zero_grad()
        loss = (w @ x + b).pow(2).sum()
        loss.backward()
        return loss

    first = closure().item()
    for _ in range(20):
        o.step(closure)
    last = closure().item()
    assert (last > first) if maximize else (last < first)


SCHEDULERS = {
    "LambdaLR": lambda opt: lr_scheduler.LambdaLR(opt, lambda e: 0.9**e),
    "MultiplicativeLR": lambda opt: lr_scheduler.MultiplicativeLR(opt, lambda e: 0.8),
    "StepLR": lambda opt: lr_scheduler.StepLR(opt, step_size=2, gamma=0.5),
    "MultiStepLR": lambda opt: lr_scheduler.MultiStepLR(opt, milestones=[1, 3], gamma=0.3),
    "ConstantLR": lambda opt: lr_scheduler.ConstantLR(opt, factor=0.25, total_iters=3),
    "LinearLR": lambda opt: lr_scheduler.LinearLR(opt, start_factor=0.2, total_iters=4),
    "ExponentialLR": lambda opt: lr_scheduler.ExponentialLR(opt, gamma=0.7),
    "PolynomialLR": lambda opt: lr_scheduler.PolynomialLR(opt, total_iters=5, power=2.0),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=5),
    "CosineAnnealingWarmRestarts": lambda opt: lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=2),
    "CyclicLR": lambda opt: lr_scheduler.CyclicLR(opt, base_lr=1e-3, max_lr=1e-2, step_size_up=2),
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=10),
    "SequentialLR": lambda opt: lr_scheduler.SequentialLR(
        opt, [lr_scheduler.ConstantLR(opt, 0.5, total_iters=2), lr_scheduler.ExponentialLR(opt, 0.9)],
        milestones=[2]),
    "ChainedScheduler": lambda opt: lr_scheduler.ChainedScheduler(
        [lr_scheduler.ExponentialLR(opt, 0.9), lr_scheduler.StepLR(opt, 2, 0.5)]),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=0, factor=0.5),
}
SCHEDULER_NAMES = list(SCHEDULERS)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_lr_scheduler_drives_lion(name):
    """With weight_decay=0 every coordinate Lion moves, moves by exactly the scheduled lr of that step."""
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    opt = Lion([p], lr=1e-2, betas=(0.9, 0.99))
    sched = SCHEDULERS[name](opt)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(6):
        lr = opt.param_groups[0]["lr"]
        seen.add(round(lr, 12))
        before = p.detach().clone()
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
        opt.step()
        moved = (p - before).abs()
        assert torch.allclose(moved, torch.full_like(moved, lr), rtol=1e-9, atol=0)
        if isinstance(sched, lr_scheduler.ReduceLROnPlateau):
            sched.step(1.0)  # never improves -> lr halves every step
        else:
            sched.step()
    assert len(seen) > 1, "the scheduler never changed the learning rate"


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_every_lr_scheduler_drives_diffgrad(name):
    """DiffGrad under a scheduler equals DiffGrad whose group lr is set by hand to the same sequence."""
    torch.manual_seed(0)
    init = torch.randn(6, 4, dtype=torch.float64)
    p1, p2 = nn.Parameter(init.clone()), nn.Parameter(init.clone())
    o1 = DiffGrad([p1], lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
    o2 = DiffGrad([p2], lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True)
    sched = SCHEDULERS[name](o1)
    g = torch.Generator().manual_seed(0)
    lrs = []
    for _ in range(6):
        lrs.append(o1.param_groups[0]["lr"])
        grad = torch.randn(init.shape, generator=g, dtype=torch.float64)
        p1.grad, p2.grad = grad.clone(), grad.clone()
        o2.param_groups[0]["lr"] = lrs[-1]
        o2.param_groups[0]["betas"] = o1.param_groups[0]["betas"]  # CyclicLR/OneCycleLR cycle beta1 too
        o1.step()
        o2.step()
        sched.step(1.0) if isinstance(sched, lr_scheduler.ReduceLROnPlateau) else sched.step()
    assert torch.equal(p1, p2) and len(set(lrs)) > 1


def test_empty_parameter_list_raises():
    for cls in (DiffGrad, Lion):
        with pytest.raises(ValueError, match="empty"):
            cls([])


@pytest.mark.parametrize(
    ("cls", "kw", "exc", "match"),
    [
        (DiffGrad, {"lr": -1e-3}, ValueError, "lr"),
        (DiffGrad, {"lr": float("nan")}, ValueError, "lr"),
        (DiffGrad, {"lr": torch.tensor([1e-3, 2e-3])}, TypeError, "lr"),
        (DiffGrad, {"betas": (1.0, 0.9)}, ValueError, r"betas\[0\]"),
        (DiffGrad, {"betas": (0.9, -0.1)}, ValueError, r"betas\[1\]"),
        (DiffGrad, {"betas": 0.9}, TypeError, "betas"),
        (DiffGrad, {"eps": 0.0}, ValueError, "eps"),
        (DiffGrad, {"weight_decay": -0.1}, ValueError, "weight_decay"),
        (DiffGrad, {"decoupled_weight_decay": 1}, TypeError, "decoupled_weight_decay"),
        (DiffGrad, {"foreach": "yes"}, TypeError, "foreach"),
        (Lion, {"lr": -1.0}, ValueError, "lr"),
        (Lion, {"betas": (0.9, 1.5)}, ValueError, r"betas\[1\]"),
        (Lion, {"betas": (0.9,)}, TypeError, "betas"),
        (Lion, {"weight_decay": float("inf")}, ValueError, "weight_decay"),
        (Lion, {"maximize": "no"}, TypeError, "maximize"),
    ],
)
def test_bad_hyperparameters(cls, kw, exc, match):
    with pytest.raises(exc, match=match):
        cls([nn.Parameter(torch.zeros(2))], **kw)


@pytest.mark.parametrize("cls", [DiffGrad, Lion])
@pytest.mark.parametrize("foreach", [False, True])
def test_sparse_and_complex_gradients_are_rejected(cls, foreach):
    emb = nn.Embedding(5, 3, sparse=True)
    emb(torch.tensor([0, 2])).sum().backward()
    with pytest.raises(TypeError, match="sparse"):
        cls(emb.parameters(), foreach=foreach).step()
    z = nn.Parameter(torch.randn(3, dtype=torch.complex64))
    z.grad = torch.ones_like(z)
    with pytest.raises(TypeError, match="complex"):
        cls([z], foreach=foreach).step()


@pytest.mark.parametrize("cls", [DiffGrad, Lion])
def test_can_load_state_dict_with_float_step_and_old_groups(cls):
    m = _model()
    o = cls(m.parameters(), lr=0.01)
    _train(m, o, 2)
    sd = copy.deepcopy(o.state_dict())
    for s in sd["state"].values():
        s["step"] = float(s["step"].item())
    for g in sd["param_groups"]:
        del g["foreach"], g["maximize"]
    o2 = cls(m.parameters(), lr=0.01)
    o2.load_state_dict(sd)
    assert all(torch.is_tensor(s["step"]) for s in o2.state.values())
    assert o2.param_groups[0]["maximize"] is False and o2.param_groups[0]["foreach"] is None
    _train(m, o2, 1)


@pytest.mark.parametrize("cls", [DiffGrad, Lion])
def test_float32_and_bfloat16_parameters_keep_dtype(cls):
    for dtype in (torch.float32, torch.bfloat16):
        p = nn.Parameter(torch.randn(4, 4, dtype=dtype))
        o = cls([p], lr=1e-2)
        p.grad = torch.randn_like(p)
        o.step()
        assert p.dtype == dtype and all(v.dtype == dtype for k, v in o.state[p].items() if k != "step")
        assert torch.isfinite(p.float()).all()


def test_optimizers_can_be_printed():
    for cls in (DiffGrad, Lion):
        text = repr(cls([nn.Parameter(torch.zeros(1))], lr=0.5))
        assert cls.__name__ in text and "lr: 0.5" in text


def test_foreach_default_follows_torch_optim():
    from gradlab.optim._foreach import group_by_device_and_dtype, resolve_foreach

    cpu = [torch.zeros(2), nn.Parameter(torch.zeros(3))]
    assert resolve_foreach(None, cpu) is False and resolve_foreach(True, cpu) is True
    assert resolve_foreach(False, cpu) is False and resolve_foreach(True, cpu, differentiable=True) is False
    a, b, c = torch.zeros(1), torch.zeros(2, dtype=torch.float64), torch.zeros(3)
    buckets = group_by_device_and_dtype([[a, b, c], [c, a, b]])
    assert [[t.shape for t in lst] for lst in buckets[0]] == [[(1,), (3,)], [(3,), (2,)]]
    assert [[t.shape for t in lst] for lst in buckets[1]] == [[(2,)], [(1,)]]
    with pytest.raises(ValueError, match="same length"):
        group_by_device_and_dtype([[a, b], [a]])


def _assert_state_close(a: torch.optim.Optimizer, b: torch.optim.Optimizer, rtol: float) -> None:
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].keys() == sb[k].keys()
        for n in sa[k]:
            if rtol == 0:
                assert torch.equal(sa[k][n], sb[k][n]), (k, n)
            else:
                torch.testing.assert_close(sa[k][n], sb[k][n], rtol=rtol, atol=rtol * 1e-3)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("cls", "kw"), FUSED_CONFIGS, ids=FUSED_IDS)
def test_fused_matches_foreach_and_forloop(cls, kw, dtype):
    models = [_model(dtype) for _ in range(3)]
    opts = [cls(m.parameters(), **flags, **kw)
            for m, flags in zip(models, ({"foreach": False}, {"foreach": True}, {"fused": True}))]
    for m, o in zip(models, opts):
        _train(m, o, 7)
    rtol = FUSED_RTOL[cls][dtype]
    loop, foreach, fused = models
    for p1, p2, p3 in zip(loop.parameters(), foreach.parameters(), fused.parameters()):
        assert torch.equal(p1, p2)
        if rtol == 0:
            assert torch.equal(p1, p3)
        else:
            torch.testing.assert_close(p3, p1, rtol=rtol, atol=rtol * 1e-3)
    _assert_state_close(opts[0], opts[2], rtol)
    assert opts[2].state[fused[0].weight]["step"].item() == 6 and opts[2].state[fused[0].bias]["step"].item() == 7


@pytest.mark.parametrize(("cls", "kw"), FUSED_CONFIGS, ids=FUSED_IDS)
def test_state_dict_is_interchangeable_between_fused_foreach_and_forloop(cls, kw):
    """A state saved by any path continues on any other path exactly as that path continues its own state."""
    rtol = FUSED_RTOL[cls][torch.float64]
    flags = ({"fused": True}, {"foreach": True}, {"foreach": False})
    for src in flags:
        m = _model()
        o = cls(m.parameters(), **src, **kw)
        _train(m, o, 3)
        saved = copy.deepcopy(o.state_dict())
        ends = []
        for dst in flags:
            m2 = copy.deepcopy(m)
            o2 = cls(m2.parameters(), **dst, **kw)
            sd = copy.deepcopy(saved)
            for g in sd["param_groups"]:  # the saved group carries its path flags; run the destination's
                g.update(fused=dst.get("fused"), foreach=dst.get("foreach"))
            o2.load_state_dict(sd)
            for _ in range(3):
                _train(m2, o2, 1, none_at=None)
            ends.append((m2, o2))
        (mf, of), (mfe, ofe), (ml, ol) = ends
        for pf, pfe, pl in zip(mf.parameters(), mfe.parameters(), ml.parameters()):
            assert torch.equal(pfe, pl)
            if rtol == 0:
                assert torch.equal(pf, pl)
            else:
                torch.testing.assert_close(pf, pl, rtol=rtol, atol=rtol * 1e-3)
        _assert_state_close(ol, of, rtol)


@pytest.mark.parametrize("cls", [DiffGrad, Lion, AdaGradNorm])
def test_fused_param_groups_with_different_hyperparameters(cls):
    """Two groups with different lr, betas/eps, weight decay and maximize: fused == loop group by group."""
    rtol = FUSED_RTOL[cls][torch.float64]
    per_cls = {
        Lion: ({"lr": 0.01, "betas": (0.9, 0.99)}, {"lr": 0.03, "betas": (0.5, 0.9), "weight_decay": 0.2,
                                                    "maximize": True}),
        DiffGrad: ({"lr": 0.01}, {"lr": 0.05, "betas": (0.5, 0.6), "eps": 1e-3, "weight_decay": 0.1,
                                  "decoupled_weight_decay": True, "maximize": True}),
        AdaGradNorm: ({"lr": 0.1}, {"lr": 0.3, "eps": 1e-3, "weight_decay": 0.1, "maximize": True}),
    }
    ends = []
    for flags in ({"foreach": False}, {"fused": True}):
        m = _model()
        first, second = per_cls[cls]
        o = cls([{"params": [m[0].weight, m[0].bias], **first},
                 {"params": [m[2].weight, m[2].bias, m.scalar, m.empty], **second}], **flags)
        _train(m, o, 5)
        ends.append(m)
    for p1, p2 in zip(ends[0].parameters(), ends[1].parameters()):
        if rtol == 0:
            assert torch.equal(p1, p2)
        else:
            torch.testing.assert_close(p2, p1, rtol=rtol, atol=0)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
@pytest.mark.parametrize("tensor_lr", [False, True], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("flags", [{"fused": True}, {"foreach": True}, {"foreach": False},
                                   {"capturable": True, "check_finite": False}],
                         ids=["fused", "foreach", "loop", "capturable"])
def test_every_lr_scheduler_drives_every_lion_path(name, tensor_lr, flags, request):
    """Every coordinate moves by exactly the scheduled lr of that step, on every path, lr float or tensor."""
    if flags.get("capturable"):
        request.getfixturevalue("cpu_capturable")
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    opt = Lion([p], lr=torch.tensor(1e-2, dtype=torch.float64) if tensor_lr else 1e-2, **flags)
    sched = SCHEDULERS[name](opt)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(6):
        lr = float(opt.param_groups[0]["lr"])
        seen.add(round(lr, 12))
        before = p.detach().clone()
        p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64)
        opt.step()
        moved = (p - before).abs()
        assert torch.allclose(moved, torch.full_like(moved, lr), rtol=1e-9, atol=0)
        sched.step(1.0) if isinstance(sched, lr_scheduler.ReduceLROnPlateau) else sched.step()
    assert len(seen) > 1, "the scheduler never changed the learning rate"
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor) == tensor_lr


@pytest.mark.parametrize("cls", [DiffGrad, AdaGradNorm])
@pytest.mark.parametrize("name", ["LinearLR", "CosineAnnealingWarmRestarts", "ReduceLROnPlateau"])
@pytest.mark.parametrize("tensor_lr", [False, True], ids=["float-lr", "tensor-lr"])
@pytest.mark.parametrize("path", ["fused", "capturable"])
def test_lr_schedulers_drive_fused_like_forloop(cls, name, tensor_lr, path, request):
    """The fused step, and the capturable step, under a scheduler equal the for-loop step under the same scheduler
    (float or tensor lr)."""
    if path == "capturable":
        request.getfixturevalue("cpu_capturable")
    rtol = FUSED_RTOL[cls][torch.float64]
    init = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ends = []
    for flags in ({"foreach": False}, {path: True}):
        p = nn.Parameter(init.clone())
        lr = torch.tensor(1e-2, dtype=torch.float64) if tensor_lr else 1e-2
        opt = cls([p], lr=lr, weight_decay=0.1, **flags)
        sched = SCHEDULERS[name](opt)
        g = torch.Generator().manual_seed(1)
        for _ in range(6):
            p.grad = torch.randn(init.shape, generator=g, dtype=torch.float64)
            opt.step()
            sched.step(1.0) if isinstance(sched, lr_scheduler.ReduceLROnPlateau) else sched.step()
        ends.append(p.detach())
    torch.testing.assert_close(ends[1], ends[0], rtol=max(rtol, 1e-15), atol=0)
