"""muP param groups for any ``nn.Module``, and a coordinate check.

``abc_param_groups(model, "mup", lr, base=..., delta=...)`` compares the model's parameter shapes with those of
a *base* and a *delta* model (the same architecture at two other widths, as the ``mup`` package's
``set_base_shapes``): every dimension that differs is a width. It re-initialises the weights in place and returns
``torch.optim`` param groups whose learning rates follow muP (Yang & Hu 2021), so any optimizer can use them.

The *coordinate check* trains a few steps at several widths and records, for every module, the mean size of the
change of its output coordinates. Under muP these stay O(1) as the width grows (slope ~ 0 on a log-log plot);
under the standard parametrisation (SP) with the same learning rate the hidden layer's change grows with the
width (slope ~ 1 here), so SP's best learning rate shifts as the model widens and muP's does not.

Run: ``python examples/mup_param_groups.py`` (writes ``coord_check.png``).
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn

from gradlab.dynamics import abc_param_groups, coord_check

torch.set_num_threads(1)


class ConvNet(nn.Module):
    """Any module works: here a small CNN whose channel count is the width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.body = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.body(torch.relu(self.stem(x))))
        return self.head(h.mean(dim=(2, 3)))


model = ConvNet(256)
groups = abc_param_groups(model, "mup", lr=0.05, base=ConvNet(32), delta=ConvNet(64), extra={"momentum": 0.9})
opt = torch.optim.SGD(groups)
for g in groups:
    names = [n for n, p in model.named_parameters() if any(p is q for q in g["params"])]
    print(f"{g['role']:7s} width_mult {g['width_mult']:5.1f}  lr {g['lr']:.4g}  {names}")

# coordinate check: the same CNN on one fixed batch, SP vs muP, widths 32..256
torch.manual_seed(0)
x, y = torch.randn(32, 3, 8, 8), torch.randint(0, 10, (32,))
widths = [32, 64, 128, 256]
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
for ax, param in zip(axes, ["sp", "mup"]):
    result = coord_check(ConvNet, widths, x, y, nn.functional.cross_entropy, param, lr=0.5, steps=3,
                         seeds=(0, 1), base_width=16)
    result.plot(ax=ax)
    slopes = result.slopes()
    print(f"{param:4s} width exponent of each module's update after 3 steps:",
          {k: round(v, 2) for k, v in slopes.items()})
fig.tight_layout()
fig.savefig("coord_check.png", dpi=100)
print("figure written: coord_check.png")
