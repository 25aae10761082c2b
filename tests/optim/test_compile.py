"""``torch.compile(opt.step)`` works for every gradlab optimizer and equals the eager step, and a learning-rate
scheduler does not make it recompile (tensor lr, as torch.optim recommends, and float lr after Dynamo marks it
dynamic). ``ProgramOptimizer(fused=True)`` compiles the program's update once and never recompiles.

Default suite: the ``aot_eager`` backend (Dynamo + AOTAutograd functionalisation, no code generation) for every
optimizer and Inductor for Lion; ``-m slow`` runs Inductor for all of them.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch._dynamo.testing import CompileCounter

from gradlab.optim import AdaGradNorm, DiffGrad, Lion, coordinate_clip
from gradlab.optim.search import ProgramOptimizer, lion_program

MAKERS = {
    "Lion": lambda ps, lr: Lion(ps, lr=lr, weight_decay=0.1),
    "DiffGrad": lambda ps, lr: DiffGrad(ps, lr=lr, weight_decay=0.1),
    "DiffGrad-decoupled-maximize": lambda ps, lr: DiffGrad(ps, lr=lr, weight_decay=0.1, decoupled_weight_decay=True,
                                                           maximize=True),
    "AdaGradNorm": lambda ps, lr: AdaGradNorm(ps, lr=lr, weight_decay=0.1),
    "coordinate_clip(Lion)": lambda ps, lr: coordinate_clip(Lion(ps, lr=lr), 0.25),
    "coordinate_clip(SGD, global)": lambda ps, lr: coordinate_clip(torch.optim.SGD(ps, lr=lr), 0.25, scope="global"),
    "ProgramOptimizer(Lion)": lambda ps, lr: ProgramOptimizer(ps, lion_program(), lr=float(lr), weight_decay=0.1),
}
TENSOR_LR = {"Lion", "DiffGrad", "DiffGrad-decoupled-maximize", "AdaGradNorm", "coordinate_clip(Lion)"}


def _model():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    m.register_parameter("scalar", nn.Parameter(torch.tensor(0.3, dtype=torch.float64)))
    return m


def _compiled_vs_eager(name: str, backend, steps: int, tensor_lr: bool):
    lr = torch.tensor(0.01, dtype=torch.float64) if tensor_lr else 0.01
    m1, m2 = _model(), _model()
    o1, o2 = MAKERS[name](list(m1.parameters()), lr), MAKERS[name](list(m2.parameters()), copy.deepcopy(lr))
    sched1, sched2 = (torch.optim.lr_scheduler.ExponentialLR(o, 0.9) for o in (o1, o2))
    compiled_step = torch.compile(o1.step, backend=backend)
    gen = torch.Generator().manual_seed(0)
    frames = []
    for _ in range(steps):
        for a, b in zip(m1.parameters(), m2.parameters()):
            a.grad = torch.randn(a.shape, generator=gen, dtype=a.dtype)
            b.grad = a.grad.clone()
        compiled_step()
        o2.step()
        sched1.step()
        sched2.step()
        frames.append(backend.frame_count if isinstance(backend, CompileCounter) else None)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for k in o2.state[m2[0].weight]:
        torch.testing.assert_close(o1.state[m1[0].weight][k], o2.state[m2[0].weight][k], rtol=1e-12, atol=1e-14)
    return frames


@pytest.mark.parametrize("name", list(MAKERS))
def test_compiled_step_equals_eager_aot_eager(name):
    torch._dynamo.reset()
    _compiled_vs_eager(name, "aot_eager", steps=4, tensor_lr=name in TENSOR_LR)


def test_compiled_step_equals_eager_inductor_lion():
    torch._dynamo.reset()
    _compiled_vs_eager("Lion", "inductor", steps=4, tensor_lr=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MAKERS))
def test_compiled_step_equals_eager_inductor(name):
    torch._dynamo.reset()
    _compiled_vs_eager(name, "inductor", steps=4, tensor_lr=name in TENSOR_LR)


@pytest.mark.parametrize("name", ["Lion", "DiffGrad", "AdaGradNorm"])
@pytest.mark.parametrize("tensor_lr", [True, False], ids=["tensor-lr", "float-lr"])
def test_scheduler_does_not_recompile_the_compiled_step_over_100_steps(name, tensor_lr):
    """Frames compiled by Dynamo stop growing after the first steps: with a tensor lr from the start, with a float
    lr once Dynamo has seen it change and made it dynamic (at most two extra compilations)."""
    torch._dynamo.reset()
    counter = CompileCounter()
    frames = _compiled_vs_eager(name, counter, steps=100, tensor_lr=tensor_lr)
    warm = 2 if tensor_lr else 4
    assert frames[-1] == frames[warm - 1], frames
    assert frames[-1] <= frames[0] + (1 if tensor_lr else 3), frames


def test_program_optimizer_fused_compiles_once_and_equals_eager():
    from torch._dynamo.utils import counters

    m1, m2 = _model(), _model()
    o1 = ProgramOptimizer(m1.parameters(), lion_program(), lr=0.01, weight_decay=0.1, fused=True)
    o2 = ProgramOptimizer(m2.parameters(), lion_program(), lr=0.01, weight_decay=0.1)
    s1, s2 = (torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10) for o in (o1, o2))
    gen = torch.Generator().manual_seed(0)
    counters.clear()
    for step in range(30):
        for a, b in zip(m1.parameters(), m2.parameters()):
            a.grad = torch.randn(a.shape, generator=gen, dtype=a.dtype)
            b.grad = a.grad.clone()
        o1.step()
        o2.step()
        s1.step()
        s2.step()
        if step == 0:
            first = counters["stats"]["unique_graphs"]
    assert first <= 1 and counters["stats"]["unique_graphs"] == first
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="fused=True and foreach=True"):
        ProgramOptimizer(m1.parameters(), lion_program(), fused=True, foreach=True)
    with pytest.raises(TypeError, match="fused"):
        ProgramOptimizer(m1.parameters(), lion_program(), fused=None)
