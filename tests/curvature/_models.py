"""Tiny models and explicit-Hessian references shared by the curvature tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


def tiny_mlp(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(3, 5)]
    if bn:
        layers.append(nn.BatchNorm1d(5))
    layers += [nn.Tanh(), nn.Linear(5, 3)]
    return nn.Sequential(*layers).double()


def tiny_batch(seed: int = 1, n: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


def flat_objective(model: nn.Module, loss_fn, batch, train: bool = False):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    x, y = batch

    def f(theta: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        p = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        model.train(train)
        out = functional_call(model, (p, {k: v.clone() for k, v in buffers.items()}), (x,))
        return loss_fn(out, y)

    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return f, theta0


def explicit_hessian(model, loss_fn, batch, train: bool = False) -> torch.Tensor:
    f, theta0 = flat_objective(model, loss_fn, batch, train)
    H = torch.autograd.functional.hessian(f, theta0)
    model.eval()
    return H


def explicit_ggn(model, loss_fn, batch) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    x, y = batch
    model.eval()

    def out_fn(theta):
        parts = torch.split(theta, sizes)
        return functional_call(model, {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}, (x,))

    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    z = out_fn(theta0).detach()
    J = torch.autograd.functional.jacobian(out_fn, theta0).reshape(z.numel(), -1)
    HL = torch.autograd.functional.hessian(lambda zz: loss_fn(zz.reshape(z.shape), y), z.reshape(-1))
    return J.T @ HL @ J
