"""DiffROAR: remove-and-retrain in both directions (Shah, Jain & Netrapalli, NeurIPS 2021, arXiv 2102.12781).

For an attribution scheme A and a fraction ``k`` in (0, 1], every instance (train *and* test) is reduced to
its top-``k`` coordinates by ``|A|`` (all other coordinates replaced by a constant fill, usually the mean),
giving ``D_top(k)``; likewise ``D_bot(k)`` keeps the bottom-``k``. A fresh model with the same recipe is
trained on each masked training set and evaluated on the matching masked test set:

    DiffROAR(k) = ACC(D_top(k)) - ACC(D_bot(k)).

DiffROAR > 0 means the attributions rank discriminative coordinates first (the paper's assumption (A));
about 0 means no better than random; < 0 means "feature inversion". The curve over ``k`` and its area
(trapezoid rule over the given fractions) summarise it; the paper averages several retraining runs.

Ties in ``|A|`` (e.g. exact zeros on dead pixels) would make the top/bottom split depend on pixel order, so
they are broken uniformly at random with a seeded generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from gradlab.core import check_int, check_range, check_tensor, check_type, torch_generator
from gradlab.explain._common import (
    check_bool,
    check_callable,
    check_class_labels,
    check_number,
    check_real_tensor,
    forward,
)

__all__ = ["DiffROARResult", "diffroar", "evaluate_accuracy", "remove_and_retrain", "unmask_top_k"]

TrainFn = Callable[[torch.Tensor, torch.Tensor, int], nn.Module]


def unmask_top_k(inputs: torch.Tensor, attributions: torch.Tensor, fraction: float, largest: bool = True,
                 fill: float | torch.Tensor = 0.0, seed: int | None = 0) -> torch.Tensor:
    """Keep the top (``largest=True``) or bottom ``fraction`` of each instance's coordinates by ``|attributions|``.

    Every other coordinate is set to ``fill`` (a number, or a tensor broadcastable to one instance such as
    the per-pixel training mean). ``k = max(1, round(fraction * d))`` coordinates are kept per instance, with
    ``d`` the number of coordinates of one instance. Ties are broken at random (seeded; ``seed=None`` breaks
    them by position). Returns a new tensor; ``inputs`` is not modified.
    """
    check_tensor("inputs", inputs, floating=True, finite=True)
    check_tensor("attributions", attributions, floating=True, finite=True)
    if attributions.shape != inputs.shape:
        raise ValueError(f"attributions must have the inputs' shape {tuple(inputs.shape)}; got {tuple(attributions.shape)}")
    if inputs.ndim < 2:
        raise ValueError(f"inputs must have a batch dimension; got shape {tuple(inputs.shape)}")
    if inputs.shape[0] == 0 or inputs[0].numel() == 0:
        raise ValueError(f"inputs must hold at least one instance with at least one coordinate; got shape "
                         f"{tuple(inputs.shape)}")
    check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
    check_bool("largest", largest)
    if isinstance(fill, torch.Tensor):
        check_real_tensor("fill", fill)
        try:
            torch.broadcast_shapes(fill.shape, inputs.shape[1:])
            ok = len(torch.broadcast_shapes(fill.shape, inputs.shape[1:])) == inputs.ndim - 1
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"fill must be a number or a tensor broadcastable to one instance "
                             f"{tuple(inputs.shape[1:])}; got shape {tuple(fill.shape)}")
    else:
        fill = check_number("fill", fill)
    n = inputs.shape[0]
    d = inputs[0].numel()
    k = max(1, int(round(fraction * d)))
    scores = attributions.detach().abs().reshape(n, d)
    if seed is None:
        perm = torch.arange(d, device=scores.device).expand(n, d)
    else:
        gen = torch_generator(seed)
        perm = torch.rand(n, d, generator=gen).argsort(dim=1).to(scores.device)
    order = scores.gather(1, perm).argsort(dim=1, descending=largest, stable=True)
    keep_idx = perm.gather(1, order[:, :k])
    keep = torch.zeros(n, d, dtype=torch.bool, device=scores.device).scatter_(1, keep_idx, True)
    if isinstance(fill, torch.Tensor):
        fill_t = fill.to(inputs).expand_as(inputs[0]).reshape(1, d)
    else:
        fill_t = torch.full((1, d), float(fill), dtype=inputs.dtype, device=inputs.device)
    flat = inputs.detach().reshape(n, d)
    return torch.where(keep, flat, fill_t).reshape(inputs.shape)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on ``(inputs, labels)`` in eval mode (the model's mode is restored).

    The model's logits must be finite (an argmax over NaN would count as class 0) and of shape (N, C); labels are
    integer classes of shape (N,) in [0, C).
    """
    check_callable("model", model)
    check_tensor("inputs", inputs, floating=True, finite=True)
    if inputs.ndim < 1:
        raise ValueError(f"inputs must have a batch dimension; got shape {tuple(inputs.shape)}")
    check_class_labels("labels", labels, inputs.shape[0])
    check_int("batch_size", batch_size, minimum=1)
    is_module = isinstance(model, nn.Module)
    was_training = model.training if is_module else False
    if is_module:
        model.eval()
    try:
        correct = 0
        for start in range(0, len(labels), batch_size):
            out = forward(model, inputs[start:start + batch_size])
            if out.ndim != 2:
                raise ValueError(f"model must return logits of shape (N, C); got shape {tuple(out.shape)}")
            check_class_labels("labels", labels[start:start + batch_size], out.shape[0], out.shape[1])
            correct += int((out.argmax(dim=1) == labels[start:start + batch_size]).sum())
    finally:
        if is_module:
            model.train(was_training)
    return correct / max(1, len(labels))


