"""Proxy tasks on which update programs are scored, vectorised over a learning-rate grid.

Every program is trained on a task once per learning rate of a log-spaced grid; the learning rates run as a
leading batch dimension of one parameter tensor (the models are written with batched ``einsum``), so a grid costs
about one run. The task's score is the lowest held-out loss over the grid (each program gets its tuned learning
rate, as in Lion's search, where every candidate is compared at its best hyperparameter). Diverged runs score
``inf``.

Two kinds: ``"softmax"`` (multinomial logistic regression) and ``"mlp"`` (one tanh hidden layer), on Gaussian
inputs whose features have scales spread over ``feature_scale_range`` decades (ill-conditioning) and labels from a
random teacher with label noise; minibatches are sampled every step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradlab.core.validation import check_choice, check_int, check_positive
from gradlab.optim.search.dsl import Program, execute

__all__ = ["ProxyTask", "TaskResult", "evaluate_on_task", "default_funnel"]


@dataclass(frozen=True)
class ProxyTask:
    """A small training problem; fully determined by its fields (data and init come from ``seed``)."""

    kind: str = "softmax"
    n_features: int = 10
    n_classes: int = 3
    hidden: int = 16
    n_train: int = 512
    n_test: int = 512
    steps: int = 60
    batch_size: int = 32
    seed: int = 0
    label_noise: float = 0.5
    feature_scale_range: float = 2.0
    lrs: tuple[float, ...] = tuple(10.0 ** (k / 2) for k in range(-7, 2))

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, ("softmax", "mlp"))
        for name in ("n_features", "n_classes", "hidden", "n_train", "n_test", "steps", "batch_size"):
            check_int(name, getattr(self, name), minimum=1)
        check_positive("label_noise", self.label_noise, allow_zero=True)
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ValueError("lrs must be a non-empty tuple of positive learning rates")

    @property
    def n_params(self) -> int:
        d, k, h = self.n_features, self.n_classes, self.hidden
        return d * k + k if self.kind == "softmax" else d * h + h + h * k + k


@dataclass(frozen=True)
class TaskResult:
    """Held-out loss per learning rate; ``loss`` is the best of them and ``lr`` where it was reached."""

    loss: float
    lr: float
    losses: tuple[float, ...]


@functools.lru_cache(maxsize=32)
def _data(task: ProxyTask) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(10_000 + task.seed)
    d, k = task.n_features, task.n_classes
    n = task.n_train + task.n_test
    scales = 10.0 ** (task.feature_scale_range * (torch.rand(d, generator=gen, dtype=torch.float64) - 0.5))
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    teacher = torch.randn(d, k, generator=gen, dtype=torch.float64) * 1.5
    logits = z @ teacher + task.label_noise * torch.randn(n, k, generator=gen, dtype=torch.float64)
    y = logits.argmax(dim=1)
    x = z * scales  # the student sees badly scaled features
    init = 0.1 * torch.randn(task.n_params, generator=gen, dtype=torch.float64)
    return x[: task.n_train], y[: task.n_train], x[task.n_train:], y[task.n_train:], init


def _loss(task: ProxyTask, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy per learning rate: ``theta`` is ``(L, P)``, the result ``(L,)``."""
    d, k, h = task.n_features, task.n_classes, task.hidden
    L = theta.shape[0]
    if task.kind == "softmax":
        W = theta[:, : d * k].reshape(L, d, k)
        b = theta[:, d * k:]
        out = torch.einsum("nd,ldk->lnk", x, W) + b[:, None, :]
    else:
        i = 0
        W1 = theta[:, i:i + d * h].reshape(L, d, h); i += d * h
        b1 = theta[:, i:i + h]; i += h
        W2 = theta[:, i:i + h * k].reshape(L, h, k); i += h * k
        b2 = theta[:, i:i + k]
        hid = torch.tanh(torch.einsum("nd,ldh->lnh", x, W1) + b1[:, None, :])
        out = torch.einsum("lnh,lhk->lnk", hid, W2) + b2[:, None, :]
    n = x.shape[0]
    ce = F.cross_entropy(out.reshape(L * n, k), y.repeat(L), reduction="none").reshape(L, n)
    return ce.mean(dim=1)


def evaluate_on_task(program: Program, task: ProxyTask) -> TaskResult:
    """Train with ``w <- w - lr * u`` for every learning rate of the grid; return the held-out losses."""
    x_tr, y_tr, x_te, y_te, init = _data(task)
    lrs = torch.tensor(task.lrs, dtype=torch.float64)[:, None]
    theta = init.expand(len(task.lrs), -1).clone()
    state: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(20_000 + task.seed)
    for _ in range(task.steps):
        idx = torch.randint(0, task.n_train, (task.batch_size,), generator=gen)
        theta.requires_grad_(True)
        with torch.enable_grad():
            loss = _loss(task, theta, x_tr[idx], y_tr[idx])
            (grad,) = torch.autograd.grad(loss.sum(), theta)
        theta = theta.detach()
        with torch.no_grad():
            u = execute(program, grad, theta, state)
            theta = theta - lrs * u
            # a diverged row stays diverged; keep it from overflowing into warnings
            theta = torch.where(torch.isfinite(theta), theta, torch.full_like(theta, float("nan")))
    with torch.no_grad():
        test = _loss(task, theta, x_te, y_te)
    losses = tuple(float(v) if torch.isfinite(v) else float("inf") for v in test)
    best = min(range(len(losses)), key=lambda i: losses[i])
    return TaskResult(loss=losses[best], lr=float(task.lrs[best]), losses=losses)


def default_funnel(seed: int = 0, scale: float = 1.0) -> tuple[ProxyTask, ...]:
    """Three proxy tasks of growing size (softmax d=10, softmax d=30, MLP d=20); ``scale`` multiplies steps."""
    s = lambda n: max(2, int(round(n * scale)))  # noqa: E731
    return (
        ProxyTask("softmax", n_features=10, n_classes=3, steps=s(60), batch_size=32, seed=seed),
        ProxyTask("softmax", n_features=30, n_classes=5, steps=s(150), batch_size=32, n_train=1024, seed=seed + 1),
        ProxyTask("mlp", n_features=20, n_classes=5, hidden=16, steps=s(150), batch_size=32, n_train=2048,
                  n_test=1024, seed=seed + 2),
    )
