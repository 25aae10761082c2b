"""The claims and the components they train with construct torch's Adam, AdamW and SGD with ``foreach=True`` (on the
CPU torch defaults to the per-tensor loop; the multi-tensor step saves 7-25 % of a training step for models with
many small tensors: YOLOv9's GELAN-t, NoProp's blocks). The recorded results assume that this is a speed change
only, i.e. that the two paths do the same arithmetic. These tests pin that assumption, bit for bit, for every
configuration the claims use; if a torch release breaks it, they fail and the claims' numbers must be rerun.
"""

from __future__ import annotations

import pytest
import torch

CONFIGS = [
    (torch.optim.Adam, {"lr": 3e-3}),
    (torch.optim.Adam, {"lr": 1e-3, "betas": (0.9, 0.98), "weight_decay": 1e-4}),
    (torch.optim.Adam, {"lr": 2e-3, "weight_decay": 1e-2, "amsgrad": True}),
    (torch.optim.AdamW, {"lr": 2e-3, "weight_decay": 5e-4}),
    (torch.optim.AdamW, {"lr": 1e-3, "weight_decay": 1e-2, "maximize": True}),
    (torch.optim.SGD, {"lr": 0.1}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}),
]


def _params(dtype: torch.dtype, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4, 3, 3), (1,), (33,)]
    ps = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    ps.append(torch.randn(4, 3, generator=g, dtype=torch.complex64 if dtype == torch.float32 else torch.complex128))
    return ps


def _groups(params: list[torch.Tensor], lr: float) -> list[dict]:
    """Two groups with different learning rates (as muP, AlignIT and TrAct use)."""
    return [{"params": params[:3]}, {"params": params[3:], "lr": lr * 0.3}]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls,kwargs", CONFIGS, ids=lambda v: getattr(v, "__name__", None) or str(sorted(v)))
def test_foreach_step_equals_the_per_tensor_loop_bit_for_bit(cls, kwargs, dtype):
    base = _params(dtype, seed=0)
    paths = {}
    for foreach in (False, True):
        ps = [p.clone().requires_grad_() for p in base]
        opt = cls(_groups(ps, kwargs["lr"]), foreach=foreach, **kwargs)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[kwargs["lr"], kwargs["lr"] * 0.3], total_steps=60,
                                                    pct_start=0.15)
        g = torch.Generator().manual_seed(1)
        for step in range(50):
            for i, p in enumerate(ps):
                # gradients over 8 decades; one tensor without a gradient on some steps (frozen / unused)
                scale = 10.0 ** float(torch.randint(-5, 3, (1,), generator=g))
                p.grad = None if (i == 1 and step % 7 == 3) else torch.randn(p.shape, generator=g, dtype=p.dtype) * scale
            opt.step()
            sched.step()
        paths[foreach] = (ps, opt.state_dict())
    (loop, loop_state), (multi, multi_state) = paths[False], paths[True]
    for a, b in zip(loop, multi):
        assert torch.equal(a, b), f"{cls.__name__}{kwargs}: foreach differs from the loop by {(a - b).abs().max()}"
    for i, s in loop_state["state"].items():
        for key, value in s.items():
            if torch.is_tensor(value):
                assert torch.equal(value, multi_state["state"][i][key]), (cls.__name__, kwargs, i, key)

