"""YOLOv9 detection loss (paper §5; official ``loss_tal.py`` / ``loss_tal_dual.py`` recipe).

With TAL targets (:class:`TaskAlignedAssigner`), soft scores ``ŝ`` and ``S = max(sum ŝ, 1)``:

    L_cls = sum BCE(logits, ŝ) / S
    L_box = sum_{fg} w_a (1 - CIoU(b_a, g_a)) / S,         w_a = sum_c ŝ_{a,c}
    L_dfl = sum_{fg} w_a · mean_sides DFL(p_a, d_a) / S,     DFL = -(r - d) log p_l - (d - l) log p_r

(``d`` the target side distance in stride units clamped to ``reg_max - 1.01``, ``l = floor(d)``, ``r = l + 1``),
and ``L = 7.5 L_box + 0.5 L_cls + 1.5 L_dfl``. The official code also multiplies by the batch size; here the loss
is per image-batch as written (an lr scaling). :class:`DualDetectionLoss` is PGI's
``L = L_main + 0.25 · L_aux`` with an independent assignment per head.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_positive
from gradlab.detection.assigner import TaskAlignedAssigner
from gradlab.detection.boxes import check_boxes, complete_box_iou
from gradlab.detection.heads import DDetect, bbox2dist, dist2bbox, make_anchors


def pad_targets(targets: Sequence[dict], device: torch.device | None = None, dtype: torch.dtype = torch.float32
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image ``{"boxes", "labels"}`` -> padded ``labels (B, M)``, ``boxes (B, M, 4)``, ``mask (B, M)``."""
    if not isinstance(targets, (list, tuple)):
        raise TypeError(f"targets must be a list of dicts with 'boxes' and 'labels'; got {type(targets).__name__}")
    boxes, labels = [], []
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"targets[{i}] must be a dict with keys 'boxes' and 'labels'")
        bx = torch.as_tensor(t["boxes"], dtype=dtype, device=device).reshape(-1, 4)
        check_boxes(f"targets[{i}]['boxes']", bx)
        lb = torch.as_tensor(t["labels"], device=device).reshape(-1).long()
        if lb.shape[0] != bx.shape[0]:
            raise ValueError(f"targets[{i}]['labels'] must have one entry per box ({bx.shape[0]}); got {lb.shape[0]}")
        boxes.append(bx)
        labels.append(lb)
    m = max([len(x) for x in boxes], default=0)
    b = len(targets)
    gb = torch.zeros(b, m, 4, dtype=dtype, device=device)
    gl = torch.zeros(b, m, dtype=torch.long, device=device)
    mk = torch.zeros(b, m, dtype=torch.bool, device=device)
    for i, (bx, lb) in enumerate(zip(boxes, labels)):
        gb[i, : len(bx)], gl[i, : len(lb)], mk[i, : len(bx)] = bx, lb, True
    return gl, gb, mk


