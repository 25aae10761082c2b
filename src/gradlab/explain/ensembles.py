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
from gradlab.explain._common import check_model


def _binary(name: str, t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
    if t.dtype == torch.bool:
        return t
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
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
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t)
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
        raise TypeError("member_probabilities must be floating point")
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
        if len(models) == 0:
            raise ValueError("models must contain at least one classifier")
        self.members = nn.ModuleList(models)
        self.mode = check_choice("mode", mode, ("majority", "average"))
        self.threshold = check_range("threshold", threshold, 0.0, 1.0)

    def member_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Sigmoid outputs of every member, shape (M, N, L)."""
        for i, m in enumerate(self.members):
            check_model(m, name=f"members[{i}]")
        return torch.stack([torch.sigmoid(m(x)) for m in self.members])

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
