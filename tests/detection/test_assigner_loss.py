"""Task-aligned assigner and the detection losses."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from gradlab.detection import DetectionLoss, DualDetectionLoss, TaskAlignedAssigner, gelan_t, make_rectangle_scenes
from gradlab.detection.boxes import complete_box_iou
from gradlab.detection.heads import DDetect
from gradlab.detection.loss import distribution_focal_loss, pad_targets


def test_assigner_hand_computed():
    anchors = torch.tensor([[4.0, 4.0], [12.0, 4.0], [4.0, 12.0], [20.0, 20.0]])
    gt = torch.tensor([[[0.0, 0.0, 16.0, 16.0]]])
    pd = torch.tensor([[[0.0, 0.0, 16.0, 16.0], [2.0, 0.0, 18.0, 16.0], [0.0, 6.0, 16.0, 22.0], [0.0, 0.0, 16.0, 16.0]]])
    scores = torch.full((1, 4, 2), 0.5)
    labels, boxes, tscores, fg, idx = TaskAlignedAssigner(topk=2, num_classes=2)(
        scores, pd, anchors, torch.tensor([[1]]), gt, torch.tensor([[True]]))
    # anchor 3 lies outside the gt (never positive) although its box is perfect; top-2 by IoU^6: anchors 0, 1
    assert fg.tolist() == [[True, True, False, False]]
    iou = complete_box_iou(gt[0, 0], pd[0]).clamp(min=0)
    metric = 0.5 ** 0.5 * iou ** 6
    expected = metric[:2] * iou[:2].max() / metric[:2].max()
    torch.testing.assert_close(tscores[0, :2, 1], expected)
    assert float(tscores[0, :, 0].abs().sum()) == 0.0 and labels[0, :2].tolist() == [1, 1]
    torch.testing.assert_close(boxes[0, 0], gt[0, 0])


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.integers(0, 4), st.integers(1, 10), st.integers(0, 2**31 - 1))
def test_assigner_properties(b, m, topk, seed):
    g = torch.Generator().manual_seed(seed)
    anchors = torch.stack(torch.meshgrid(torch.arange(8.0) * 8 + 4, torch.arange(8.0) * 8 + 4, indexing="xy"), -1).reshape(-1, 2)
    xy = torch.rand(b, m, 2, generator=g) * 40
    gtb = torch.cat((xy, xy + torch.rand(b, m, 2, generator=g) * 24 + 4), -1)
    gtl = torch.randint(0, 3, (b, m), generator=g)
    mask = torch.rand(b, m, generator=g) < 0.7
    pxy = torch.rand(b, 64, 2, generator=g) * 50
    pd = torch.cat((pxy, pxy + torch.rand(b, 64, 2, generator=g) * 20 + 1), -1)
    sc = torch.rand(b, 64, 3, generator=g)
    labels, boxes, tscores, fg, idx = TaskAlignedAssigner(topk=topk, num_classes=3)(sc, pd, anchors, gtl, gtb, mask)
    assert bool((tscores >= 0).all()) and bool((tscores <= 1 + 1e-6).all())
    assert bool((tscores[~fg] == 0).all())
    for bi in range(b):
        for a in fg[bi].nonzero().flatten().tolist():
            j = int(idx[bi, a])
            assert bool(mask[bi, j]) and labels[bi, a] == gtl[bi, j]
            x, y = anchors[a]
            box = gtb[bi, j]
            assert box[0] < x < box[2] and box[1] < y < box[3]
        if m:
            counts = torch.bincount(idx[bi][fg[bi]], minlength=m)
            assert bool((counts <= topk).all()) and bool((counts[~mask[bi]] == 0).all())


def test_distribution_focal_loss_hand_computed():
    logits = torch.randn(1, 4, 16)
    target = torch.tensor([[3.3, 0.0, 14.98, 7.5]])
    lp = logits.log_softmax(-1)[0]
    ref = -(0.7 * lp[0, 3] + 0.3 * lp[0, 4] + lp[1, 0] + 0.02 * lp[2, 14] + 0.98 * lp[2, 15] + 0.5 * lp[3, 7]
            + 0.5 * lp[3, 8]) / 4
    torch.testing.assert_close(distribution_focal_loss(logits, target), ref.reshape(1), rtol=1e-5, atol=1e-6)


def test_loss_without_objects_is_background_bce():
    torch.manual_seed(0)
    head = DDetect(2, [8, 8], [8.0, 16.0])
    maps = [torch.randn(2, 66, 4, 4), torch.randn(2, 66, 2, 2)]
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    total, parts = DetectionLoss(head)(maps, [empty, empty])
    cls_logits = torch.cat([m.flatten(2) for m in maps], 2)[:, 64:]
    ref = F.binary_cross_entropy_with_logits(cls_logits, torch.zeros_like(cls_logits), reduction="sum")
    torch.testing.assert_close(parts["cls"], ref)
    assert float(parts["box"]) == 0.0 and float(parts["dfl"]) == 0.0
    torch.testing.assert_close(total, 0.5 * ref)


def test_perfect_box_predictions_have_zero_box_and_dfl_loss():
    # one level, stride 8, 4x4 grid; gt [4, 4, 28, 28] has integer distances (in strides) from every anchor inside
    head = DDetect(2, [8], [8.0])
    gt = torch.tensor([4.0, 4.0, 28.0, 28.0])
    c = torch.arange(4.0) * 8 + 4
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    d = torch.stack((xx - gt[0], yy - gt[1], gt[2] - xx, gt[3] - yy), 0) / 8  # (4, 4, 4)
    d = d.clamp(0, 15).round().long()
    box_logits = F.one_hot(d, 16).permute(0, 3, 1, 2).float() * 60.0  # (4 sides, 16 bins, H, W)
    cls_logits = torch.full((2, 4, 4), -8.0)
    cls_logits[1] = 8.0
    maps = [torch.cat((box_logits.reshape(64, 4, 4), cls_logits), 0)[None]]
    _, parts = DetectionLoss(head)(maps, [{"boxes": gt[None], "labels": torch.tensor([1])}])
    assert float(parts["box"]) < 1e-6 and float(parts["dfl"]) < 1e-6
    # and a shifted prediction is penalised
    maps2 = [torch.roll(maps[0], 1, dims=-1)]
    _, parts2 = DetectionLoss(head)(maps2, [{"boxes": gt[None], "labels": torch.tensor([1])}])
    assert float(parts2["box"]) > 0.01 and float(parts2["dfl"]) > 0.1


def test_loss_gradients_are_finite_on_a_model():
    torch.manual_seed(0)
    model = gelan_t(nc=2, width=0.25, depth=1 / 3)
    x, t = make_rectangle_scenes(3, seed=0)
    loss, parts = DetectionLoss(model.head)(model(x), t)
    loss.backward()
    assert all(math.isfinite(float(v)) for v in parts.values()) and float(parts["box"]) > 0
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def test_dual_loss_is_main_plus_quarter_aux():
    torch.manual_seed(0)
    h1, h2 = DDetect(2, [8], [8.0]), DDetect(2, [8], [8.0])
    a, m = [torch.randn(1, 66, 4, 4)], [torch.randn(1, 66, 4, 4)]
    t = [{"boxes": torch.tensor([[2.0, 3.0, 20.0, 25.0]]), "labels": torch.tensor([1])}]
    total, parts = DualDetectionLoss(h1, h2)((a, m), t)
    lm, _ = DetectionLoss(h1)(m, t)
    la, _ = DetectionLoss(h2)(a, t)
    torch.testing.assert_close(total, lm + 0.25 * la)
    total0, _ = DualDetectionLoss(h1, h2, aux_weight=0.0)((a, m), t)
    torch.testing.assert_close(total0, lm)


def test_loss_input_validation():
    head = DDetect(2, [8], [8.0])
    maps = [torch.randn(1, 66, 4, 4)]
    with pytest.raises(ValueError, match="x2 >= x1"):
        DetectionLoss(head)(maps, [{"boxes": torch.tensor([[5.0, 0.0, 1.0, 3.0]]), "labels": torch.tensor([0])}])
    with pytest.raises(ValueError, match="one entry per image"):
        DetectionLoss(head)(maps, [])
    with pytest.raises(ValueError, match="keys"):
        pad_targets([{"boxes": torch.zeros(0, 4)}])
    with pytest.raises(TypeError, match="DDetect"):
        DetectionLoss(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="aux_weight"):
        DualDetectionLoss(head, head, aux_weight=-1.0)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 3), st.integers(0, 4), st.integers(0, 2**31 - 1))
def test_loss_properties(b, m, seed):
    g = torch.Generator().manual_seed(seed)
    head = DDetect(2, [8, 8], [8.0, 16.0])
    maps = [torch.randn(b, 66, 4, 4, generator=g) * 3, torch.randn(b, 66, 2, 2, generator=g) * 3]
    targets = []
    for _ in range(b):
        xy = torch.rand(m, 2, generator=g) * 24
        targets.append({"boxes": torch.cat((xy, xy + torch.rand(m, 2, generator=g) * 8 + 2), 1),
                        "labels": torch.randint(0, 2, (m,), generator=g)})
    total, parts = DetectionLoss(head)(maps, targets)
    assert math.isfinite(float(total)) and all(float(v) >= 0 for v in parts.values())
    torch.testing.assert_close(total, 7.5 * parts["box"] + 0.5 * parts["cls"] + 1.5 * parts["dfl"])
    if m == 0:
        assert float(parts["box"]) == 0.0 and float(parts["dfl"]) == 0.0
    else:
        assert float(parts["box"]) <= 2.0 + 1e-5  # 1 - CIoU <= 2, soft weights sum to S at most
