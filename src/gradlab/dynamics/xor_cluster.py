"""XOR-cluster data and the two-layer ReLU network of Xu, Wang, Frei, Vardi & Hu (ICLR 2024, arXiv 2310.02541).

*Benign Overfitting and Grokking in ReLU Networks for XOR Cluster Data.*

Data. Two orthogonal means ``mu_1 ⟂ mu_2`` of equal norm in R^p. A sample is ``x = ±mu_c + xi`` with
``xi ~ N(0, I_p)``; the clean label is ``+1`` for cluster ``c = 1`` and ``-1`` for ``c = 2`` (an XOR of the four
clusters ``±mu_1, ±mu_2``), and each training label is flipped independently with probability ``eta``.

Model. ``f(x) = sum_{j=1}^m a_j ReLU(<w_j, x>)`` with a fixed second layer ``a_j = ±1/sqrt(m)`` (half of each
sign) and ``w_j(0) ~ N(0, omega^2 I_p)``. Only ``W`` is trained, by full-batch gradient descent with step
``alpha`` on the empirical logistic loss ``L(W) = (1/n) sum_i log(1 + exp(-y_i f(x_i)))``:

    w_j <- w_j - alpha * grad_{w_j} L,
    grad_{w_j} L = -(a_j / n) sum_i y_i * sigmoid(-y_i f(x_i)) * 1[<w_j, x_i> > 0] * x_i.

The paper proves that after one step the network fits every training label (including the flipped ones) but is
near chance on test data (it is close to a linear classifier, which cannot represent XOR); after more steps the
test accuracy becomes near-optimal while the noisy labels stay fitted (benign overfitting and grokking).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from gradlab.core import check_int, check_positive, check_range, check_tensor, check_type
from gradlab.dynamics._validation import (
    check_bool, check_data, check_features, check_generator, check_labels, check_shape, under_transform,
)

__all__ = ["XORClusterBatch", "XORClusterTask", "XORTwoLayerReLU", "GDHistory", "train_xor_gd", "accuracy"]


@dataclass
class XORClusterBatch:
    """One sample of XOR-cluster data.

    Attributes:
        x: inputs, shape (n, p).
        y: observed labels in {-1, +1} (after label flips), shape (n,).
        y_clean: labels before flipping, shape (n,).
        flipped: boolean mask of flipped labels, shape (n,).
        cluster: cluster index in {0: +mu_1, 1: -mu_1, 2: +mu_2, 3: -mu_2}, shape (n,).
    """

    x: torch.Tensor
    y: torch.Tensor
    y_clean: torch.Tensor
    flipped: torch.Tensor
    cluster: torch.Tensor


class XORClusterTask:
    """Seeded generator of XOR-cluster data ``x = ±mu_c + xi`` with label noise.

    Args:
        dim: ambient dimension ``p``.
        mu_norm: norm of each cluster mean; ``mu_1 = mu_norm * e_1``, ``mu_2 = mu_norm * e_2`` unless ``means``
            is given.
        flip_prob: probability ``eta`` that a training label is flipped (in [0, 0.5)).
        noise_std: standard deviation of the isotropic Gaussian noise ``xi`` (1 in the paper).
        means: optional (2, p) tensor of orthogonal, equal-norm means overriding ``mu_norm``.
    """

    def __init__(
        self,
        dim: int,
        mu_norm: float,
        flip_prob: float = 0.1,
        noise_std: float = 1.0,
        means: torch.Tensor | None = None,
    ) -> None:
        self.dim = check_int("dim", dim, minimum=2)
        self.flip_prob = check_range("flip_prob", flip_prob, 0.0, 0.5)
        self.noise_std = check_positive("noise_std", noise_std, allow_zero=True)
        if means is None:
            mu_norm = check_positive("mu_norm", mu_norm)
            means = torch.zeros(2, self.dim)
            means[0, 0] = mu_norm
            means[1, 1] = mu_norm
        else:
            check_tensor("means", means, ndim=2, floating=True, finite=True)
            if tuple(means.shape) != (2, self.dim):
                raise ValueError(f"means must have shape (2, {self.dim}); got {tuple(means.shape)}")
            n0, n1 = means.norm(dim=1)
            if abs(float(means[0] @ means[1])) > 1e-5 * float(n0 * n1) or abs(float(n0 - n1)) > 1e-5 * float(n0):
                raise ValueError("means must be two orthogonal vectors of equal norm")
        self.means = means.to(torch.get_default_dtype())
        self.mu_norm = float(self.means[0].norm())

    def sample(self, n: int, generator: torch.Generator | None = None, flip: bool = True) -> XORClusterBatch:
        """Draw ``n`` samples with uniformly random cluster; labels are flipped w.p. ``flip_prob`` if ``flip``."""
        n = check_int("n", n, minimum=1)
        check_generator("generator", generator)
        check_bool("flip", flip)
        cluster = torch.randint(0, 4, (n,), generator=generator)
        which = cluster // 2  # 0 -> mu_1 (label +1), 1 -> mu_2 (label -1)
        sign = 1.0 - 2.0 * (cluster % 2).to(self.means.dtype)
        xi = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype) * self.noise_std
        x = sign[:, None] * self.means[which] + xi
        y_clean = 1.0 - 2.0 * which.to(self.means.dtype)
        if flip and self.flip_prob > 0:
            flipped = torch.rand(n, generator=generator) < self.flip_prob
        else:
            flipped = torch.zeros(n, dtype=torch.bool)
        y = torch.where(flipped, -y_clean, y_clean)
        return XORClusterBatch(x=x, y=y, y_clean=y_clean, flipped=flipped, cluster=cluster)

    def bayes_accuracy(self) -> float:
        """Accuracy of the Bayes-optimal classifier on *noisy* labels, ``1 - eta`` (clean-label optimum is ~1)."""
        return 1.0 - self.flip_prob


class XORTwoLayerReLU(nn.Module):
    """``f(x) = sum_j a_j ReLU(<w_j, x>)`` with fixed ``a_j = ±1/sqrt(m)`` and trainable ``W ~ N(0, omega^2)``.

    Args:
        in_features: input dimension ``p``.
        width: number of neurons ``m`` (even, half with ``a_j > 0``).
        init_std: ``omega``, the standard deviation of the first-layer initialisation.
        generator: optional generator for the initialisation.
    """

    def __init__(self, in_features: int, width: int, init_std: float = 1e-6, generator: torch.Generator | None = None):
        super().__init__()
        in_features = check_int("in_features", in_features, minimum=1)
        width = check_int("width", width, minimum=2)
        if width % 2:
            raise ValueError(f"width must be even (half the neurons have a_j > 0); got {width}")
        init_std = check_positive("init_std", init_std, allow_zero=True)
        self.weight = nn.Parameter(torch.randn(width, in_features, generator=generator) * init_std)
        a = torch.full((width,), 1.0 / math.sqrt(width))
        a[width // 2 :] *= -1.0
        self.register_buffer("second_layer", a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``f(x)`` of shape (n,)."""
        check_features("x", x, self.weight.shape[1], self.weight.dtype)
        return F.relu(x @ self.weight.T) @ self.second_layer

    @torch.no_grad()
    def neuron_alignment(self, means: torch.Tensor) -> torch.Tensor:
        """Mean ``|cos(w_j, mu_c)|`` for (positive neurons, negative neurons) x (mu_1, mu_2): a (2, 2) tensor.

        Grokking coincides with neurons of ``a_j > 0`` aligning with ``±mu_1`` and those of ``a_j < 0`` with ``±mu_2``.
        """
        check_data("means", means, ndim=2)
        check_shape("means", means, (None, self.weight.shape[1]), "(the cluster means, one per row)")
        w = F.normalize(self.weight, dim=1)
        cos = (w @ F.normalize(means, dim=1).T).abs()  # (m, 2)
        pos = self.second_layer > 0
        return torch.stack([cos[pos].mean(0), cos[~pos].mean(0)])


