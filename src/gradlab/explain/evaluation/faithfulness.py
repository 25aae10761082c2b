"""Faithfulness of an explanation with respect to a chosen neighbourhood (perturbation tests).

Han, Srinivas & Lakkaraju, "Which Explanation Should I Choose? A Function Approximation Perspective to
Characterizing Post Hoc Explanations" (NeurIPS 2022, arXiv 2206.01254) show that every common attribution
method is the best local approximation of the model over *some* neighbourhood Z, so faithfulness has to be
measured against the neighbourhood one cares about. The perturbation test: for each input ``x`` with
attribution ``a``, perturb the ``k`` coordinates with the largest ``|a|`` by a draw from Z and record::

    PGI_k(x) = E_{xi ~ Z} | f_t(x) - f_t(x with its top-k coordinates perturbed by xi) |,

the prediction gap on important features (higher = more faithful); with ``largest=False`` the bottom-``k``
coordinates are perturbed instead (PGU, the gap on unimportant features; lower = more faithful).

Neighbourhoods:

* ``"removal"``: the selected coordinates are replaced by a baseline (the binary masks of LIME, KernelSHAP,
  occlusion); deterministic, one draw.
* ``"gaussian"``: ``xi ~ N(0, sigma^2)`` is added to the selected coordinates (the neighbourhood of C-LIME
  and SmoothGrad), averaged over ``n_draws`` draws.

``f_t`` is the model output for class ``t`` (logit, or whatever the model returns; wrap the model with a
softmax for probabilities).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from gradlab.core import check_choice, check_int, check_positive, check_tensor, check_type, torch_generator
from gradlab.explain._common import (
    check_bool,
    check_inputs,
    check_int_sequence,
    check_model,
    check_number,
    check_real_tensor,
    check_target_range,
    forward,
    normalize_target,
)

__all__ = ["perturbation_faithfulness", "perturbation_curve"]


@torch.no_grad()
def _forward(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int) -> torch.Tensor:
    outs = []
    for start in range(0, inputs.shape[0], batch_size):
        out = forward(model, inputs[start:start + batch_size])  # checked: a tensor, one row per input, finite
        if out.ndim != 2:
            raise ValueError(f"model must return (batch, classes) outputs; got shape {tuple(out.shape)}")
        tb = targets[start:start + batch_size]
        check_target_range(tb, out.shape[1])
        outs.append(out.gather(1, tb[:, None].to(out.device)).squeeze(1))
    return torch.cat(outs)


def perturbation_faithfulness(model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                              target: int | torch.Tensor, k: int, neighbourhood: str = "removal",
                              largest: bool = True, baseline: float | torch.Tensor = 0.0, sigma: float = 0.1,
                              n_draws: int = 100, seed: int = 0, batch_size: int = 4096) -> torch.Tensor:
    """Per-input mean prediction gap ``E|f_t(x) - f_t(x_perturbed)|`` when the top-``k`` (or bottom-``k``)
    coordinates by ``|attributions|`` are perturbed by the ``neighbourhood`` (``"removal"`` or ``"gaussian"``).

    Ties in ``|attributions|`` are broken by coordinate order. Returns a tensor of shape ``(n,)``. ``target`` is an
    int or an integer tensor of shape () or (n,) with values in [0, C); ``baseline`` is a finite number or a finite
    tensor broadcastable to ``inputs``; the model's outputs must be finite.
    """
    check_model(model)
    check_inputs(inputs, model)
    check_bool("largest", largest)
    check_tensor("attributions", attributions, floating=True, finite=True)
    if attributions.shape != inputs.shape:
        raise ValueError(f"attributions must have the inputs' shape {tuple(inputs.shape)}; got {tuple(attributions.shape)}")
    if inputs.ndim < 2:
        raise ValueError(f"inputs must have a batch dimension; got shape {tuple(inputs.shape)}")
    check_choice("neighbourhood", neighbourhood, ["removal", "gaussian"])
    n, d = inputs.shape[0], inputs[0].numel()
    check_int("k", k, minimum=1, maximum=d)
    check_int("batch_size", batch_size, minimum=1)
    if target is None:
        raise TypeError(f"target must be an int or an integer tensor of shape () or ({n},) (the class whose output "
                        "is perturbed); got None")
    targets = normalize_target(target, n).to(inputs.device)
    order = attributions.detach().abs().reshape(n, d).argsort(dim=1, descending=largest, stable=True)
    sel = torch.zeros(n, d, dtype=torch.bool, device=inputs.device).scatter_(1, order[:, :k], True)
    flat = inputs.detach().reshape(n, d)
    f_x = _forward(model, inputs.detach(), targets, batch_size)
    if neighbourhood == "removal":
        if isinstance(baseline, torch.Tensor):
            check_real_tensor("baseline", baseline)
            try:
                base = baseline.to(inputs).expand_as(inputs).reshape(n, d)
            except RuntimeError as err:
                raise ValueError(f"baseline must be a number or a tensor broadcastable to inputs {tuple(inputs.shape)}; "
                                 f"got shape {tuple(baseline.shape)}") from err
        else:
            base = torch.full_like(flat, check_number("baseline", baseline))
        pert = torch.where(sel, base, flat).reshape(inputs.shape)
        return (f_x - _forward(model, pert, targets, batch_size)).abs()
    check_positive("sigma", sigma)
    check_int("n_draws", n_draws, minimum=1)
    gen = torch_generator(seed)
    noise = torch.randn(n_draws, n, d, generator=gen).to(inputs) * sigma
    pert = (flat.unsqueeze(0) + noise * sel.unsqueeze(0)).reshape(n_draws * n, *inputs.shape[1:])
    f_p = _forward(model, pert, targets.repeat(n_draws), batch_size).reshape(n_draws, n)
    return (f_x.unsqueeze(0) - f_p).abs().mean(dim=0)


def perturbation_curve(model: nn.Module, inputs: torch.Tensor, attributions: torch.Tensor,
                       target: int | torch.Tensor, ks: Sequence[int], **options) -> torch.Tensor:
    """:func:`perturbation_faithfulness` for each ``k`` in ``ks``, averaged over inputs: shape ``(len(ks),)``."""
    check_type("ks", ks, (list, tuple, range))
    ks = check_int_sequence("ks", ks, minimum=1)
    if not ks:
        raise ValueError("ks must name at least one k")
    return torch.stack([perturbation_faithfulness(model, inputs, attributions, target, int(k), **options).mean()
                        for k in ks])
