"""Box geometry for detection: validation, IoU and Complete-IoU (CIoU) in ``(x1, y1, x2, y2)`` form.

CIoU (Zheng et al., "Distance-IoU Loss", AAAI 2020), used by YOLOv9's box loss and task-aligned assigner:

    CIoU = IoU - rho^2(b, b_gt) / c^2 - alpha * v,
    v = 4 / pi^2 * (atan(w_gt / h_gt) - atan(w / h))^2,   alpha = v / (1 - IoU + v),

with ``rho`` the distance of the box centres and ``c`` the diagonal of the smallest enclosing box; the loss is
``1 - CIoU``. ``alpha`` is treated as a constant in the backward pass (no gradient), as in torchvision.
"""

from __future__ import annotations

import math

import torch

from gradlab.core.validation import check_tensor


def check_boxes(name: str, boxes: torch.Tensor) -> torch.Tensor:
    """Check ``boxes`` is a finite floating ``(..., 4)`` tensor with ``x2 >= x1`` and ``y2 >= y1``; return it.

    Raises ``TypeError``/``ValueError`` naming ``name``.
    """
    check_tensor(name, boxes, floating=True, finite=True)
    if boxes.ndim < 1 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must have a last dimension of size 4 (x1, y1, x2, y2); got shape {tuple(boxes.shape)}")
    if boxes.numel() and bool(((boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])).any()):
        raise ValueError(f"{name} must satisfy x2 >= x1 and y2 >= y1 (xyxy boxes); got a box with x2 < x1 or y2 < y1")
    return boxes


def _pairwise_iou(a: torch.Tensor, b: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Elementwise (broadcast) IoU and union of two xyxy box tensors."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter + eps
    return inter / union, union


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU ``|A ∩ B| / |A ∪ B|`` of ``(N, 4)`` and ``(M, 4)`` xyxy boxes, shape ``(N, M)``.

    Degenerate pairs (zero union) give 0.
    """
    check_boxes("boxes1", boxes1)
    check_boxes("boxes2", boxes2)
    if boxes1.ndim != 2 or boxes2.ndim != 2:
        raise ValueError(f"boxes1 and boxes2 must be (N, 4) and (M, 4); got {tuple(boxes1.shape)}, {tuple(boxes2.shape)}")
    iou, _ = _pairwise_iou(boxes1[:, None, :], boxes2[None, :, :], eps=0.0)
    return torch.nan_to_num(iou, nan=0.0)


def complete_box_iou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Elementwise (broadcasting) CIoU of xyxy boxes ``a`` and ``b`` (see the module docstring); no validation.

    The hot path of the loss and the assigner; ``alpha`` is detached.
    """
    iou, _ = _pairwise_iou(a, b, eps)
    w1, h1 = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1] + eps
    w2, h2 = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1] + eps
    cw = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    ch = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    c2 = cw ** 2 + ch ** 2 + eps
    rho2 = ((a[..., 0] + a[..., 2] - b[..., 0] - b[..., 2]) ** 2 + (a[..., 1] + a[..., 3] - b[..., 1] - b[..., 3]) ** 2) / 4
    v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def complete_box_iou_loss(boxes1: torch.Tensor, boxes2: torch.Tensor, reduction: str = "none",
                          eps: float = 1e-7) -> torch.Tensor:
    """CIoU loss ``1 - CIoU(boxes1, boxes2)`` of matched ``(..., 4)`` xyxy boxes (torchvision.ops convention).

    Args:
        boxes1, boxes2: boxes of equal shape, ``x2 >= x1`` and ``y2 >= y1`` (else ``ValueError``).
        reduction: ``"none"`` | ``"mean"`` | ``"sum"``.
        eps: numerical guard.
    """
    check_boxes("boxes1", boxes1)
    check_boxes("boxes2", boxes2)
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"boxes1 and boxes2 must have the same shape; got {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be one of ['none', 'mean', 'sum']; got {reduction!r}")
    loss = 1 - complete_box_iou(boxes1, boxes2, eps)
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum() * 0.0
    if reduction == "sum":
        return loss.sum()
    return loss
