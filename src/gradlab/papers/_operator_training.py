"""Training and evaluation helpers shared by the operator-learning claims (MgNO, nns-to-nos).

Not a paper module (the registry skips names starting with ``_``). Models are trained on scalar-normalised data
(resolution-free: one mean/std for the input, one scale for the output) with Adam + OneCycle, relative L2 or H1
loss; errors are per-sample relative L2 norms with quadrature weights.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from gradlab.operators.function_space import h1_loss, lp_loss


class Normalised(nn.Module):
    """``G(a) = s_u * model((a - m_a) / s_a)`` with scalars fitted on the training set (resolution-free)."""

    def __init__(self, model: nn.Module, a_train: torch.Tensor, u_train: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("a_mean", a_train.mean().reshape(()))
        self.register_buffer("a_std", a_train.std().reshape(()))
        self.register_buffer("u_scale", u_train.std().reshape(()))

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return self.model((a - self.a_mean) / self.a_std) * self.u_scale


@contextlib.contextmanager
def fast_cpu_convs(ndim: int) -> Iterator[None]:
    """NNPACK off, oneDNN off in 1-D and on in 2-D: measured 2-3x faster for the small convolutions used here."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = ndim == 2
    try:
        with torch.backends.nnpack.flags(enabled=False):
            yield
    finally:
        torch.backends.mkldnn.enabled = previous


def fit(model: nn.Module, a: torch.Tensor, u: torch.Tensor, *, epochs: int, batch_size: int, lr: float,
        weight_decay: float, seed: int, loss: str = "l2",
        progress: Callable[[float], None] | None = None) -> list[float]:
    """Adam + OneCycleLR (pct_start 0.2, div 2, final div 100, per step) on the relative ``loss``; epoch losses."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    n = a.shape[0]
    steps = (n + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps, pct_start=0.2,
                                                div_factor=2.0, final_div_factor=100.0)
    loss_fn = (lambda p, t: lp_loss(p, t)) if loss == "l2" else (lambda p, t: h1_loss(p, t))
    history = []
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(steps):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            opt.zero_grad(set_to_none=True)
            value = loss_fn(model(a[idx]), u[idx])
            value.backward()
            opt.step()
            sched.step()
            total += value.detach().item() * idx.numel()
        history.append(total / n)
        if progress is not None:
            progress((epoch + 1) / epochs)
    model.eval()
    return history


@torch.no_grad()
def predict(model: nn.Module, a: torch.Tensor, batch: int = 100) -> torch.Tensor:
    """``model(a)`` in evaluation mode, ``batch`` inputs at a time."""
    model.eval()
    return torch.cat([model(a[i:i + batch]) for i in range(0, a.shape[0], batch)])


@torch.no_grad()
def relative_errors(model: nn.Module, a: torch.Tensor, u: torch.Tensor, batch: int = 100) -> np.ndarray:
    """Per-sample relative L2 error :math:`\\|G(a) - u\\| / \\|u\\|` (quadrature norms)."""
    return lp_loss(predict(model, a, batch), u, reduction="none").double().numpy()


def mean_predictor_error(u_train: torch.Tensor, u_test: torch.Tensor) -> float:
    """Mean relative L2 error of predicting the training-mean solution for every test input."""
    mean = u_train.mean(0, keepdim=True).expand_as(u_test)
    return float(lp_loss(mean, u_test))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
