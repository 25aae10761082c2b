"""Projected gradient descent (PGD) attacks and PGD adversarial training for robust models.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks"
(ICLR 2018): adversarial training solves ``min_theta E_(x,y) max_{||delta|| <= eps} L(f_theta(x + delta), y)``,
approximating the inner maximisation with PGD. One PGD step from ``x_t`` (loss ``L``, gradient
``g = grad_x L``, step size ``alpha``):

* L-infinity ball: ``x_{t+1} = P(x_t + alpha * sign(g))`` with ``P`` clipping ``x - x_0`` to ``[-eps, eps]``
  coordinate-wise;
* L2 ball: ``x_{t+1} = P(x_t + alpha * g / ||g||_2)`` with ``P(delta) = delta * min(1, eps / ||delta||_2)``;

each followed by clipping to the valid data range. A random start draws ``delta_0`` uniformly from the ball.
Robust models trained this way are the "robust" arm of Shah et al. (arXiv 2102.12781), whose input
gradients highlight discriminative features, and of the blind-spot study of Balasubramanian et al.
(arXiv 2310.19889).

The attack never mutates the model: it runs it in eval mode (restoring the caller's mode afterwards) and
takes gradients with respect to the input only, so parameter ``.grad`` fields are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core import check_choice, check_int, check_positive, check_type, torch_generator
from gradlab.explain._common import (
    check_bool,
    check_callable,
    check_class_labels,
    check_finite_tensor,
    check_inputs,
    check_pair,
    check_real_tensor,
    forward,
    grad_wrt,
)

__all__ = ["PGD", "project_l2", "project_linf", "train_classifier"]


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.ndim - 1)))


def project_linf(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each perturbation onto the L-infinity ball of radius ``eps`` (coordinate clipping)."""
    check_real_tensor("delta", delta)
    check_positive("eps", eps, allow_zero=True)
    return delta.clamp(-eps, eps)


