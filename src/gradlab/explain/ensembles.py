"""Multilabel ensembles (majority vote and probability averaging) and micro-F1.

Chatterjee et al., "Exploration of Interpretability Techniques for Deep COVID-19 Classification using Chest X-ray
Images" (arXiv 2006.02570): M multilabel classifiers (sigmoid outputs, label positive when p > 0.5) are combined.
The paper's text says majority voting; its code averages the sigmoid outputs (research note §2a). Both are here:

* hard vote: label l of example n is positive when at least ceil(M / 2) members predict it positive;
* soft vote: positive when the mean probability (1/M) sum_m p_m > threshold (0.5).

micro-F1 pools the counts over all labels: F1 = 2 TP / (2 TP + FP + FN) (0 when there is nothing to find and
nothing predicted, sklearn's ``zero_division=0``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from gradlab.core.validation import check_choice, check_range
from gradlab.explain._common import check_finite_tensor, check_inputs, check_model, forward


def _as_tensor(name: str, t: object) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t
    if isinstance(t, (str, bytes)):
        raise TypeError(f"{name} must be a tensor or an array of numbers; got {type(t).__name__}")
    try:
        return torch.as_tensor(t)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or an array of numbers; got {type(t).__name__}") from err


def _binary(name: str, t: torch.Tensor) -> torch.Tensor:
    t = _as_tensor(name, t)
    if t.dtype == torch.bool:
        return t
    if t.is_complex():
        raise TypeError(f"{name} must be binary (0/1 or bool) indicators; got dtype {t.dtype}")
    check_finite_tensor(name, t)
    if not bool(((t == 0) | (t == 1)).all()):
        raise ValueError(f"{name} must be binary (0/1 or bool) indicators")
    return t.bool()


def micro_f1(y_true: torch.Tensor, y_pred: torch.Tensor) -> float:
    """Micro-averaged F1 of binary indicator matrices (N, L) (or vectors): 2TP / (2TP + FP + FN)."""
    yt, yp = _binary("y_true", y_true), _binary("y_pred", y_pred)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true and y_pred must have the same shape; got {tuple(yt.shape)} and {tuple(yp.shape)}")
    tp = int((yt & yp).sum())
    fp = int((~yt & yp).sum())
    fn = int((yt & ~yp).sum())
    den = 2 * tp + fp + fn
    return 0.0 if den == 0 else 2 * tp / den


def _check_members(name: str, t: torch.Tensor) -> torch.Tensor:
    t = _as_tensor(name, t)
    if t.ndim < 2:
        raise ValueError(f"{name} must have shape (M members, N, ...); got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} has no members")
    return t


def majority_vote(member_predictions: torch.Tensor) -> torch.Tensor:
    """Hard vote of binary predictions (M, N, L) -> (N, L) bool: positive when >= ceil(M/2) members say so."""
    p = _binary("member_predictions", _check_members("member_predictions", member_predictions))
    need = math.ceil(p.shape[0] / 2)
    return p.sum(0) >= need


def probability_average(member_probabilities: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Soft vote of probabilities (M, N, L) -> (N, L) bool: positive when the mean probability > ``threshold``."""
    p = _check_members("member_probabilities", member_probabilities)
    if not p.is_floating_point():
        raise TypeError(f"member_probabilities must be floating point; got dtype {p.dtype}")
    check_finite_tensor("member_probabilities", p)
    if not bool(((p >= 0) & (p <= 1)).all()):
        raise ValueError("member_probabilities must lie in [0, 1] (apply the sigmoid first)")
    check_range("threshold", threshold, 0.0, 1.0)
    return p.mean(0) > threshold


class MultilabelEnsemble(nn.Module):
    """Combine multilabel classifiers (each returns logits (N, L)): ``mode="majority"`` or ``"average"``.

    ``forward`` returns ensemble scores in [0, 1] (the vote fraction or the mean probability) so the ensemble can
    itself be explained; ``predict`` returns the boolean decisions of :func:`majority_vote` /
    :func:`probability_average`.
    """

    def __init__(self, models: Sequence[nn.Module], mode: str = "majority", threshold: float = 0.5):
        super().__init__()
        if isinstance(models, nn.Module) or not isinstance(models, (Sequence, nn.ModuleList)):
            raise TypeError(f"models must be a sequence of nn.Module classifiers; got {type(models).__name__}")
        if len(models) == 0:
            raise ValueError("models must contain at least one classifier")
        for i, m in enumerate(models):
            if not isinstance(m, nn.Module):
                raise TypeError(f"models[{i}] must be an nn.Module; got {type(m).__name__}")
        self.members = nn.ModuleList(models)
        self.mode = check_choice("mode", mode, ("majority", "average"))
        self.threshold = check_range("threshold", threshold, 0.0, 1.0)

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid outputs of every member, shape (M, N, L); every member's logits must be finite and of one shape."""
        check_inputs(x, self.members[0], "x")
        for i, m in enumerate(self.members):
            check_model(m, name=f"members[{i}]")
        outs = []
        for i, m in enumerate(self.members):
            try:
                out = forward(m, x, differentiable=torch.is_grad_enabled())
            except (TypeError, ValueError) as err:
                raise type(err)(f"members[{i}]: {err}") from None
            if outs and out.shape != outs[0].shape:
                raise ValueError(f"members[{i}] returns logits of shape {tuple(out.shape)} but members[0] returns "
                                 f"{tuple(outs[0].shape)}; every member must predict the same labels")
            outs.append(out)
        return torch.sigmoid(torch.stack(outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.member_probabilities(x)
        if self.mode == "average":
            return p.mean(0)
        return (p > self.threshold).to(p.dtype).mean(0)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Boolean multilabel decisions (N, L)."""
        p = self.member_probabilities(x)
        if self.mode == "average":
            return probability_average(p, self.threshold)
        return majority_vote(p > self.threshold)


__all__ = ["micro_f1", "majority_vote", "probability_average", "MultilabelEnsemble"]
