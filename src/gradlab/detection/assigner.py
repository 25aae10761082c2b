"""Task-aligned label assignment (TAL; Feng et al., "TOOD", ICCV 2021), as used by YOLOv9's loss.

For every ground-truth box ``g`` and anchor ``a`` whose centre lies inside ``g``, the alignment metric is

    t(a, g) = s(a, c_g)^alpha · CIoU(b_a, g)^beta        (alpha = 0.5, beta = 6.0 in YOLOv9),

with ``s(a, c_g)`` the predicted probability of ``g``'s class. Each ``g`` takes its ``topk`` (10) anchors by
``t``; an anchor claimed by several boxes keeps the one of highest IoU. The soft target of a positive anchor is
``t(a, g) · max_a' IoU(a', g) / max_a' t(a', g)`` on ``g``'s class, zero elsewhere. Batched over images with
padded ground truth (``mask_gt``); no loop over images or boxes.
"""

from __future__ import annotations

import torch
from torch import nn

from gradlab.core.validation import check_int, check_positive
from gradlab.detection.boxes import complete_box_iou


class TaskAlignedAssigner(nn.Module):
    """TAL assigner (see the module docstring).

    Args:
        topk: candidate anchors per ground-truth box.
        num_classes: number of classes.
        alpha, beta: exponents of the classification and IoU terms.
        eps: numerical guard.
    """

    def __init__(self, topk: int = 10, num_classes: int = 80, alpha: float = 0.5, beta: float = 6.0,
                 eps: float = 1e-9) -> None:
        super().__init__()
        self.topk = check_int("topk", topk, minimum=1)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        self.beta = check_positive("beta", beta, allow_zero=True)
        self.eps = eps

    @torch.no_grad()
    def forward(self, pd_scores: torch.Tensor, pd_bboxes: torch.Tensor, anc_points: torch.Tensor,
                gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Assign targets.

        Args:
            pd_scores: ``(B, A, C)`` predicted probabilities. pd_bboxes: ``(B, A, 4)`` predicted xyxy boxes.
            anc_points: ``(A, 2)`` anchor centres (same units as the boxes).
            gt_labels: ``(B, M)`` int classes. gt_bboxes: ``(B, M, 4)`` xyxy. mask_gt: ``(B, M)`` bool, valid rows.

        Returns:
            ``target_labels (B, A)``, ``target_bboxes (B, A, 4)``, ``target_scores (B, A, C)``, ``fg_mask (B, A)``
            bool and ``target_gt_idx (B, A)``.
        """
        b, a, c = pd_scores.shape
        m = gt_bboxes.shape[1]
        dev = pd_scores.device
        if m == 0:
            return (torch.zeros(b, a, dtype=torch.long, device=dev), torch.zeros(b, a, 4, device=dev, dtype=pd_bboxes.dtype),
                    torch.zeros_like(pd_scores), torch.zeros(b, a, dtype=torch.bool, device=dev),
                    torch.zeros(b, a, dtype=torch.long, device=dev))
        mask_gt = mask_gt.bool()
        gt_labels = gt_labels.long().clamp(0, c - 1)
        # anchors whose centres lie strictly inside each gt box: (B, M, A)
        lt = anc_points[None, None] - gt_bboxes[:, :, None, :2]
        rb = gt_bboxes[:, :, None, 2:] - anc_points[None, None]
        in_gts = torch.cat((lt, rb), -1).amin(-1) > self.eps
        valid = in_gts & mask_gt[:, :, None]
        overlaps = complete_box_iou(gt_bboxes[:, :, None, :], pd_bboxes[:, None, :, :]).clamp(min=0)
        overlaps = torch.where(valid, overlaps, torch.zeros((), device=dev, dtype=overlaps.dtype))
        cls_score = torch.gather(pd_scores.transpose(1, 2), 1, gt_labels[:, :, None].expand(b, m, a))  # (B, M, A)
        cls_score = torch.where(valid, cls_score, torch.zeros((), device=dev, dtype=cls_score.dtype))
        metric = cls_score.pow(self.alpha) * overlaps.pow(self.beta)
        k = min(self.topk, a)
        top_idx = metric.topk(k, dim=-1).indices  # (B, M, k)
        mask_topk = torch.zeros_like(metric, dtype=torch.bool).scatter_(-1, top_idx, True)
        mask_pos = mask_topk & valid
        # anchors claimed by several gts keep the gt of highest IoU
        multi = mask_pos.sum(1) > 1  # (B, A)
        # (among the gts that claim the anchor: with all IoUs clamped to 0 a plain argmax could pick a gt that
        # does not contain the anchor)
        best_gt = torch.where(mask_pos, overlaps, torch.full((), -1.0, device=dev, dtype=overlaps.dtype)).argmax(1)
        best_onehot = torch.zeros_like(mask_pos).scatter_(1, best_gt[:, None, :], True)
        mask_pos = torch.where(multi[:, None, :], best_onehot, mask_pos)
        fg_mask = mask_pos.any(1)
        target_gt_idx = mask_pos.float().argmax(1)  # (B, A)
        batch = torch.arange(b, device=dev)[:, None]
        target_labels = gt_labels[batch, target_gt_idx]
        target_bboxes = gt_bboxes[batch, target_gt_idx]
        target_scores = torch.zeros(b, a, c, device=dev, dtype=pd_scores.dtype)
        target_scores.scatter_(2, target_labels[..., None], 1.0)
        target_scores = target_scores * fg_mask[..., None]
        metric = metric * mask_pos
        pos_metric = metric.amax(-1, keepdim=True)
        pos_overlap = (overlaps * mask_pos).amax(-1, keepdim=True)
        norm = (metric * pos_overlap / (pos_metric + self.eps)).amax(1)  # (B, A)
        target_scores = target_scores * norm[..., None]
        return target_labels, target_bboxes, target_scores, fg_mask, target_gt_idx
