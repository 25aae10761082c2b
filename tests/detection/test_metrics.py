"""detection_ap against pycocotools' COCOeval and a hand-computed case."""

import contextlib
import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from gradlab.detection import detection_ap


def _cocoeval(preds, targets, nc):
    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        images.append({"id": i, "width": 100, "height": 100})
        for b, lab in zip(t["boxes"].tolist(), t["labels"].tolist()):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": lab, "bbox": [b[0], b[1], w, h],
                         "area": w * h, "iscrowd": 0})
        for b, s, lab in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i, "category_id": lab, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(nc)]}
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0], ev.stats[1]


def _scene(g, n_img, nc, n_gt, n_det):
    preds, targets = [], []
    for _ in range(n_img):
        k = int(torch.randint(0, n_gt + 1, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 60
        gb = torch.cat((xy, xy + torch.rand(k, 2, generator=g) * 30 + 2), 1)
        gl = torch.randint(0, nc, (k,), generator=g)
        d = int(torch.randint(0, n_det + 1, (1,), generator=g))
        src = torch.randint(0, max(k, 1), (d,), generator=g)
        base = gb[src] if k else torch.tensor([[10.0, 10.0, 30.0, 30.0]]).expand(d, 4)
        jit = (torch.rand(d, 4, generator=g) - 0.5) * 12
        db = base + jit
        db = torch.cat((torch.minimum(db[:, :2], db[:, 2:]), torch.maximum(db[:, :2], db[:, 2:]) + 0.5), 1)
        dl = torch.where(torch.rand(d, generator=g) < 0.8, gl[src] if k else torch.zeros(d, dtype=torch.long),
                         torch.randint(0, nc, (d,), generator=g))
        ds = torch.rand(d, generator=g)
        preds.append({"boxes": db, "scores": ds, "labels": dl})
        targets.append({"boxes": gb, "labels": gl})
    return preds, targets


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 6), st.integers(1, 3))
def test_ap_matches_pycocotools(seed, n_img, nc):
    g = torch.Generator().manual_seed(seed)
    preds, targets = _scene(g, n_img, nc, n_gt=4, n_det=8)
    if not any(len(t["labels"]) for t in targets):
        targets[0] = {"boxes": torch.tensor([[1.0, 1.0, 20.0, 20.0]]), "labels": torch.tensor([0])}
    ours = detection_ap(preds, targets, num_classes=nc)
    ref_all, ref50 = _cocoeval(preds, targets, nc)
    assert ours["map50_95"] == pytest.approx(ref_all, abs=1e-9)
    assert ours["map50"] == pytest.approx(ref50, abs=1e-9)


def test_ap_matches_pycocotools_on_a_larger_set():
    g = torch.Generator().manual_seed(7)
    preds, targets = _scene(g, 40, 3, n_gt=5, n_det=30)
    ours = detection_ap(preds, targets, num_classes=3)
    ref_all, ref50 = _cocoeval(preds, targets, 3)
    assert ours["map50_95"] == pytest.approx(ref_all, abs=1e-9) and ours["map50"] == pytest.approx(ref50, abs=1e-9)


def test_ap_hand_computed():
    # one class, 2 gt boxes in one image; detections: TP (0.9), FP (0.8), TP (0.7)
    gt = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]]), "labels": torch.tensor([0, 0])}]
    pr = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [20.0, 20.0, 30.0, 30.0]]),
           "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 0, 0])}]
    # recall/precision: (0.5, 1), (0.5, 0.5), (1, 2/3); monotone precision: 1 for r <= 0.5, 2/3 for r in (0.5, 1]
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    r = detection_ap(pr, gt, iou_thresholds=[0.5])
    assert r["map50"] == pytest.approx(expected, abs=1e-12)
    # a perfect detector: AP 1 at every threshold; no detections: 0
    r = detection_ap([{"boxes": gt[0]["boxes"], "scores": torch.tensor([0.5, 0.4]), "labels": gt[0]["labels"]}], gt)
    assert r["map50"] == pytest.approx(1.0) and r["map50_95"] == pytest.approx(1.0)
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}
    assert detection_ap([empty], gt)["map50"] == 0.0


def test_class_without_ground_truth_is_excluded():
    gt = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])}]
    pr = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 5.0, 5.0]]), "scores": torch.tensor([0.9, 0.8]),
           "labels": torch.tensor([0, 1])}]
    r = detection_ap(pr, gt, num_classes=2)
    assert r["map50"] == pytest.approx(1.0) and r["classes_with_gt"] == 1 and np.isnan(r["ap"][1][0])


def test_ap_validates():
    gt = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([0])}]
    bad = [{"boxes": torch.tensor([[5.0, 0.0, 1.0, 10.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([0])}]
    with pytest.raises(ValueError, match="x2 >= x1"):
        detection_ap(bad, gt)
    with pytest.raises(ValueError, match="one entry per image"):
        detection_ap([], gt)
    with pytest.raises(ValueError, match="keys"):
        detection_ap([{"boxes": torch.zeros(0, 4)}], gt)
    with pytest.raises(ValueError, match="iou_thresholds"):
        detection_ap(gt and [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}], gt,
                     iou_thresholds=[1.5])
