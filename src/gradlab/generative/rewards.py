r"""Consistency rewards of ControlNet++ (Li et al., "ControlNet++: Improving Conditional Controls with Efficient
Consistency Feedback", ECCV 2024, arXiv 2404.07987).

A *reward model* :math:`\mathbb{D}` maps a generated image back to the condition domain and the reward loss
compares it with the condition :math:`c_v` it was generated from (pixel-level cycle consistency, paper eq. 5):

.. math::
    \mathcal{L}_{\text{reward}} = \mathcal{L}\big(c_v, \mathbb{D}(\hat x_0)\big).

Every reward here takes images in ``input_range`` (``(-1, 1)`` by default: what a pixel-space diffusion model or
a VAE decoder produces), maps them to :math:`[0, 1]` and applies the normalisation its reward model expects
(the official code stresses that each reward network needs its own), and returns the loss **per sample**, shape
``(batch,)``, so that the trainer can mask samples by timestep:

* :class:`SobelEdgeReward` — a differentiable Sobel gradient magnitude (no network), MSE to an edge map; the
  stand-in for the paper's differentiable Canny/HED/lineart rewards.
* :class:`SegmentationReward` — a frozen segmentation network, per-pixel cross-entropy with ``ignore_index``
  255 (the paper's ADE20K/COCO-Stuff rewards; ImageNet mean/std normalisation by default).
* :class:`DepthReward` — a frozen monocular depth network (DPT in the paper), predictions resized to the label
  size and both maps max-normalised per image, MSE (mean/std 0.5 and an optional resize, 384 in the paper).

Reward models are frozen evaluators: :class:`SegmentationReward` and :class:`DepthReward` put them in eval
mode and switch their ``requires_grad`` off; gradients still flow through them to the image.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_choice, check_int, check_positive, check_tensor, check_type

__all__ = ["ConsistencyReward", "SobelEdgeReward", "SegmentationReward", "DepthReward", "sobel_gradients"]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as in kornia.color.rgb_to_grayscale


def sobel_gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Sobel derivatives of ``image`` ``(..., H, W)`` along x (width) and y (height), replicate-padded.

    :math:`g_x = [1, 2, 1]^\top \otimes [-1, 0, 1]` correlated with the image, :math:`g_y` its transpose, so
    ``g_x[..., i, j]`` is the smoothed ``x[i, j+1] - x[i, j-1]``: the convention of ``scipy.ndimage.sobel`` with
    ``axis=-1`` (and ``axis=-2`` for ``g_y``) in ``mode="nearest"`` (equal to its ``"reflect"`` for a 3-tap
    filter). Returns ``(g_x, g_y)`` with the shape of ``image``.
    """
    check_tensor("image", image, floating=True)
    if image.ndim < 2:
        raise ValueError(f"image must have at least 2 dimensions (..., H, W); got shape {tuple(image.shape)}")
    shape = image.shape
    x = image.reshape(-1, 1, shape[-2], shape[-1])
    x = F.pad(x, (1, 1, 1, 1), mode="replicate")
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=image.dtype, device=image.device)
    diff = torch.tensor([-1.0, 0.0, 1.0], dtype=image.dtype, device=image.device)
    kx = torch.outer(smooth, diff).view(1, 1, 3, 3)
    ky = torch.outer(diff, smooth).view(1, 1, 3, 3)
    gx = F.conv2d(x, kx).reshape(shape)
    gy = F.conv2d(x, ky).reshape(shape)
    return gx, gy


