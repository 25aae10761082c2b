"""The shared optimizer helpers: upgrading unpickled state, and pickling round trips of every optimizer."""

import pickle

import pytest
import torch

from gradlab.optim import AdaGradNorm, DiffGrad, Lion
from gradlab.optim._foreach import new_step_tensor, restore_state_defaults

OPTIMIZERS = [
    (DiffGrad, dict(lr=1e-2), ("decoupled_weight_decay", "maximize", "foreach")),
    (Lion, dict(lr=1e-3), ("maximize", "foreach")),
    (AdaGradNorm, dict(lr=1e-1), ("decoupled_weight_decay", "maximize", "foreach")),
]


def _stepped(cls, kwargs):
    w = torch.nn.Parameter(torch.randn(3, 2))
    opt = cls([w], **kwargs)
    w.grad = torch.randn_like(w)
    opt.step()
    return w, opt


@pytest.mark.parametrize("cls,kwargs,keys", OPTIMIZERS)
def test_setstate_restores_group_defaults_and_tensor_steps(cls, kwargs, keys):
    w, opt = _stepped(cls, kwargs)
    legacy = opt.__getstate__()
    for key in keys:
        legacy["param_groups"][0].pop(key)
    legacy["state"][w]["step"] = 1  # older versions stored a Python number
    opt.__setstate__(legacy)
    assert torch.is_tensor(opt.state[w]["step"]) and float(opt.state[w]["step"]) == 1.0
    assert opt.state[w]["step"].dtype == new_step_tensor().dtype
    assert opt.param_groups[0]["maximize"] is False and opt.param_groups[0]["foreach"] is None
    w.grad = torch.randn_like(w)
    opt.step()
    assert float(opt.state[w]["step"]) == 2.0


@pytest.mark.parametrize("cls,kwargs,keys", OPTIMIZERS)
def test_pickle_round_trip_steps_identically(cls, kwargs, keys):
    w, opt = _stepped(cls, kwargs)
    w2, opt2 = pickle.loads(pickle.dumps((w, opt)))
    g = torch.randn_like(w)
    w.grad, w2.grad = g.clone(), g.clone()
    opt.step()
    opt2.step()
    assert torch.equal(w.detach(), w2.detach())


def test_restore_state_defaults_keeps_existing_values():
    w = torch.nn.Parameter(torch.zeros(2))
    opt = Lion([w], lr=1e-3, maximize=True)
    restore_state_defaults(opt, maximize=False, new_key=7)
    assert opt.param_groups[0]["maximize"] is True and opt.param_groups[0]["new_key"] == 7