def accuracy(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``sign(scores) == labels`` (a score of exactly 0 counts as wrong).

    ``scores`` and ``labels`` must hold one value per sample each (shape ``(n,)``; a trailing singleton dimension
    is accepted; labels in ``{-1, +1}``); mismatched shapes raise ``ValueError`` rather than broadcasting to an
    ``n x n`` comparison.
    """
    for name, t in (("scores", scores), ("labels", labels)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    s = scores.reshape(-1) if scores.ndim == 2 and scores.shape[1] == 1 else scores
    y = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if s.ndim != 1 or y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores and labels must both have shape (n,); got {tuple(scores.shape)} and "
                         f"{tuple(labels.shape)}")
    if s.numel() == 0:
        raise ValueError("scores and labels are empty")
    if s.is_floating_point() and not torch.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    if y.is_floating_point() and not torch.isfinite(y).all():
        raise ValueError("labels contain NaN or inf")
    if y.is_complex() or s.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"scores and labels must be real and labels numeric in {{-1, +1}}; got dtypes {s.dtype} and "
                        f"{y.dtype}")
    if not under_transform(y) and not bool(((y == 1) | (y == -1)).all()):
        raise ValueError("labels must be in {-1, +1}")
    return float((s * y > 0).float().mean())


@dataclass
class GDHistory:
    """Metrics recorded during :func:`train_xor_gd` at the steps in ``steps`` (step 0 = initialisation)."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    flipped_fit: list[float] = field(default_factory=list)
    clean_train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)

    def at(self, step: int) -> dict[str, float]:
        """All metrics at a recorded ``step``."""
        if step not in self.steps:
            raise ValueError(f"step {step!r} was not recorded; recorded steps: {self.steps[:10]}"
                             f"{' ...' if len(self.steps) > 10 else ''}")
        i = self.steps.index(step)
        return {
            "train_loss": self.train_loss[i],
            "train_acc": self.train_acc[i],
            "flipped_fit": self.flipped_fit[i],
            "clean_train_acc": self.clean_train_acc[i],
            "test_acc": self.test_acc[i],
        }