def remove_and_retrain(train_fn: TrainFn, x_train: torch.Tensor, y_train: torch.Tensor, attr_train: torch.Tensor,
                       x_test: torch.Tensor, y_test: torch.Tensor, attr_test: torch.Tensor, fraction: float,
                       largest: bool, fill: float | torch.Tensor, seed: int) -> float:
    """Test accuracy of a fresh model trained on the top- (or bottom-) ``fraction`` unmasked training set."""
    check_callable("train_fn", train_fn)
    check_int("seed", seed, minimum=0)
    xm_train = unmask_top_k(x_train, attr_train, fraction, largest=largest, fill=fill, seed=seed)
    xm_test = unmask_top_k(x_test, attr_test, fraction, largest=largest, fill=fill, seed=seed + 1)
    model = train_fn(xm_train, y_train, seed)
    if not isinstance(model, nn.Module):
        raise TypeError(f"train_fn must return a torch.nn.Module; got {type(model).__name__}")
    return evaluate_accuracy(model, xm_test, y_test)


@dataclass(frozen=True)
class DiffROARResult:
    """Accuracies of the retrained models, shape ``(n_runs, len(fractions))``, and their summaries."""

    fractions: np.ndarray
    top_accuracy: np.ndarray
    bottom_accuracy: np.ndarray

    @property
    def runs(self) -> np.ndarray:
        """DiffROAR(k) of every run, ``(n_runs, K)``."""
        return self.top_accuracy - self.bottom_accuracy

    @property
    def curve(self) -> np.ndarray:
        """Mean DiffROAR(k) over runs, ``(K,)``."""
        return self.runs.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of DiffROAR(k) over runs (0 for a single run)."""
        return self.runs.std(axis=0, ddof=1) if self.runs.shape[0] > 1 else np.zeros(len(self.fractions))

    @property
    def area(self) -> float:
        """Trapezoid area under the mean curve over the fractions (0 for a single fraction)."""
        f, c = self.fractions, self.curve
        return float(np.sum(0.5 * (c[1:] + c[:-1]) * np.diff(f))) if len(f) > 1 else 0.0


def diffroar(train_fn: TrainFn, x_train: torch.Tensor, y_train: torch.Tensor, attr_train: torch.Tensor,
             x_test: torch.Tensor, y_test: torch.Tensor, attr_test: torch.Tensor,
             fractions: Sequence[float] = (0.05, 0.1, 0.2, 0.4), n_runs: int = 1,
             fill: str | float | torch.Tensor = "mean", seed: int = 0,
             progress: Callable[[float], None] | None = None) -> DiffROARResult:
    """DiffROAR(k) = ACC(D_top(k)) - ACC(D_bot(k)) with retraining, for every ``k`` in ``fractions``.

    Args:
        train_fn: ``train_fn(x, y, seed) -> model``; builds and trains a *fresh* model with a fixed recipe.
        attr_train, attr_test: attributions of the train and test inputs (same shapes as the inputs).
        fractions: fractions of coordinates left unmasked, increasing, in (0, 1].
        n_runs: retraining runs per fraction and direction (different seeds), averaged in the curve.
        fill: the masking value: ``"mean"`` (per-coordinate training mean, as in the paper), a number, or a
            tensor shaped like one instance. The same fill is used for train and test.
        progress: optional callback receiving the completed fraction of retrainings.
    """
    check_callable("train_fn", train_fn)
    check_int("n_runs", n_runs, minimum=1)
    check_int("seed", seed, minimum=0)
    if progress is not None:
        check_callable("progress", progress)
    check_type("fractions", fractions, (tuple, list, np.ndarray))
    try:
        fr = np.asarray(fractions, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"fractions must be a sequence of numbers; got {fractions!r}") from err
    if fr.ndim != 1 or len(fr) == 0 or np.any(np.diff(fr) <= 0):
        raise ValueError(f"fractions must be a non-empty increasing sequence; got {fractions!r}")
    for f in fr:
        check_range("fractions[i]", float(f), 0.0, 1.0, low_inclusive=False, high_inclusive=True)
    for name, x, a, y in (("train", x_train, attr_train, y_train), ("test", x_test, attr_test, y_test)):
        check_tensor(f"x_{name}", x, floating=True, finite=True)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"x_{name} must be a non-empty batch (N, ...); got shape {tuple(x.shape)}")
        check_tensor(f"y_{name}", y, ndim=1)
        if len(y) != len(x):
            raise ValueError(f"y_{name} has {len(y)} labels for {len(x)} inputs")
        check_class_labels(f"y_{name}", y, len(x))
        check_tensor(f"attr_{name}", a, floating=True, finite=True)
        if a.shape != x.shape:
            raise ValueError(f"attr_{name} must have shape {tuple(x.shape)}; got {tuple(a.shape)}")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"x_train and x_test must hold instances of one shape; got {tuple(x_train.shape[1:])} and "
                         f"{tuple(x_test.shape[1:])}")
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"fill must be 'mean', a number or a tensor; got {fill!r}")
        fill_v: float | torch.Tensor = x_train.mean(dim=0)
    else:
        fill_v = fill
    top = np.zeros((n_runs, len(fr)))
    bottom = np.zeros((n_runs, len(fr)))
    total, done = 2 * n_runs * len(fr), 0
    for r in range(n_runs):
        for j, f in enumerate(fr):
            run_seed = seed + 1000 * r + j
            for largest, out in ((True, top), (False, bottom)):
                out[r, j] = remove_and_retrain(train_fn, x_train, y_train, attr_train, x_test, y_test, attr_test,
                                               float(f), largest, fill_v, run_seed)
                done += 1
                if progress is not None:
                    progress(done / total)
    return DiffROARResult(fr, top, bottom)
