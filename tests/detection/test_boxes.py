"""Box IoU and CIoU loss against torchvision.ops."""

import pytest
import torch
import torchvision.ops as tvo
from hypothesis import given, settings, strategies as st

from gradlab.detection import box_iou, check_boxes, complete_box_iou_loss


def _boxes(g: torch.Generator, n: int, scale: float = 50.0) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * scale + 0.5
    return torch.cat((xy, xy + wh), 1)


def test_box_iou_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    a, b = _boxes(g, 17), _boxes(g, 9)
    torch.testing.assert_close(box_iou(a, b), tvo.box_iou(a, b), rtol=1e-12, atol=1e-12)


def test_box_iou_hand_computed():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [5.0, 5.0, 6.0, 6.0], [0.0, 0.0, 2.0, 2.0]])
    torch.testing.assert_close(box_iou(a, b), torch.tensor([[1 / 7, 0.0, 1.0]]))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 12), st.integers(0, 2**31 - 1), st.floats(1.0, 500.0))
def test_iou_and_ciou_loss_match_torchvision(n, seed, scale):
    g = torch.Generator().manual_seed(seed)
    a, b = _boxes(g, n, scale), _boxes(g, n, scale)
    torch.testing.assert_close(box_iou(a, b), tvo.box_iou(a, b), rtol=1e-10, atol=1e-12)
    ours = complete_box_iou_loss(a, b)
    ref = tvo.complete_box_iou_loss(a, b, reduction="none")
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert bool(((ours >= 0) & (ours <= 2.0 + 1e-6)).all())  # 1 - CIoU lies in [0, 2]


def test_ciou_loss_gradient_matches_torchvision():
    g = torch.Generator().manual_seed(3)
    a, b = _boxes(g, 8), _boxes(g, 8)
    a1, a2 = a.clone().requires_grad_(), a.clone().requires_grad_()
    complete_box_iou_loss(a1, b, reduction="sum").backward()
    tvo.complete_box_iou_loss(a2, b, reduction="sum").backward()
    torch.testing.assert_close(a1.grad, a2.grad, rtol=1e-4, atol=1e-6)


def test_identical_boxes_have_zero_loss_and_reductions():
    a = torch.tensor([[1.0, 2.0, 5.0, 9.0], [0.0, 0.0, 3.0, 3.0]])
    assert float(complete_box_iou_loss(a, a, reduction="sum")) == pytest.approx(0.0, abs=1e-6)
    b = a + torch.tensor([1.0, 0.0, 1.0, 0.0])
    full = complete_box_iou_loss(a, b)
    assert float(complete_box_iou_loss(a, b, reduction="mean")) == pytest.approx(float(full.mean()))


def test_invalid_boxes_raise():
    bad = torch.tensor([[3.0, 0.0, 1.0, 2.0]])
    good = torch.tensor([[0.0, 0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match="x2 >= x1"):
        box_iou(bad, good)
    with pytest.raises(ValueError, match="x2 >= x1"):
        complete_box_iou_loss(good, bad)
    with pytest.raises(ValueError, match="last dimension"):
        check_boxes("boxes", torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        check_boxes("boxes", torch.tensor([[0.0, 0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="same shape"):
        complete_box_iou_loss(good, torch.cat((good, good)))
    with pytest.raises(ValueError, match="reduction"):
        complete_box_iou_loss(good, good, reduction="max")
