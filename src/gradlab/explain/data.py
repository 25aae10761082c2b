"""Data with a known signal source, for checking whether an explanation points at the right pixels.

Two generators, both seeded and returning ground-truth masks of the discriminative pixels:

* :func:`make_block_digits` — two-block images in the style of BlockMNIST (Shah, Jain & Netrapalli, "Do Input
  Gradients Highlight Discriminative Features?", NeurIPS 2021, arXiv 2102.12781). Each image stacks two
  8x8 blocks vertically: a *signal* block holding one of scikit-learn's bundled handwritten digits (the label
  is the digit's class) and a *null* block holding a fixed, label-independent hollow square. The signal block
  is on top or at the bottom at random (or always on top with ``fixed_top=True``, the paper's BlockMNIST-Top).
  Only the signal block is discriminative, so its pixels are the ground-truth mask.
* :func:`make_anatomy_images` — synthetic "anatomy" images in the spirit of the known-signal validation of
  Siegel et al., "Explainable AI Methods for Neuroimaging" (arXiv 2508.02560): a fixed head-like template plus
  a smooth Gaussian random field of subject-specific texture. The label is derived from the image inside a
  fixed region R without editing the image: with the zero-mean template ``w`` (+1 on the left half of R,
  -1 on the right half), ``y = 1[<w, field> > 0]``. Nothing is inserted and no class is brighter on average
  (the mean intensity inside R has the same distribution in both classes), so methods that multiply by the
  input are not rewarded for finding a bright blob. The ground truth is R.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gradlab.core import check_int, check_positive, check_range, check_type, load_digits_split, numpy_rng

__all__ = ["KnownSignalSplit", "anatomy_template", "make_anatomy_images", "make_block_digits", "null_block_pattern"]


@dataclass(frozen=True)
class KnownSignalSplit:
    """Train/test images (``(n, 1, H, W)`` float32), int64 labels and bool ground-truth masks shaped like the images."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    mask_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mask_test: torch.Tensor
    num_classes: int


def null_block_pattern(size: int = 8) -> torch.Tensor:
    """The fixed null block of :func:`make_block_digits`: a one-pixel hollow square inset by one pixel."""
    check_int("size", size, minimum=4)
    block = torch.zeros(size, size)
    lo, hi = 1, size - 2
    block[lo, lo:hi + 1] = 1.0
    block[hi, lo:hi + 1] = 1.0
    block[lo:hi + 1, lo] = 1.0
    block[lo:hi + 1, hi] = 1.0
    return block


def _stack_blocks(digits: torch.Tensor, top: torch.Tensor, null: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n, _, h, w = digits.shape
    null_b = null.expand(n, 1, h, w)
    t = top.view(n, 1, 1, 1)
    upper = torch.where(t, digits, null_b)
    lower = torch.where(t, null_b, digits)
    images = torch.cat([upper, lower], dim=2)
    ones, zeros = torch.ones(n, 1, h, w, dtype=torch.bool), torch.zeros(n, 1, h, w, dtype=torch.bool)
    masks = torch.cat([torch.where(t, ones, zeros), torch.where(t, zeros, ones)], dim=2)
    return images, masks


def make_block_digits(
    seed: int,
    classes: tuple[int, ...] = (0, 1),
    n_train: int | None = None,
    n_test: int | None = None,
    noise: float = 0.05,
    fixed_top: bool = False,
    clip: bool = True,
) -> KnownSignalSplit:
    """Two-block digit images (BlockMNIST style) of shape ``(n, 1, 16, 8)`` with the signal block as mask.

    Args:
        seed: seeds the block positions, the noise and the resampling (the digit train/test split is fixed).
        classes: which digits form the task; label ``i`` means digit ``classes[i]``.
        n_train, n_test: number of images; ``None`` uses every digit of ``classes`` in the bundled split once,
            otherwise digits are drawn with replacement (each with its own position and noise).
        noise: standard deviation of additive Gaussian pixel noise (pixels are in [0, 1]).
        fixed_top: put the signal block always on top (BlockMNIST-Top, where standard models do not leak).
        clip: clip the noisy images to [0, 1].
    """
    check_type("classes", classes, (tuple, list))
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"classes must hold at least two distinct digits; got {classes!r}")
    for c in classes:
        check_int("classes[i]", c, minimum=0, maximum=9)
    check_positive("noise", noise, allow_zero=True)
    check_type("fixed_top", fixed_top, bool)
    check_type("clip", clip, bool)
    rng = numpy_rng(seed)
    digits = load_digits_split(images=True)
    null = null_block_pattern(8)
    lookup = torch.full((10,), -1, dtype=torch.int64)
    lookup[torch.tensor(list(classes))] = torch.arange(len(classes))

    def build(x: torch.Tensor, y: torch.Tensor, n: int | None, name: str) -> tuple[torch.Tensor, ...]:
        keep = torch.isin(y, torch.tensor(list(classes)))
        x, y = x[keep], y[keep]
        if n is None:
            idx = rng.permutation(len(y))
        else:
            check_int(name, n, minimum=1)
            idx = rng.integers(0, len(y), size=n)
        idx_t = torch.as_tensor(idx)
        sel_x = x[idx_t]
        labels = lookup[y[idx_t]]
        top = torch.ones(len(idx), dtype=torch.bool) if fixed_top else torch.as_tensor(rng.random(len(idx)) < 0.5)
        images, masks = _stack_blocks(sel_x, top, null)
        if noise > 0:
            images = images + noise * torch.as_tensor(rng.standard_normal(images.shape), dtype=images.dtype)
        if clip:
            images = images.clamp(0.0, 1.0)
        return images.float(), labels, masks

    x_tr, y_tr, m_tr = build(digits.x_train, digits.y_train, n_train, "n_train")
    x_te, y_te, m_te = build(digits.x_test, digits.y_test, n_test, "n_test")
    return KnownSignalSplit(x_tr, y_tr, m_tr, x_te, y_te, m_te, num_classes=len(classes))


