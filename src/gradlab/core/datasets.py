"""Datasets that need no download: scikit-learn's bundled sets, seeded synthetic generators, and loaders for
real image datasets that read an existing local copy (never fetching one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gradlab.core.seeding import numpy_rng
from gradlab.core.validation import check_int, check_positive, check_range

SPLIT_SEED = 20240101
"""The fixed seed of every train/test split, so that splits never depend on a claim's seed."""


@dataclass(frozen=True)
class Split:
    """A train/test split of tensors. ``x`` is float32 (or float64 where asked), ``y`` is int64 for labels."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int | None = None

    @property
    def n_features(self) -> int:
        return int(self.x_train[0].numel())

    def to(self, dtype: torch.dtype | None = None, device: str | torch.device | None = None) -> "Split":
        """Move inputs to ``dtype``/``device`` (labels keep their dtype)."""
        def conv(t: torch.Tensor, is_x: bool) -> torch.Tensor:
            return t.to(device=device, dtype=dtype if (is_x and dtype is not None) else t.dtype)

        return Split(conv(self.x_train, True), conv(self.y_train, False), conv(self.x_test, True),
                     conv(self.y_test, False), self.num_classes)


def _split_arrays(x: np.ndarray, y: np.ndarray, test_fraction: float, stratify: bool) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_fraction, random_state=SPLIT_SEED, stratify=y if stratify else None)


def _standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x_train.mean(axis=0, keepdims=True)
    std = x_train.std(axis=0, keepdims=True)
    std[std == 0] = 1.0
    return (x_train - mean) / std, (x_test - mean) / std


def load_digits_split(
    test_fraction: float = 0.25, images: bool = False, standardize: bool = False, dtype: torch.dtype = torch.float32
) -> Split:
    """scikit-learn's bundled 8x8 digits (1797 samples, 10 classes) as tensors with a fixed stratified split.

    Pixels are scaled from [0, 16] to [0, 1]. With ``images=True`` inputs have shape ``(n, 1, 8, 8)``,
    otherwise ``(n, 64)``. ``standardize`` uses train statistics only (flat inputs).
    """
    from sklearn.datasets import load_digits

    check_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False)
    data = load_digits()
    x = data.data.astype(np.float64) / 16.0
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = _split_arrays(x, y, test_fraction, stratify=True)
    if standardize:
        if images:
            raise ValueError("standardize=True is only supported with images=False")
        x_tr, x_te = _standardize(x_tr, x_te)
    x_tr_t = torch.as_tensor(x_tr, dtype=dtype)
    x_te_t = torch.as_tensor(x_te, dtype=dtype)
    if images:
        x_tr_t = x_tr_t.reshape(-1, 1, 8, 8)
        x_te_t = x_te_t.reshape(-1, 1, 8, 8)
    return Split(x_tr_t, torch.as_tensor(y_tr), x_te_t, torch.as_tensor(y_te), num_classes=10)


def load_breast_cancer_split(
    test_fraction: float = 0.25, standardize: bool = True, dtype: torch.dtype = torch.float32
) -> Split:
    """scikit-learn's bundled Wisconsin breast-cancer set (569 x 30, binary) with a fixed stratified split,
    standardized with train statistics by default."""
    from sklearn.datasets import load_breast_cancer

    check_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False)
    data = load_breast_cancer()
    x = data.data.astype(np.float64)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = _split_arrays(x, y, test_fraction, stratify=True)
    if standardize:
        x_tr, x_te = _standardize(x_tr, x_te)
    return Split(torch.as_tensor(x_tr, dtype=dtype), torch.as_tensor(y_tr), torch.as_tensor(x_te, dtype=dtype),
                 torch.as_tensor(y_te), num_classes=2)


def _check_split_args(n_samples: int, test_fraction: Any, dtype: Any) -> None:
    """A test fraction that leaves both parts non-empty and a floating dtype for the features."""
    frac = check_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    n_test = max(1, int(round(frac * n_samples)))
    if n_test >= n_samples:
        raise ValueError(f"test_fraction={test_fraction!r} of {n_samples} samples leaves no training example")
    _check_float_dtype(dtype)


def _check_float_dtype(dtype: Any) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype (e.g. torch.float32); got {dtype!r}")


def make_gaussian_classification(
    n_samples: int, n_features: int, n_classes: int, seed: int, separation: float = 2.0,
    test_fraction: float = 0.25, dtype: torch.dtype = torch.float32,
) -> Split:
    """Gaussian class clusters: means drawn on a sphere of radius ``separation``, unit isotropic noise."""
    check_int("n_samples", n_samples, minimum=4)
    check_int("n_features", n_features, minimum=1)
    check_int("n_classes", n_classes, minimum=2)
    check_positive("separation", separation, allow_zero=True)
    _check_split_args(n_samples, test_fraction, dtype)
    rng = numpy_rng(seed)
    means = rng.standard_normal((n_classes, n_features))
    means *= separation / np.linalg.norm(means, axis=1, keepdims=True)
    y = rng.integers(0, n_classes, size=n_samples)
    x = means[y] + rng.standard_normal((n_samples, n_features))
    n_test = max(1, int(round(test_fraction * n_samples)))
    xt, yt = torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=torch.int64)
    return Split(xt[n_test:], yt[n_test:], xt[:n_test], yt[:n_test], num_classes=n_classes)


def make_linear_regression(
    n_samples: int, n_features: int, seed: int, noise: float = 0.1, dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``y = X w + noise * eps`` with ``X, w, eps ~ N(0, I)``. Returns ``(X, y, w)``."""
    check_int("n_samples", n_samples, minimum=1)
    check_int("n_features", n_features, minimum=1)
    check_positive("noise", noise, allow_zero=True)
    _check_float_dtype(dtype)
    rng = numpy_rng(seed)
    x = rng.standard_normal((n_samples, n_features))
    w = rng.standard_normal(n_features)
    y = x @ w + noise * rng.standard_normal(n_samples)
    return (torch.as_tensor(x, dtype=dtype), torch.as_tensor(y, dtype=dtype), torch.as_tensor(w, dtype=dtype))


