"""postprocess against a per-image, per-class torchvision.ops.nms reference."""

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given, settings, strategies as st

from gradlab.detection import postprocess


def _reference(boxes, scores, conf, iou, max_det):
    out = []
    for b in range(boxes.shape[0]):
        c, cls = scores[b].max(-1)
        keep_c = c > conf
        bx, sc, lb = boxes[b][keep_c], c[keep_c], cls[keep_c]
        kept = []
        for k in lb.unique().tolist():
            m = (lb == k).nonzero().flatten()
            kept.append(m[tvo.nms(bx[m], sc[m], iou)])
        idx = torch.cat(kept) if kept else torch.zeros(0, dtype=torch.long)
        idx = idx[torch.argsort(sc[idx], descending=True, stable=True)][:max_det]
        out.append((bx[idx], sc[idx], lb[idx]))
    return out


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 40), st.integers(1, 4), st.integers(0, 2**31 - 1),
       st.floats(0.0, 0.9), st.floats(0.1, 0.9), st.integers(1, 30))
def test_postprocess_matches_per_image_nms(b, a, nc, seed, conf, iou, max_det):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, a, 2, generator=g) * 40
    boxes = torch.cat((xy, xy + torch.rand(b, a, 2, generator=g) * 20 + 1), -1)
    scores = torch.rand(b, a, nc, generator=g)
    ours = postprocess(boxes, scores, conf_thres=conf, iou_thres=iou, max_det=max_det)
    ref = _reference(boxes, scores, conf, iou, max_det)
    assert len(ours) == b
    for o, (rb, rs, rl) in zip(ours, ref):
        torch.testing.assert_close(o["scores"], rs)
        torch.testing.assert_close(o["boxes"], rb)
        assert torch.equal(o["labels"], rl)


def test_postprocess_multi_label_keeps_every_class_above_threshold():
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])
    scores = torch.tensor([[[0.9, 0.6, 0.1]]])
    out = postprocess(boxes, scores, conf_thres=0.5, multi_label=True)[0]
    assert out["labels"].tolist() == [0, 1] and out["scores"].tolist() == pytest.approx([0.9, 0.6])
    assert postprocess(boxes, scores, conf_thres=0.5)[0]["labels"].tolist() == [0]


def test_postprocess_validates():
    boxes = torch.tensor([[[5.0, 0.0, 1.0, 10.0]]])
    with pytest.raises(ValueError, match="x2 >= x1"):
        postprocess(boxes, torch.rand(1, 1, 2))
    with pytest.raises(ValueError, match="must agree"):
        postprocess(torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), torch.rand(1, 2, 2))
    with pytest.raises(ValueError, match="iou_thres"):
        postprocess(torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), torch.rand(1, 1, 2), iou_thres=1.5)
