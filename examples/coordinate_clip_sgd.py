"""Coordinate-wise clipping (Pan & Li 2023) around ``torch.optim.SGD``.

``coordinate_clip(optimizer, fraction)`` wraps any torch optimizer: each step, the wrapped optimizer computes its
update and the largest ``fraction`` of the update's coordinates (per tensor) are clipped to the magnitude of the
next one. The wrapper keeps the wrapped optimizer's ``param_groups`` (so lr schedulers work on it) and its
``state_dict``. Here a regression whose features have very different scales is trained with plain SGD and with
clipped SGD at the same learning rate and schedule; the script prints both final losses and the clipped
coordinates of one update (whether clipping helps is the paper's claim, checked by ``gradlab reproduce --only
adam-vs-sgd``, not by this example).

Run: ``python examples/coordinate_clip_sgd.py``
"""

import torch
from torch import nn

from gradlab.optim import coordinate_clip

torch.set_num_threads(1)

g = torch.Generator().manual_seed(0)
scales = torch.logspace(0, 1.3, 16)  # feature scales 1 .. 20: a few coordinates dominate the gradient
x = torch.randn(512, 16, generator=g) * scales
y = x @ (torch.randn(16, 1, generator=g) / scales[:, None]) + 0.01 * torch.randn(512, 1, generator=g)


def run(clip: bool, lr: float = 4e-3, steps: int = 200) -> float:
    torch.manual_seed(0)
    model = nn.Linear(16, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    if clip:
        opt = coordinate_clip(opt, fraction=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=100, gamma=0.5)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
    return loss.item()


plain, clipped = run(clip=False), run(clip=True)
print(f"SGD                   final loss {plain:.4g}")
print(f"SGD + coordinate_clip final loss {clipped:.4g}")

# the same transform on tensors: the top 10% of coordinates are clipped to the 90th-percentile magnitude
u = torch.tensor([0.1, -0.2, 0.3, -5.0, 0.4, 0.05, -0.15, 0.25, 0.35, 8.0])
print("u           =", [round(v, 3) for v in u.tolist()])
print("clip_tau(u) =", [round(v, 3) for v in coordinate_clip(u, fraction=0.2).tolist()])