def _disk(size: int, center: tuple[float, float], radius: float) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    return (rows - center[0]) ** 2 + (cols - center[1]) ** 2 <= radius**2


def anatomy_template(size: int = 32) -> torch.Tensor:
    """The fixed head-like template of :func:`make_anatomy_images` (an ellipse with two darker 'ventricles')."""
    check_int("size", size, minimum=16)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    c = size / 2
    head = ((rows - c) / (0.45 * size)) ** 2 + ((cols - c) / (0.38 * size)) ** 2 <= 1.0
    template = 0.6 * head.astype(np.float64)
    for dc in (-0.1, 0.1):
        vent = ((rows - 0.45 * size) / (0.12 * size)) ** 2 + ((cols - (c + dc * size)) / (0.05 * size)) ** 2 <= 1.0
        template[vent] = 0.3
    return torch.as_tensor(template, dtype=torch.float32)


def make_anatomy_images(
    seed: int,
    n_train: int = 2000,
    n_test: int = 500,
    size: int = 32,
    smoothness: float = 2.0,
    texture: float = 0.15,
    noise: float = 0.02,
    region_center: tuple[float, float] = (0.68, 0.35),
    region_radius: float = 0.15,
) -> KnownSignalSplit:
    """Synthetic anatomy images whose label depends only on a fixed region R (shape ``(n, 1, size, size)``).

    ``x = template + texture * head * field + noise * eps`` with ``field`` a Gaussian random field (white noise
    smoothed by a Gaussian of ``smoothness`` pixels, scaled to unit standard deviation). With the zero-mean
    region template ``w = +1`` on the left half of R and ``-1`` on the right half, ``y = 1[<w, field> > 0]``:
    a lateral asymmetry of the texture inside R, not a brighter lesion. ``mask`` is R for every image.

    Args:
        region_center: (row, column) of R's centre as fractions of ``size``; R must lie inside the head.
        region_radius: R's radius as a fraction of ``size``.
    """
    from scipy.ndimage import gaussian_filter

    check_int("n_train", n_train, minimum=1)
    check_int("n_test", n_test, minimum=1)
    check_int("size", size, minimum=16)
    check_positive("smoothness", smoothness)
    check_positive("texture", texture)
    check_positive("noise", noise, allow_zero=True)
    check_range("region_radius", region_radius, 0.0, 0.5, low_inclusive=False)
    check_type("region_center", region_center, (tuple, list))
    if len(region_center) != 2:
        raise ValueError(f"region_center must be (row, column) fractions; got {region_center!r}")
    for v in region_center:
        check_range("region_center[i]", v, 0.0, 1.0)
    template = anatomy_template(size)
    head = template > 0
    center = (region_center[0] * size, region_center[1] * size)
    region = _disk(size, center, region_radius * size)
    if not bool(head.numpy()[region].all()):
        raise ValueError("the region R must lie inside the head; move region_center or shrink region_radius")
    cols = np.mgrid[0:size, 0:size][1] + 0.5
    w = np.where(region, np.where(cols < center[1], 1.0, -1.0), 0.0)
    w[region] -= w[region].mean()  # exactly zero mean on R even when the halves differ by a pixel

    rng = numpy_rng(seed)
    n = n_train + n_test
    field = gaussian_filter(rng.standard_normal((n, size, size)), sigma=(0, smoothness, smoothness), mode="wrap")
    field /= field.std()
    labels = (np.einsum("nij,ij->n", field, w) > 0).astype(np.int64)
    images = template.numpy()[None] + texture * head.numpy()[None] * field
    if noise > 0:
        images = images + noise * rng.standard_normal(images.shape)
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1)
    y = torch.as_tensor(labels)
    mask = torch.as_tensor(region).expand(n, 1, size, size).clone()
    return KnownSignalSplit(x[:n_train], y[:n_train], mask[:n_train], x[n_train:], y[n_train:], mask[n_train:], num_classes=2)
