"""COCO-style average precision for box detection (the MS-COCO ``bbox`` protocol of pycocotools' COCOeval).

Per class and IoU threshold ``t``: detections of each image (at most ``max_det`` per image and class, by score)
are matched greedily in score order to the unmatched ground truth box of highest IoU >= ``t``; all detections are
then ranked by score, precision is made monotone (``p(r) = max_{r' >= r} p(r')``) and sampled at the 101 recall
points ``0, 0.01, ..., 1`` (first point with recall >= r; 0 past the last recall), and AP is their mean.
mAP averages over classes that have ground truth; mAP50-95 also over ``t = 0.50, 0.55, ..., 0.95``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from gradlab.core.validation import check_int
from gradlab.detection.boxes import check_boxes

COCO_IOU_THRESHOLDS: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _check_list(name: str, items: Sequence[dict], keys: tuple[str, ...]) -> None:
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"{name} must be a list of dicts with keys {keys}; got {type(items).__name__}")
    for i, d in enumerate(items):
        if not isinstance(d, dict) or any(k not in d for k in keys):
            raise ValueError(f"{name}[{i}] must be a dict with keys {keys}")
        check_boxes(f"{name}[{i}]['boxes']", torch.as_tensor(d["boxes"], dtype=torch.float64).reshape(-1, 4))
        n = torch.as_tensor(d["boxes"]).reshape(-1, 4).shape[0]
        for k in keys[1:]:
            if torch.as_tensor(d[k]).reshape(-1).shape[0] != n:
                raise ValueError(f"{name}[{i}]['{k}'] must have one entry per box ({n})")


def _np(x: object, dtype: type) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def _match(iou: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Greedy COCO matching of score-sorted detections (rows of ``iou``); returns ``(T, D)`` true-positive flags."""
    t_n, (d_n, g_n) = len(thresholds), iou.shape
    tp = np.zeros((t_n, d_n), dtype=bool)
    if g_n == 0 or d_n == 0:
        return tp
    taken = np.zeros((t_n, g_n), dtype=bool)
    thr = np.minimum(thresholds, 1 - 1e-10)[:, None]
    for d in np.nonzero(iou.max(1) >= thr.min())[0]:
        ok = (~taken) & (iou[d][None, :] >= thr)  # (T, G)
        cand = np.where(ok, iou[d][None, :], -1.0)
        # COCOeval keeps the last gt among equal best IoUs: argmax over the reversed gt order
        best = g_n - 1 - np.argmax(cand[:, ::-1], axis=1)
        hit = cand[np.arange(t_n), best] >= 0
        taken[np.nonzero(hit)[0], best[hit]] = True
        tp[hit, d] = True
    return tp


def detection_ap(predictions: Sequence[dict], targets: Sequence[dict], num_classes: int | None = None,
                 iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS, max_det: int = 100) -> dict[str, object]:
    """COCO box AP of per-image ``predictions`` against ``targets`` (see the module docstring).

    Args:
        predictions: per image ``{"boxes": (K, 4) xyxy, "scores": (K,), "labels": (K,)}``.
        targets: per image ``{"boxes": (M, 4) xyxy, "labels": (M,)}``, same length.
        num_classes: classes ``0..num_classes-1`` (default: 1 + the largest label seen).
        iou_thresholds: IoU thresholds (default COCO's ten).
        max_det: detections kept per image and class (COCO ``maxDets=100``).

    Returns:
        ``{"map50", "map50_95", "ap" ((C, T) list, NaN for a class without ground truth), "iou_thresholds",
        "classes_with_gt"}``; ``map50`` is NaN if 0.5 is not among the thresholds.
    """
    _check_list("predictions", predictions, ("boxes", "scores", "labels"))
    _check_list("targets", targets, ("boxes", "labels"))
    if len(predictions) != len(targets):
        raise ValueError(f"predictions and targets must have one entry per image; got {len(predictions)} and {len(targets)}")
    check_int("max_det", max_det, minimum=1)
    thr = np.asarray(list(iou_thresholds), dtype=np.float64)
    if thr.ndim != 1 or not len(thr) or ((thr <= 0) | (thr > 1)).any():
        raise ValueError(f"iou_thresholds must be a non-empty list in (0, 1]; got {list(iou_thresholds)}")
    preds = [(_np(p["boxes"], np.float64).reshape(-1, 4), _np(p["scores"], np.float64).reshape(-1),
              _np(p["labels"], np.int64).reshape(-1)) for p in predictions]
    gts = [(_np(t["boxes"], np.float64).reshape(-1, 4), _np(t["labels"], np.int64).reshape(-1)) for t in targets]
    if num_classes is None:
        seen = [lab.max() for _, lab in gts if lab.size] + [lab.max() for _, _, lab in preds if lab.size]
        num_classes = int(max(seen)) + 1 if seen else 1
    check_int("num_classes", num_classes, minimum=1)
    ap = np.full((num_classes, len(thr)), np.nan)
    for c in range(num_classes):
        scores_all, tp_all, n_gt = [], [], 0
        for (pb, ps, pl), (gb, gl) in zip(preds, gts):
            g = gb[gl == c]
            sel = np.nonzero(pl == c)[0]
            sel = sel[np.argsort(-ps[sel], kind="mergesort")][:max_det]
            n_gt += len(g)
            scores_all.append(ps[sel])
            tp_all.append(_match(_iou_np(pb[sel], g), thr))
        if n_gt == 0:
            continue
        scores = np.concatenate(scores_all)
        tp = np.concatenate(tp_all, axis=1)
        order = np.argsort(-scores, kind="mergesort")
        tp = tp[:, order]
        tps = np.cumsum(tp, axis=1, dtype=np.float64)
        fps = np.cumsum(~tp, axis=1, dtype=np.float64)
        for ti in range(len(thr)):
            if tp.shape[1] == 0:
                ap[c, ti] = 0.0
                continue
            rc = tps[ti] / n_gt
            pr = tps[ti] / (tps[ti] + fps[ti] + np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1]
            idx = np.searchsorted(rc, RECALL_POINTS, side="left")
            q = np.where(idx < len(pr), pr[np.minimum(idx, len(pr) - 1)], 0.0)
            ap[c, ti] = q.mean()
    valid = ~np.isnan(ap[:, 0])
    i50 = np.nonzero(np.isclose(thr, 0.5))[0]
    map50 = float(ap[valid, i50[0]].mean()) if valid.any() and len(i50) else float("nan")
    map_all = float(ap[valid].mean()) if valid.any() else float("nan")
    return {"map50": map50, "map50_95": map_all, "ap": ap.tolist(), "iou_thresholds": thr.tolist(),
            "classes_with_gt": int(valid.sum())}