def make_two_spirals(n_samples: int, seed: int, noise: float = 0.1, dtype: torch.dtype = torch.float32,
                     test_fraction: float = 0.25) -> Split:
    """Two interleaved spirals in 2-D (binary labels): a small non-linearly-separable task."""
    check_int("n_samples", n_samples, minimum=4)
    check_positive("noise", noise, allow_zero=True)
    _check_split_args(2 * (n_samples // 2), test_fraction, dtype)
    rng = numpy_rng(seed)
    n = n_samples // 2
    t = np.sqrt(rng.uniform(0.0, 1.0, n)) * 3 * np.pi
    a = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([a, -a]) + noise * rng.standard_normal((2 * n, 2))
    y = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64)])
    perm = rng.permutation(2 * n)
    x, y = x[perm], y[perm]
    n_test = max(1, int(round(test_fraction * 2 * n)))
    xt, yt = torch.as_tensor(x, dtype=dtype), torch.as_tensor(y)
    return Split(xt[n_test:], yt[n_test:], xt[:n_test], yt[:n_test], num_classes=2)


def load_torchvision_split(name: str, root: str | Path, dtype: torch.dtype = torch.float32) -> Split:
    """MNIST / FashionMNIST / CIFAR10 from an existing local copy under ``root`` (``download=False``).

    Raises ``FileNotFoundError`` with instructions when the files are not there; gradlab never downloads.
    """
    try:
        import torchvision
    except ImportError as err:
        raise ImportError("load_torchvision_split needs torchvision: pip install 'gradlab[vision]'") from err

    classes = {"mnist": torchvision.datasets.MNIST, "fashionmnist": torchvision.datasets.FashionMNIST,
               "cifar10": torchvision.datasets.CIFAR10}
    key = name.lower()
    if key not in classes:
        raise ValueError(f"name must be one of {sorted(classes)}; got {name!r}")
    root = Path(root)
    try:
        train = classes[key](root=str(root), train=True, download=False)
        test = classes[key](root=str(root), train=False, download=False)
    except RuntimeError as err:
        raise FileNotFoundError(
            f"{name} not found under {root}: place the dataset there (torchvision layout); gradlab does not download"
        ) from err

    def to_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        data = torch.as_tensor(np.asarray(ds.data))
        x = data.to(dtype) / 255.0
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return x.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)

    x_tr, y_tr = to_tensors(train)
    x_te, y_te = to_tensors(test)
    return Split(x_tr, y_tr, x_te, y_te, num_classes=10)
