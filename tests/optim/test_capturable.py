"""``capturable=True`` on Lion, DiffGrad and AdaGrad-Norm: a step that never synchronises with the device.

No GPU here: the capturable step is exercised on the CPU by adding "cpu" to torch.optim's list of capturable
device types and refusing, during the step, every operation that reads a tensor on the host (``item``,
``bool``, ``float``, ``tolist``, ``nonzero``, ...): on CUDA each of those is a synchronisation, which a CUDA
graph capture forbids. The guard itself is shown to catch the for-loop path, which reads the step counter.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from gradlab.optim import AdaGradNorm, DiffGrad, Lion
from gradlab.optim._foreach import capturable_device_types

CASES = [
    (Lion, {"lr": 1e-2, "betas": (0.9, 0.99), "weight_decay": 0.1, "check_finite": False}),
    (Lion, {"lr": 1e-2, "betas": (0.3, 0.9), "maximize": True, "check_finite": False}),
    (DiffGrad, {"lr": 1e-2, "weight_decay": 0.1}),
    (DiffGrad, {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True}),
    (AdaGradNorm, {"lr": 0.1, "weight_decay": 0.1, "initial_accumulator_value": 0.5}),
    (AdaGradNorm, {"lr": 0.1, "weight_decay": 0.1, "decoupled_weight_decay": True}),
]
_HOST_READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
               torch.Tensor.__index__, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu,
               torch.Tensor.nonzero, torch.nonzero}


class _NoHostReads(TorchFunctionMode):
    """Raise on every operation that would copy a tensor's value to the host."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _HOST_READS:
            raise RuntimeError(f"host read during a capturable step: {getattr(func, '__name__', func)}")
        return func(*args, **(kwargs or {}))


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(7, 3, generator=gen, dtype=torch.float64)),
            nn.Parameter(torch.randn(5, generator=gen, dtype=torch.float64))]


def _grads(params, steps, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params] for _ in range(steps)]


def test_the_guard_catches_a_host_read():
    params = _params()
    opt = DiffGrad(params, lr=1e-2, foreach=False)
    for p, g in zip(params, _grads(params, 1)[0]):
        p.grad = g
    with pytest.raises(RuntimeError, match="host read"), _NoHostReads():
        opt.step()  # the for-loop path reads its step counter with .item()


@pytest.mark.parametrize("lr_kind", ["float", "tensor"])
@pytest.mark.parametrize(("cls", "kw"), CASES)
def test_capturable_step_reads_nothing_on_the_host_and_matches_the_loop_path(cls, kw, lr_kind, cpu_capturable):
    reference, captured = _params(), _params()
    lr = kw["lr"] if lr_kind == "float" else torch.tensor(kw["lr"], dtype=torch.float64)
    ref_opt = cls(reference, **kw, foreach=False)
    cap_opt = cls(captured, **{**kw, "lr": lr}, capturable=True)
    for step_grads in _grads(reference, 5):
        for p, q, g in zip(reference, captured, step_grads):
            p.grad, q.grad = g.clone(), g.clone()
        ref_opt.step()
        with _NoHostReads():
            cap_opt.step()
    for p, q in zip(reference, captured):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-12, atol=1e-14)
        assert cap_opt.state[q]["step"].device == q.device and float(cap_opt.state[q]["step"]) == 5.0
    assert all(group["capturable"] for group in cap_opt.param_groups)


@pytest.mark.parametrize(("cls", "kw"), CASES[::2])
def test_capturable_on_a_device_torch_cannot_capture_raises_before_anything_changes(cls, kw):
    assert "cpu" not in capturable_device_types()
    params = _params()
    before = [p.detach().clone() for p in params]
    opt = cls(params, **kw, capturable=True)
    for p, g in zip(params, _grads(params, 1)[0]):
        p.grad = g
    with pytest.raises(ValueError, match=r"capturable=True, param group 0: parameter 0 is on cpu"):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


@pytest.mark.parametrize(("cls", "kw"), CASES[::2])
def test_capturable_flag_is_validated(cls, kw):
    with pytest.raises(TypeError, match="capturable"):
        cls(_params(), **kw, capturable="yes")
    with pytest.raises(ValueError, match="capturable=True and fused=True"):
        cls(_params(), **kw, capturable=True, fused=True)


def test_capturable_lion_needs_check_finite_off():
    with pytest.raises(ValueError, match="check_finite=False"):
        Lion(_params(), lr=1e-2, capturable=True)


@pytest.mark.parametrize(("cls", "kw"), CASES[::2])
def test_capturable_tensor_lr_and_step_counters_must_be_on_the_parameters_device(cls, kw, cpu_capturable):
    params = _params()
    opt = cls(params, **{**kw, "lr": torch.tensor(kw["lr"], device="meta")}, capturable=True)
    for p, g in zip(params, _grads(params, 1)[0]):
        p.grad = g
    with pytest.raises(ValueError, match="a tensor lr must be on the parameters' device"):
        opt.step()
    opt.param_groups[0]["lr"] = kw["lr"]
    opt.step()
    opt.state[params[1]]["step"] = torch.zeros((), device="meta")
    before = [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match="step counter of parameter 1 is on meta"):
        opt.step()
    assert all(torch.equal(p.detach(), b) for p, b in zip(params, before))


@pytest.mark.parametrize(("cls", "kw"), CASES[::2])
def test_capturable_state_dict_loads_from_and_into_a_plain_optimizer(cls, kw, cpu_capturable):
    """A state saved without capturable continues under capturable (and back) with the same trajectory."""
    grads = _grads(_params(), 6)
    runs = []
    for flags in ({}, {"capturable": True}):
        params = _params()
        first = cls(params, **kw, foreach=False)
        for step_grads in grads[:3]:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            first.step()
        second = cls(params, **kw, **flags)
        second.load_state_dict(first.state_dict())
        for step_grads in grads[3:]:
            for p, g in zip(params, step_grads):
                p.grad = g.clone()
            second.step()
        runs.append(params)
    for p, q in zip(*runs):
        torch.testing.assert_close(q.detach(), p.detach(), rtol=1e-12, atol=1e-14)
