"""Bad input to gradlab's optimizers: every group validated, non-finite gradients, foreign state, low precision."""

import pytest
import torch

from gradlab.optim import AdaGradNorm, DiffGrad, Lion, coordinate_clip
from gradlab.optim._foreach import NonFiniteGradientError

OPTIMIZERS = [Lion, DiffGrad, AdaGradNorm]


def _params(n=2, shape=(4,)):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(shape)) for _ in range(n)]


BAD_GROUPS = [
    (Lion, {"lr": -0.1}, ValueError, "lr"), (Lion, {"betas": (1.5, 0.9)}, ValueError, "betas"),
    (Lion, {"weight_decay": -1.0}, ValueError, "weight_decay"),
    (DiffGrad, {"lr": -0.1}, ValueError, "lr"), (DiffGrad, {"betas": (0.9, 1.0)}, ValueError, "betas"),
    (DiffGrad, {"eps": 0.0}, ValueError, "eps"),
    (AdaGradNorm, {"lr": -0.1}, ValueError, "lr"), (AdaGradNorm, {"eps": -1.0}, ValueError, "eps"),
    (AdaGradNorm, {"initial_accumulator_value": float("nan")}, ValueError, "initial_accumulator_value"),
]


@pytest.mark.parametrize(("cls", "bad", "exc", "match"), BAD_GROUPS)
def test_every_param_group_is_validated(cls, bad, exc, match):
    a, b = _params()
    with pytest.raises(exc, match=match):  # in __init__
        cls([{"params": [a]}, {"params": [b], **bad}])
    opt = cls([a])
    with pytest.raises(exc, match=match):  # in add_param_group, and nothing was added
        opt.add_param_group({"params": [b], **bad})
    assert len(opt.param_groups) == 1
    a.grad = torch.ones_like(a)
    before = a.detach().clone()
    for key, value in bad.items():  # edited by hand after construction: caught at step, nothing moves
        opt.param_groups[0][key] = value
    with pytest.raises(exc, match=match):
        opt.step()
    assert torch.equal(a.detach(), before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_lion_refuses_nonfinite_gradients_before_changing_anything(bad):
    a, b = _params()
    opt = Lion([{"params": [a]}, {"params": [b]}], lr=0.1)
    a.grad, b.grad = torch.ones(4), torch.ones(4)
    opt.step()
    state = {k: v.clone() for k, v in opt.state[a].items()}
    pa, pb = a.detach().clone(), b.detach().clone()
    a.grad = torch.ones(4)
    b.grad = torch.tensor([1.0, bad, 1.0, 1.0])  # the second group is bad: the first must not move either
    with pytest.raises(NonFiniteGradientError, match="parameter 0 in param group 1"):
        opt.step()
    assert torch.equal(a.detach(), pa) and torch.equal(b.detach(), pb)
    assert all(torch.equal(opt.state[a][k], v) for k, v in state.items())
    assert isinstance(NonFiniteGradientError("x"), ValueError)


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_state_of_another_model_or_optimizer_is_refused_at_load(cls):
    small = [torch.nn.Parameter(torch.randn(3))]
    other = cls(small)
    small[0].grad = torch.ones(3)
    other.step()
    big = [torch.nn.Parameter(torch.randn(4))]
    opt = cls(big)
    big[0].grad = torch.ones(4)
    opt.step()
    before = {k: v.clone() for k, v in opt.state[big[0]].items()}
    if cls is AdaGradNorm:  # its state is scalar per parameter: corrupt the scalar instead
        sd = other.state_dict()
        sd["state"][0]["sum_sq"] = torch.ones(3)
        with pytest.raises(ValueError, match="sum_sq"):
            opt.load_state_dict(sd)
    else:
        with pytest.raises(ValueError, match=r"parameter 0 \(shape \(4,\)\).*shape \(3,\)"):
            opt.load_state_dict(other.state_dict())
    foreign = torch.optim.SGD(big, lr=0.1, momentum=0.9)
    foreign.step()
    with pytest.raises(ValueError, match="lacks"):
        opt.load_state_dict(foreign.state_dict())
    with pytest.raises(ValueError, match="param groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    with pytest.raises(TypeError, match="state_dict"):
        opt.load_state_dict([1, 2])
    assert all(torch.equal(opt.state[big[0]][k], v) for k, v in before.items())


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_tensor_lr_equals_float_lr(cls):
    a, b = _params(1)[0], _params(1)[0]
    o1, o2 = cls([a], lr=0.01), cls([b], lr=torch.tensor(0.01))
    for _ in range(3):
        a.grad, b.grad = a.detach() * 2, b.detach() * 2
        o1.step()
        o2.step()
    assert torch.equal(a, b)


def test_adagradnorm_float16_keeps_moving_where_a_float16_accumulator_would_overflow():
    p16 = torch.nn.Parameter(torch.zeros(1000, dtype=torch.float16))
    p32 = torch.nn.Parameter(torch.zeros(1000, dtype=torch.float32))
    o16, o32 = AdaGradNorm([p16], lr=1.0), AdaGradNorm([p32], lr=1.0)
    for _ in range(200):  # ||g||^2 = 1000 per step: b^2 passes float16's max (65504) after 66 steps
        p16.grad = torch.ones_like(p16)
        p32.grad = torch.ones_like(p32)
        o16.step()
        o32.step()
    assert o16.state[p16]["sum_sq"].dtype == torch.float32
    assert float(o16.state[p16]["sum_sq"]) == pytest.approx(200_000.0)
    last16 = p16.detach().clone()
    p16.grad = torch.ones_like(p16)
    o16.step()
    assert (p16.detach() != last16).all(), "the float16 update stalled"
    assert torch.allclose(p16.float(), p32.detach(), rtol=2e-3, atol=1e-2)


def test_coordinate_clip_validates_before_the_wrapped_optimizer_steps():
    good = torch.nn.Parameter(torch.randn(4))
    cplx = torch.nn.Parameter(torch.randn(4, dtype=torch.complex64))
    opt = coordinate_clip(torch.optim.SGD([good, cplx], lr=0.1), 0.25)
    good.grad, cplx.grad = torch.ones(4), torch.ones(4, dtype=torch.complex64)
    before = good.detach().clone()
    with pytest.raises(TypeError, match="complex"):
        opt.step()
    assert torch.equal(good.detach(), before), "the unclipped update was applied before the error"
    a = torch.nn.Parameter(torch.randn(4))
    b = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    glob = coordinate_clip(torch.optim.SGD([a, b], lr=0.1), 0.25, scope="global")
    a.grad, b.grad = torch.ones(4), torch.ones(4, dtype=torch.float64)
    pa = a.detach().clone()
    with pytest.raises(ValueError, match="global"):
        glob.step()
    assert torch.equal(a.detach(), pa)


@pytest.mark.parametrize("fused", [True, False])
def test_lion_check_finite_false_skips_the_check_per_group_and_equals_the_checked_step(fused):
    """check_finite=False is an explicit opt-out (for callers with a GradScaler): a group that opts out steps on a
    NaN gradient without raising (its momentum turns NaN, as documented), a group that keeps the default still
    raises; on finite gradients both settings give bit-identical steps and state dicts carry the flag."""
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(8)), torch.nn.Parameter(torch.randn(8))
    ref_a, ref_b = torch.nn.Parameter(a.detach().clone()), torch.nn.Parameter(b.detach().clone())
    opt = Lion([{"params": [a], "check_finite": False}, {"params": [b]}], lr=0.1, fused=fused)
    ref = Lion([{"params": [ref_a]}, {"params": [ref_b]}], lr=0.1, fused=fused)
    for _ in range(3):
        g1, g2 = torch.randn(8), torch.randn(8)
        a.grad, b.grad, ref_a.grad, ref_b.grad = g1.clone(), g2.clone(), g1.clone(), g2.clone()
        opt.step()
        ref.step()
    assert torch.equal(a, ref_a) and torch.equal(b, ref_b)
    assert opt.state_dict()["param_groups"][0]["check_finite"] is False
    a.grad, b.grad = torch.tensor([float("nan")] + [1.0] * 7), torch.ones(8)
    opt.step()  # the opted-out group does not raise
    assert torch.isnan(opt.state[a]["exp_avg"][0]) and bool(torch.isfinite(a).all())
    b.grad = torch.tensor([float("inf")] + [1.0] * 7)
    a.grad = torch.ones(8)
    with pytest.raises(NonFiniteGradientError, match="param group 1"):
        opt.step()
    with pytest.raises(TypeError, match="check_finite"):
        Lion([a], check_finite="no")
    old = ref.state_dict()
    for group in old["param_groups"]:
        del group["check_finite"]  # a checkpoint written before the flag existed
    again = Lion([ref_a, ref_b][:1], lr=0.1)
    again.add_param_group({"params": [ref_b]})
    again.load_state_dict(old)
    ref_a.grad, ref_b.grad = torch.ones(8), torch.tensor([float("nan")] + [1.0] * 7)
    with pytest.raises(NonFiniteGradientError):  # the old checkpoint keeps the safe default
        again.step()