def project_l2(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each perturbation (batch first) onto the L2 ball of radius ``eps``."""
    check_real_tensor("delta", delta)
    check_positive("eps", eps, allow_zero=True)
    if delta.ndim < 2:
        raise ValueError(f"delta must have a batch dimension; got shape {tuple(delta.shape)}")
    norm = _per_sample_norm(delta)
    return delta * torch.clamp(eps / norm.clamp_min(1e-12), max=1.0)


@dataclass
class PGD:
    """PGD attack ``PGD(model, eps, norm="l2"|"linf", steps, step_size)(inputs, labels) -> adversarial inputs``.

    Args:
        model: a classifier returning logits ``(batch, classes)``.
        eps: radius of the threat model ball.
        norm: ``"linf"`` or ``"l2"``.
        steps: number of PGD steps.
        step_size: ``alpha``; default ``2.5 * eps / steps`` (Madry et al.'s rule of thumb).
        random_start: start from a uniform draw in the ball (L-infinity) or in the L2 ball.
        clip: valid data range ``(low, high)`` or ``None`` for unbounded inputs.
        loss_fn: ``loss_fn(logits, labels)`` summed over the batch; cross-entropy by default.
        seed: seeds the random start.
    """

    model: nn.Module
    eps: float
    norm: str = "linf"
    steps: int = 10
    step_size: float | None = None
    random_start: bool = True
    clip: tuple[float, float] | None = (0.0, 1.0)
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_type("model", self.model, nn.Module)
        check_positive("eps", self.eps, allow_zero=True)
        check_choice("norm", self.norm, ["linf", "l2"])
        check_int("steps", self.steps, minimum=0)
        if self.step_size is None:
            self.step_size = 2.5 * self.eps / max(1, self.steps)
        check_positive("step_size", self.step_size, allow_zero=True)
        check_bool("random_start", self.random_start)
        if self.clip is not None:
            try:
                self.clip = check_pair("clip", self.clip)
            except (TypeError, ValueError) as err:
                raise type(err)(f"clip must be (low, high) with low < high, or None; got {self.clip!r} ({err})") \
                    from None
        if self.loss_fn is not None:
            check_callable("loss_fn", self.loss_fn)
        self._generator = torch_generator(self.seed)

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        return project_linf(delta, self.eps) if self.norm == "linf" else project_l2(delta, self.eps)

    def _random_delta(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.rand(x.shape, generator=self._generator).to(x)
        if self.norm == "linf":
            return (2 * u - 1) * self.eps
        direction = torch.randn(x.shape, generator=self._generator).to(x)
        direction = direction / _per_sample_norm(direction).clamp_min(1e-12)
        d = x[0].numel()
        radius = torch.rand(x.shape[0], generator=self._generator).to(x) ** (1.0 / d) * self.eps
        return direction * radius.view(-1, *([1] * (x.ndim - 1)))

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.clip is None else x.clamp(*self.clip)

    def __call__(self, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Adversarial inputs for ``(inputs, labels)``: ``inputs`` a finite batch of the model's dtype, ``labels``
        integer classes of shape (N,) in [0, C). The model's outputs, the loss and its gradient must stay finite
        and the loss must depend differentiably on the inputs (``ValueError`` otherwise)."""
        check_inputs(inputs, self.model)
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be an integer torch.Tensor; got {type(labels).__name__}")
        if labels.ndim != 1 or len(labels) != inputs.shape[0]:
            raise ValueError(f"inputs (batch first) and labels must have the same length; got {tuple(inputs.shape)} "
                             f"and {tuple(labels.shape)}")
        check_class_labels("labels", labels, inputs.shape[0])
        if self.clip is not None and (float(inputs.min()) < self.clip[0] or float(inputs.max()) > self.clip[1]):
            # clipping such inputs would move them further than eps before the attack starts
            raise ValueError(f"inputs must lie within clip={self.clip} (the valid data range); got values in "
                             f"[{float(inputs.min()):.4g}, {float(inputs.max()):.4g}]. Rescale them or pass clip=None")
        loss_fn = self.loss_fn or (lambda out, y: F.cross_entropy(out, y, reduction="sum"))
        x0 = inputs.detach()
        delta = self._random_delta(x0) if self.random_start and self.eps > 0 else torch.zeros_like(x0)
        x = self._clip(x0 + self._project(delta))
        was_training = self.model.training
        self.model.eval()
        try:
            for _ in range(self.steps):
                x = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    out = forward(self.model, x, differentiable=True)
                    if self.loss_fn is None:
                        check_class_labels("labels", labels, len(labels), out.shape[1] if out.ndim == 2 else None)
                    loss = loss_fn(out, labels)
                    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                        got = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                        raise ValueError(f"loss_fn must return a scalar tensor (the loss summed over the batch); got "
                                         f"{got}")
                    check_finite_tensor("the attack's loss", loss.detach())
                    grad = grad_wrt(loss.reshape(()), x)
                check_finite_tensor("the gradient of the attack's loss with respect to inputs", grad)
                if self.norm == "linf":
                    step = grad.sign()
                else:
                    step = grad / _per_sample_norm(grad).clamp_min(1e-12)
                x = self._clip(x0 + self._project(x.detach() + self.step_size * step - x0))
        finally:
            self.model.train(was_training)
        return x.detach()


def train_classifier(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, epochs: int = 10,
                     batch_size: int = 64, lr: float = 1e-3, weight_decay: float = 0.0,
                     attack: PGD | None = None, seed: int = 0,
                     progress: Callable[[float], None] | None = None) -> nn.Module:
    """Train ``model`` with Adam on cross-entropy, on PGD adversarial examples when ``attack`` is given.

    With ``attack`` the loss of every minibatch is taken at ``attack(x, y)`` (Madry et al.'s adversarial
    training; ``attack.model`` must be ``model``). The model is trained in place, returned in eval mode.
    """
    check_type("model", model, nn.Module)
    check_inputs(inputs, model)
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be an integer torch.Tensor; got {type(labels).__name__}")
    if labels.ndim != 1 or len(labels) != inputs.shape[0]:
        raise ValueError(f"labels must have shape ({inputs.shape[0]},) (one per input); got {tuple(labels.shape)}")
    check_class_labels("labels", labels, inputs.shape[0])
    check_int("epochs", epochs, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_positive("lr", lr)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    if attack is not None:
        check_type("attack", attack, PGD)
        if attack.model is not model:
            raise ValueError("attack.model must be the model being trained")
    if progress is not None:
        check_callable("progress", progress)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = forward(model, inputs[:1])
    finally:
        model.train(was_training)
    if out.ndim != 2:
        raise ValueError(f"model must return logits of shape (N, C); got shape {tuple(out.shape)}")
    check_class_labels("labels", labels, inputs.shape[0], out.shape[1])
    gen = torch_generator(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)
    n = len(labels)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        model.train()
        for start in range(0, n, batch_size):
            idx = perm[start:start + batch_size]
            xb, yb = inputs[idx], labels[idx]
            if attack is not None:
                xb = attack(xb, yb)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            if not bool(torch.isfinite(loss)):
                raise ValueError(f"the training loss is {float(loss.detach())} at epoch {epoch}, batch starting at "
                                 f"{start}: the model's output is not finite (lr={lr} too large, or non-finite "
                                 "inputs/parameters); training stopped")
            loss.backward()
            opt.step()
        if progress is not None:
            progress((epoch + 1) / epochs)
    model.eval()
    return model
