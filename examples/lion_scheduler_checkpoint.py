"""Lion and DiffGrad with a learning-rate scheduler, and a checkpoint resumed mid-training.

Trains a small MLP regressor for 60 steps in two halves: after 30 steps the model, optimizer and scheduler
state are saved (atomically: temp file + rename), loaded back with ``torch.load(weights_only=True)`` into fresh
objects, and training continues. The resumed run ends bit-for-bit where an uninterrupted run ends.

Run: ``python examples/lion_scheduler_checkpoint.py`` (writes ``checkpoint_<name>.pt`` to the current directory).
"""

import os
from pathlib import Path

import torch
from torch import nn

from gradlab.optim import DiffGrad, Lion

torch.set_num_threads(1)
STEPS, RESUME_AT = 60, 30


def make(opt_cls, **opt_kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 1))
    opt = opt_cls(model.parameters(), **opt_kwargs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    return model, opt, sched


def data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 8, generator=g)
    return x, (x[:, :1] * x[:, 1:2]).sin() + 0.1 * x.sum(1, keepdim=True)


def train(model, opt, sched, steps, x, y):
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
    return loss.item()


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


x, y = data()
for name, cls, kwargs in [("lion", Lion, {"lr": 3e-3, "weight_decay": 0.01}), ("diffgrad", DiffGrad, {"lr": 1e-2})]:
    # uninterrupted reference run
    model, opt, sched = make(cls, **kwargs)
    with torch.no_grad():
        first_loss = nn.functional.mse_loss(model(x), y).item()
    train(model, opt, sched, STEPS, x, y)
    reference = [p.detach().clone() for p in model.parameters()]

    # the same run, stopped at RESUME_AT and resumed from a checkpoint
    model, opt, sched = make(cls, **kwargs)
    train(model, opt, sched, RESUME_AT, x, y)
    ckpt = Path(f"checkpoint_{name}.pt")
    save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "step": RESUME_AT}, ckpt)

    state = torch.load(ckpt, weights_only=True)  # tensors and plain containers only: safe to load
    model, opt, sched = make(cls, **kwargs)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    last_loss = train(model, opt, sched, STEPS - state["step"], x, y)

    same = all(torch.equal(a, b) for a, b in zip(reference, model.parameters()))
    print(f"{name:8s} loss {first_loss:.4f} -> {last_loss:.4f}; lr now {sched.get_last_lr()[0]:.2e}; "
          f"resumed run identical to uninterrupted run: {same}")
    if not same:
        raise SystemExit(f"{name}: the resumed run diverged from the uninterrupted one")