class ConsistencyReward(nn.Module, ABC):
    """Base class: ``forward(images, target) -> per-sample loss (batch,)``; images in ``input_range``.

    Subclasses implement ``per_sample_loss`` on images already mapped to [0, 1]."""

    def __init__(self, input_range: Sequence[float] = (-1.0, 1.0)) -> None:
        super().__init__()
        lo, hi = _check_range_pair(input_range)
        self.input_range = (lo, hi)

    def to_unit(self, images: torch.Tensor) -> torch.Tensor:
        """Map ``images`` from ``input_range`` to [0, 1] (no clamping: the reward sees what the model produced)."""
        lo, hi = self.input_range
        return (images - lo) / (hi - lo)

    @abstractmethod
    def per_sample_loss(self, images01: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The reward's loss per image (shape ``(batch,)``) for images mapped to [0, 1]; each reward defines it."""

    def forward(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_tensor("images", images, ndim=4, floating=True)
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"target must be a torch.Tensor; got {type(target).__name__}")
        if target.shape[0] != images.shape[0]:
            raise ValueError(f"target must have one entry per image: images batch {images.shape[0]}, "
                             f"target shape {tuple(target.shape)}")
        return self.per_sample_loss(self.to_unit(images), target)


def _check_range_pair(input_range: Sequence[float]) -> tuple[float, float]:
    if not isinstance(input_range, (tuple, list)) or len(input_range) != 2:
        raise TypeError(f"input_range must be a pair (low, high); got {input_range!r}")
    lo, hi = (float(v) for v in input_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"input_range must be finite with high > low; got {input_range!r}")
    return lo, hi


class SobelEdgeReward(ConsistencyReward):
    r"""Edge-consistency reward: MSE between the Sobel edge map of the generated image and the target edges.

    The edge map of an image :math:`x \in [0, 1]^{C \times H \times W}` is

    .. math::
        E(x) = \frac{\sqrt{g_x(r(x))^2 + g_y(r(x))^2 + \epsilon} - \sqrt{\epsilon}}{4\sqrt 2},

    with :func:`sobel_gradients`, :math:`r` the channel reduction (``"luma"``: BT.601 weights, ``"mean"``, or
    ``"max"``: the brightest channel, which makes edges of saturated colours on black colour-independent) and
    the constant :math:`4\sqrt 2` (the largest magnitude a [0, 1] image can reach) so that :math:`E \in [0, 1]`.
    :math:`\epsilon` keeps the gradient of the square root finite on flat regions. The per-sample loss is
    :math:`\operatorname{mean}_{hw}(E(\hat x_0) - c)^2` with ``target`` :math:`c` of shape ``(B, H, W)``,
    ``(B, 1, H, W)`` or ``(B, k, H, W)`` (channels averaged, for a 3-channel ControlNet condition image in
    [0, 1]). Use :meth:`edge_map` on real images to build conditions.
    """

    def __init__(self, channel_reduce: str = "luma", eps: float = 1e-6,
                 input_range: Sequence[float] = (-1.0, 1.0)) -> None:
        super().__init__(input_range)
        self.channel_reduce = check_choice("channel_reduce", channel_reduce, ("luma", "mean", "max"))
        self.eps = check_positive("eps", eps)

    def reduce_channels(self, images01: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, H, W)`` by ``channel_reduce`` (luma needs C = 3; C = 1 passes through)."""
        if images01.shape[1] == 1:
            return images01[:, 0]
        if self.channel_reduce == "mean":
            return images01.mean(dim=1)
        if self.channel_reduce == "max":
            return images01.amax(dim=1)
        if images01.shape[1] != 3:
            raise ValueError(f"channel_reduce='luma' needs 1 or 3 channels; got {images01.shape[1]}")
        w = torch.tensor(_LUMA, dtype=images01.dtype, device=images01.device).view(1, 3, 1, 1)
        return (images01 * w).sum(dim=1)

    def edges01(self, images01: torch.Tensor) -> torch.Tensor:
        """Edge map ``(B, H, W)`` in [0, 1] of images already in [0, 1]."""
        gx, gy = sobel_gradients(self.reduce_channels(images01))
        mag = torch.sqrt(gx * gx + gy * gy + self.eps) - math.sqrt(self.eps)
        return mag / (4.0 * math.sqrt(2.0))

    def edge_map(self, images: torch.Tensor) -> torch.Tensor:
        """Edge map ``(B, 1, H, W)`` in [0, 1] of images in ``input_range`` (a ControlNet condition)."""
        check_tensor("images", images, ndim=4, floating=True)
        return self.edges01(self.to_unit(images)).unsqueeze(1)

    def per_sample_loss(self, images01: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        edges = self.edges01(images01)
        tgt = _edge_target(target, edges.shape)
        return ((edges - tgt.to(edges.dtype)) ** 2).flatten(1).mean(dim=1)


def _edge_target(target: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    check_tensor("target", target, ndim=(3, 4), floating=True)
    tgt = target.mean(dim=1) if target.ndim == 4 else target
    if tuple(tgt.shape) != tuple(shape):
        raise ValueError(f"target must match the edge map {tuple(shape)} (as (B, H, W) or (B, k, H, W)); "
                         f"got shape {tuple(target.shape)}")
    return tgt


def _model_output(out: Any, names: Sequence[str]) -> torch.Tensor:
    """The prediction tensor of a plain module or a transformers/diffusers output object."""
    if isinstance(out, torch.Tensor):
        return out
    for name in names:
        value = getattr(out, name, None)
        if value is None and isinstance(out, dict):
            value = out.get(name)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"the reward model must return a tensor or an output with one of {list(names)}; "
                    f"got {type(out).__name__}")


class _NetworkReward(ConsistencyReward):
    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], input_size: int | None,
                 input_range: Sequence[float]) -> None:
        super().__init__(input_range)
        check_type("model", model, nn.Module)
        if len(mean) != len(std) or not all(float(s) > 0 for s in std):
            raise ValueError(f"mean and std must have equal lengths and std > 0; got {mean!r}, {std!r}")
        self.model = model.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1), persistent=False)
        self.input_size = None if input_size is None else check_int("input_size", input_size, minimum=1)

    def train(self, mode: bool = True) -> "_NetworkReward":
        super().train(mode)
        self.model.eval()  # a frozen evaluator: batch-norm statistics and dropout never switch to training
        return self

    def prepare(self, images01: torch.Tensor) -> torch.Tensor:
        """Resize to ``input_size`` (bilinear) and normalise with ``mean``/``std``."""
        if images01.shape[1] != self.mean.shape[1]:
            raise ValueError(f"images must have {self.mean.shape[1]} channels for this reward's mean/std; "
                             f"got {images01.shape[1]}")
        x = images01
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class SegmentationReward(_NetworkReward):
    r"""Segmentation-consistency reward: per-pixel cross-entropy of a frozen segmenter on the generated image.

    ``model(x)`` returns logits ``(B, K, h, w)`` (or an output with ``.logits``, as transformers'
    ``SegformerForSemanticSegmentation``/``UperNetForSemanticSegmentation``); they are resized bilinearly to the
    label size. ``target`` holds class ids ``(B, H, W)`` (``(B, 1, H, W)`` accepted); pixels equal to
    ``ignore_index`` (255, the paper's remapped background) do not count. Per sample:

    .. math::
        \ell_b = \frac{\sum_{p \notin \text{ignored}} -\log \operatorname{softmax}(z_{b,p})_{y_{b,p}}}
                      {\max(1, |\{p \notin \text{ignored}\}|)}

    (0 for an image whose pixels are all ignored). Images are normalised with ImageNet ``mean``/``std``.
    """

    def __init__(self, model: nn.Module, ignore_index: int = 255, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, input_size: int | None = None,
                 input_range: Sequence[float] = (-1.0, 1.0)) -> None:
        super().__init__(model, mean, std, input_size, input_range)
        self.ignore_index = check_int("ignore_index", ignore_index)

    def per_sample_loss(self, images01: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        check_tensor("target", target, ndim=3, dtype=(torch.int64, torch.int32, torch.uint8, torch.int16))
        logits = _model_output(self.model(self.prepare(images01)), ("logits", "sample"))
        if logits.ndim != 4 or logits.shape[0] != images01.shape[0]:
            raise ValueError(f"the segmentation model must return logits (B, K, h, w); got {tuple(logits.shape)}")
        if tuple(logits.shape[-2:]) != tuple(target.shape[-2:]):
            logits = F.interpolate(logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
        tgt = target.long()
        valid = tgt != self.ignore_index
        bad = valid & ((tgt < 0) | (tgt >= logits.shape[1]))
        if bool(bad.any()):
            raise ValueError(f"target holds class ids outside [0, {logits.shape[1]}) that are not "
                             f"ignore_index={self.ignore_index}")
        ce = F.cross_entropy(logits.float(), tgt, ignore_index=self.ignore_index, reduction="none")
        return ce.flatten(1).sum(dim=1) / valid.flatten(1).sum(dim=1).clamp_min(1)


class DepthReward(_NetworkReward):
    r"""Depth-consistency reward: MSE of max-normalised depth maps from a frozen depth network.

    ``model(x)`` returns depth ``(B, h, w)`` or ``(B, 1, h, w)`` (or an output with ``.predicted_depth``, as
    transformers' ``DPTForDepthEstimation``), resized bilinearly to the label size. Both maps are divided by
    their per-image maximum (:math:`d / (\max d + \epsilon)`, the official code's normalisation) and

    .. math::
        \ell_b = \operatorname{mean}_p \Big(\frac{\hat d_{b,p}}{\max \hat d_b + \epsilon}
                  - \frac{d_{b,p}}{\max d_b + \epsilon}\Big)^2.

    Defaults follow the paper's DPT setting: mean = std = 0.5 per channel; pass ``input_size=384`` for DPT.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float] = (0.5, 0.5, 0.5),
                 std: Sequence[float] = (0.5, 0.5, 0.5), input_size: int | None = None, eps: float = 1e-6,
                 input_range: Sequence[float] = (-1.0, 1.0)) -> None:
        super().__init__(model, mean, std, input_size, input_range)
        self.eps = check_positive("eps", eps)

    def per_sample_loss(self, images01: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 4 and target.shape[1] == 1:
            target = target[:, 0]
        check_tensor("target", target, ndim=3, floating=True)
        pred = _model_output(self.model(self.prepare(images01)), ("predicted_depth", "sample"))
        if pred.ndim == 4 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.ndim != 3 or pred.shape[0] != images01.shape[0]:
            raise ValueError(f"the depth model must return depth (B, h, w) or (B, 1, h, w); got {tuple(pred.shape)}")
        if tuple(pred.shape[-2:]) != tuple(target.shape[-2:]):
            pred = F.interpolate(pred.unsqueeze(1), size=tuple(target.shape[-2:]), mode="bilinear",
                                 align_corners=False)[:, 0]
        pred = pred.float()
        tgt = target.float()
        pred = pred / (pred.flatten(1).amax(dim=1).view(-1, 1, 1) + self.eps)
        tgt = tgt / (tgt.flatten(1).amax(dim=1).view(-1, 1, 1) + self.eps)
        return ((pred - tgt) ** 2).flatten(1).mean(dim=1)
