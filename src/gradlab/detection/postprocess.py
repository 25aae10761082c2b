"""Detection post-processing: confidence filtering and class-wise non-maximum suppression over a whole batch.

One ``torchvision.ops.batched_nms`` call covers all images: boxes are grouped by ``image · nc + class`` so NMS
never suppresses across images or classes.
"""

from __future__ import annotations

import torch
from torchvision.ops import batched_nms

from gradlab.core.validation import check_int, check_range, check_tensor
from gradlab.detection.boxes import check_boxes


def postprocess(boxes: torch.Tensor, scores: torch.Tensor, conf_thres: float = 0.25, iou_thres: float = 0.7,
                max_det: int = 300, multi_label: bool = False) -> list[dict[str, torch.Tensor]]:
    """Per-image detections from decoded predictions.

    Args:
        boxes: ``(B, A, 4)`` xyxy pixel boxes (``x2 >= x1``, else ``ValueError``).
        scores: ``(B, A, nc)`` class probabilities in [0, 1].
        conf_thres: keep candidates with probability > ``conf_thres``.
        iou_thres: NMS IoU threshold (per image and class).
        max_det: most detections kept per image (highest scores).
        multi_label: one candidate per (anchor, class) above the threshold instead of the best class only.

    Returns:
        ``B`` dicts ``{"boxes": (K, 4), "scores": (K,), "labels": (K,) int64}`` sorted by descending score.
    """
    check_boxes("boxes", boxes)
    check_tensor("scores", scores, ndim=3, floating=True, finite=True)
    if boxes.ndim != 3 or scores.shape[:2] != boxes.shape[:2]:
        raise ValueError(f"boxes (B, A, 4) and scores (B, A, nc) must agree; got {tuple(boxes.shape)}, {tuple(scores.shape)}")
    check_range("conf_thres", conf_thres, 0.0, 1.0, high_inclusive=True)
    check_range("iou_thres", iou_thres, 0.0, 1.0, high_inclusive=True)
    check_int("max_det", max_det, minimum=1)
    b, _, nc = scores.shape
    if multi_label:
        bi, ai, ci = (scores > conf_thres).nonzero(as_tuple=True)
        conf = scores[bi, ai, ci]
    else:
        conf_all, cls_all = scores.max(-1)
        bi, ai = (conf_all > conf_thres).nonzero(as_tuple=True)
        conf, ci = conf_all[bi, ai], cls_all[bi, ai]
    cand = boxes[bi, ai]
    keep = batched_nms(cand.float(), conf.float(), bi * nc + ci, float(iou_thres))  # sorted by descending score
    bk = bi[keep]
    order = torch.sort(bk, stable=True).indices  # group by image, keep score order inside each image
    keep, bk = keep[order], bk[order]
    counts = torch.bincount(bk, minlength=b)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(keep), device=keep.device) - starts[bk]
    sel = rank < max_det
    keep, bk = keep[sel], bk[sel]
    counts = torch.bincount(bk, minlength=b).tolist()
    out = []
    for kb, cb, sb, lb in zip(keep.split(counts), cand[keep].split(counts), conf[keep].split(counts), ci[keep].split(counts)):
        out.append({"boxes": cb, "scores": sb, "labels": lb.long()})
    return out