def train_xor_gd(
    model: XORTwoLayerReLU,
    train: XORClusterBatch,
    lr: float,
    steps: int,
    test: XORClusterBatch | None = None,
    record_at: Sequence[int] | None = None,
    test_on_clean: bool = True,
) -> GDHistory:
    """Full-batch GD on the mean logistic loss, recording train/test metrics.

    Args:
        model: the network (its ``weight`` is updated in place).
        train: training data with (possibly flipped) labels ``train.y``.
        lr: the step size ``alpha``.
        steps: number of GD steps.
        test: optional test data; accuracy is measured on ``test.y_clean`` if ``test_on_clean`` else ``test.y``.
        record_at: steps at which to record (default: every step), each in ``[0, steps]``; step 0 is the
            initialisation.

    Returns:
        A :class:`GDHistory`. ``flipped_fit`` is the fraction of flipped training points classified as their
        (wrong) observed label; it is NaN if no label was flipped.
    """
    check_type("model", model, XORTwoLayerReLU)
    check_type("train", train, XORClusterBatch)
    lr = check_positive("lr", lr)
    steps = check_int("steps", steps, minimum=0)
    check_tensor("train.x", train.x, ndim=2, floating=True, finite=True)
    if train.x.shape[1] != model.weight.shape[1]:
        raise ValueError(f"train.x has {train.x.shape[1]} features but the model expects {model.weight.shape[1]}")
    check_features("train.x", train.x, model.weight.shape[1], model.weight.dtype)
    n = train.x.shape[0]
    check_labels("train.y", train.y, n)
    check_labels("train.y_clean", train.y_clean, n)
    check_tensor("train.flipped", train.flipped, ndim=1, dtype=torch.bool)
    check_shape("train.flipped", train.flipped, (n,), "(one flag per sample)")
    check_bool("test_on_clean", test_on_clean)
    if test is not None:
        check_type("test", test, XORClusterBatch)
        check_features("test.x", test.x, model.weight.shape[1], model.weight.dtype)
        check_labels("test.y_clean" if test_on_clean else "test.y", test.y_clean if test_on_clean else test.y,
                     test.x.shape[0])
    if record_at is not None:
        if isinstance(record_at, (str, bytes)) or not hasattr(record_at, "__iter__"):
            raise TypeError(f"record_at must be a sequence of ints; got {type(record_at).__name__}")
        record_at = [check_int(f"record_at[{i}]", s, minimum=0, maximum=steps) for i, s in enumerate(record_at)]
    record = set(range(steps + 1)) if record_at is None else {int(s) for s in record_at if 0 <= int(s) <= steps}
    hist = GDHistory()
    y_test = None if test is None else (test.y_clean if test_on_clean else test.y)

    def log(step: int) -> None:
        with torch.no_grad():
            out = model(train.x)
            hist.steps.append(step)
            hist.train_loss.append(float(F.softplus(-train.y * out).mean()))
            hist.train_acc.append(accuracy(out, train.y))
            hist.clean_train_acc.append(accuracy(out, train.y_clean))
            fl = train.flipped
            hist.flipped_fit.append(accuracy(out[fl], train.y[fl]) if bool(fl.any()) else float("nan"))
            hist.test_acc.append(accuracy(model(test.x), y_test) if test is not None else float("nan"))

    if 0 in record:
        log(0)
    for t in range(1, steps + 1):
        model.zero_grad(set_to_none=True)
        loss = F.softplus(-train.y * model(train.x)).mean()
        loss.backward()
        with torch.no_grad():
            model.weight.add_(model.weight.grad, alpha=-lr)
        if not bool(torch.isfinite(model.weight).all()):
            raise FloatingPointError(f"weights became non-finite at step {t}; lower lr (got {lr})")
        if t in record:
            log(t)
    return hist