def distribution_focal_loss(pred_dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DFL of ``(N, 4, reg_max)`` logits against ``(N, 4)`` continuous distances; mean over sides, ``(N,)``."""
    tl = target.long()
    tr = tl + 1
    wl = tr.float() - target
    wr = 1 - wl
    logits = pred_dist.reshape(-1, pred_dist.shape[-1])
    ce_l = F.cross_entropy(logits, tl.reshape(-1), reduction="none").view(tl.shape)
    ce_r = F.cross_entropy(logits, tr.reshape(-1), reduction="none").view(tl.shape)
    return (ce_l * wl + ce_r * wr).mean(-1)


class DetectionLoss(nn.Module):
    """BCE + CIoU + DFL detection loss for a :class:`DDetect` head (see the module docstring).

    ``loss(head_maps, targets) -> (total, {"box", "cls", "dfl"})`` with ``targets`` a list of per-image dicts
    ``{"boxes": (M, 4) xyxy pixels, "labels": (M,)}``.
    """

    def __init__(self, head: DDetect, box_gain: float = 7.5, cls_gain: float = 0.5, dfl_gain: float = 1.5,
                 assigner: TaskAlignedAssigner | None = None) -> None:
        super().__init__()
        if not isinstance(head, DDetect):
            raise TypeError(f"head must be a DDetect; got {type(head).__name__}")
        self.nc, self.reg_max = head.nc, head.reg_max
        self.strides = head.stride.tolist()
        self.box_gain = check_positive("box_gain", box_gain, allow_zero=True)
        self.cls_gain = check_positive("cls_gain", cls_gain, allow_zero=True)
        self.dfl_gain = check_positive("dfl_gain", dfl_gain, allow_zero=True)
        self.assigner = assigner or TaskAlignedAssigner(topk=10, num_classes=head.nc, alpha=0.5, beta=6.0)
        self.register_buffer("proj", torch.arange(head.reg_max, dtype=torch.float), persistent=False)

    def components(self, maps: Sequence[torch.Tensor], targets: Sequence[dict]) -> dict[str, torch.Tensor]:
        """The three un-weighted terms ``{"box", "cls", "dfl"}``."""
        if len(maps) != len(self.strides):
            raise ValueError(f"expected {len(self.strides)} head maps; got {len(maps)}")
        b = maps[0].shape[0]
        if len(targets) != b:
            raise ValueError(f"targets must have one entry per image ({b}); got {len(targets)}")
        flat = torch.cat([o.flatten(2) for o in maps], 2)
        pred_distri, pred_scores = flat.split((4 * self.reg_max, self.nc), 1)
        pred_distri, pred_scores = pred_distri.transpose(1, 2), pred_scores.transpose(1, 2)  # (B, A, 4R), (B, A, C)
        points, stride_t = make_anchors(maps, self.strides)
        gl, gb, mk = pad_targets(targets, device=flat.device, dtype=flat.dtype)
        dist = pred_distri.view(b, -1, 4, self.reg_max).softmax(-1) @ self.proj.to(flat.dtype)
        pred_bboxes = dist2bbox(dist, points)  # grid units
        _, t_boxes, t_scores, fg, _ = self.assigner(pred_scores.detach().sigmoid(), (pred_bboxes.detach() * stride_t),
                                                     points * stride_t, gl, gb, mk)
        s = t_scores.sum().clamp(min=1)
        l_cls = F.binary_cross_entropy_with_logits(pred_scores, t_scores, reduction="sum") / s
        if fg.any():
            t_boxes = t_boxes / stride_t
            w = t_scores.sum(-1)[fg]
            ciou = complete_box_iou(pred_bboxes[fg], t_boxes[fg])
            l_box = ((1 - ciou) * w).sum() / s
            t_ltrb = bbox2dist(points, t_boxes, self.reg_max - 1)
            l_dfl = (distribution_focal_loss(pred_distri.view(b, -1, 4, self.reg_max)[fg], t_ltrb[fg]) * w).sum() / s
        else:
            l_box = l_dfl = pred_distri.sum() * 0.0
        return {"box": l_box, "cls": l_cls, "dfl": l_dfl}

    def forward(self, maps: Sequence[torch.Tensor], targets: Sequence[dict]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        c = self.components(maps, targets)
        total = self.box_gain * c["box"] + self.cls_gain * c["cls"] + self.dfl_gain * c["dfl"]
        return total, {k: v.detach() for k, v in c.items()}


class DualDetectionLoss(nn.Module):
    """PGI's dual loss: ``L = L_main + aux_weight · L_aux`` (``aux_weight`` 0.25 applied to every term before the
    gains), each head assigned independently. ``forward((aux_maps, main_maps), targets)``."""

    def __init__(self, main_head: DDetect, aux_head: DDetect, aux_weight: float = 0.25, **gains: float) -> None:
        super().__init__()
        self.main = DetectionLoss(main_head, **gains)
        self.aux = DetectionLoss(aux_head, **gains)
        self.aux_weight = check_positive("aux_weight", aux_weight, allow_zero=True)

    def forward(self, maps: tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]], targets: Sequence[dict]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not isinstance(maps, (tuple, list)) or len(maps) != 2:
            raise ValueError("maps must be (aux_maps, main_maps) as returned by YOLOv9PGI in training mode")
        aux_maps, main_maps = maps
        lm, parts = self.main(main_maps, targets)
        if self.aux_weight == 0.0:
            return lm, {**parts, "aux": torch.zeros(())}
        la, aparts = self.aux(aux_maps, targets)
        return lm + self.aux_weight * la, {**parts, "aux": la.detach(), **{f"aux_{k}": v for k, v in aparts.items()}}
