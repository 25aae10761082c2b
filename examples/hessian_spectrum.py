"""Top Hessian eigenvalues and the SLQ spectral density of an MLP's loss.

``HessianOperator(model, loss_fn, (x, y))`` is the matrix-free Hessian of the loss at the current parameters
(one Hessian-vector product per ``matvec``, by double backprop). Lanczos on it gives the extreme eigenvalues;
stochastic Lanczos quadrature (SLQ) turns a few Lanczos runs from random probes into an estimate of the whole
eigenvalue density. The MLP is small enough (939 parameters) that the dense Hessian can be checked against
``torch.linalg.eigvalsh``.

Run: ``python examples/hessian_spectrum.py`` (writes ``hessian_density.png``).
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn

from gradlab.curvature import HessianOperator, extreme_eigenvalues, slq_spectral_density

torch.set_num_threads(1)
torch.manual_seed(0)

x = torch.randn(256, 10)
y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()  # three classes
model = nn.Sequential(nn.Linear(10, 24), nn.Tanh(), nn.Linear(24, 24), nn.Tanh(), nn.Linear(24, 3))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
for _ in range(150):
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()

H = HessianOperator(model, nn.CrossEntropyLoss(), (x, y), dtype=torch.float64)
gen = torch.Generator().manual_seed(0)
top, bottom = extreme_eigenvalues(H, num_iters=60, k=3, generator=gen)
print(f"parameters P = {H.size}")
print("top-3 eigenvalues (Lanczos):  ", [f"{v:.4f}" for v in top.tolist()])
print("most negative (Lanczos):      ", f"{bottom[0].item():.4f}")

exact = torch.linalg.eigvalsh(H.to_dense())  # only for a small model: P x P
print("top-3 eigenvalues (dense):    ", [f"{v:.4f}" for v in exact.flip(0)[:3].tolist()])

density = slq_spectral_density(H, num_probes=8, num_iters=60, generator=gen)
print(f"trace: SLQ {density.trace():.3f}, exact {exact.sum().item():.3f}")

grid = torch.linspace(density.bottom - 0.05, density.top + 0.05, 600, dtype=torch.float64)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(grid, density.density(grid).clamp(min=1e-8), label="SLQ density (8 probes, 60 steps)")
ax.hist(exact.numpy(), bins=120, density=True, alpha=0.4, label="exact eigenvalues (histogram)")
ax.set_xlabel("eigenvalue")
ax.set_ylabel("density")
ax.set_ylim(1e-5, None)
ax.legend(fontsize=8)
ax.set_title("Hessian spectrum of a trained MLP")
fig.tight_layout()
fig.savefig("hessian_density.png", dpi=100)
print("figure written: hessian_density.png")
