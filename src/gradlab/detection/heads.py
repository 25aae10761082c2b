"""Anchor-free decoupled detection heads of YOLOv9 (``DDetect``, ``DualDDetect``) with Distribution Focal Loss
decoding (``DFL``; Li et al., "Generalized Focal Loss", NeurIPS 2020).

Each anchor point (a cell centre ``(i + 0.5, j + 0.5)`` of a level with stride ``s``) predicts class logits and,
per box side, a distribution over ``reg_max`` bins; the side's distance (in units of ``s``) is the expectation
``d = sum_k k · softmax(logits)_k``, and ``box = (cx - d_l, cy - d_t, cx + d_r, cy + d_b) · s``. Layout and
initialisation follow the official head (box branch Conv3x3 -> Conv3x3 (groups 4) -> 1x1 to ``4·reg_max``;
class branch Conv3x3 -> Conv3x3 -> 1x1 to ``nc``; biases 1.0 and ``log(5 / nc / (640 / s)^2)``).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from gradlab.core.validation import check_int
from gradlab.detection.blocks import Conv


def make_divisible(x: float, divisor: int) -> int:
    """Smallest multiple of ``divisor`` >= ``x``."""
    return int(math.ceil(x / divisor) * divisor)


def make_anchors(feats: Sequence[torch.Tensor], strides: Sequence[float], offset: float = 0.5
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points in grid units ``(A, 2)`` (x, y) and their strides ``(A, 1)``, level after level, row-major."""
    points, stride_t = [], []
    for f, s in zip(feats, strides):
        h, w = f.shape[-2:]
        sy = torch.arange(h, device=f.device, dtype=f.dtype) + offset
        sx = torch.arange(w, device=f.device, dtype=f.dtype) + offset
        yy, xx = torch.meshgrid(sy, sx, indexing="ij")
        points.append(torch.stack((xx, yy), -1).reshape(-1, 2))
        stride_t.append(torch.full((h * w, 1), float(s), device=f.device, dtype=f.dtype))
    return torch.cat(points), torch.cat(stride_t)


def dist2bbox(distance: torch.Tensor, anchor_points: torch.Tensor) -> torch.Tensor:
    """``(l, t, r, b)`` distances ``(..., A, 4)`` around points ``(A, 2)`` -> xyxy boxes."""
    lt, rb = distance.chunk(2, -1)
    return torch.cat((anchor_points - lt, anchor_points + rb), -1)


def bbox2dist(anchor_points: torch.Tensor, bbox: torch.Tensor, max_dist: float) -> torch.Tensor:
    """xyxy boxes -> ``(l, t, r, b)`` distances from the points, clamped to ``[0, max_dist - 0.01]``."""
    x1y1, x2y2 = bbox.chunk(2, -1)
    return torch.cat((anchor_points - x1y1, x2y2 - anchor_points), -1).clamp(0, max_dist - 0.01)


class DFL(nn.Module):
    """Expectation over ``reg_max`` bins as a fixed 1x1 conv (weights ``arange(reg_max)``, no gradient).

    ``(B, 4·reg_max, A) -> (B, 4, A)``. Stored as ``conv.weight`` like the official checkpoints.
    """

    def __init__(self, reg_max: int = 16) -> None:
        super().__init__()
        self.reg_max = check_int("reg_max", reg_max, minimum=2)
        self.conv = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, a = x.shape
        p = x.view(b, 4, self.reg_max, a).transpose(2, 1).softmax(1)
        return self.conv(p).view(b, 4, a)


def _branches(ch: Sequence[int], nc: int, reg_max: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    c2 = make_divisible(max(ch[0] // 4, reg_max * 4, 16), 4)
    c3 = max(ch[0], min(nc * 2, 128))
    box = nn.ModuleList(nn.Sequential(Conv(c, c2, 3), Conv(c2, c2, 3, g=4), nn.Conv2d(c2, 4 * reg_max, 1)) for c in ch)
    cls = nn.ModuleList(nn.Sequential(Conv(c, c3, 3), Conv(c3, c3, 3), nn.Conv2d(c3, nc, 1)) for c in ch)
    return box, cls


def _init_bias(box: nn.ModuleList, cls: nn.ModuleList, strides: Sequence[float], nc: int) -> None:
    with torch.no_grad():
        for a, b, s in zip(box, cls, strides):
            a[-1].bias.fill_(1.0)
            b[-1].bias.fill_(math.log(5 / nc / (640 / float(s)) ** 2))


class DDetect(nn.Module):
    """YOLOv9 detection head over ``len(ch)`` levels.

    ``forward(feats)`` returns the raw per-level maps ``(B, 4·reg_max + nc, H_i, W_i)`` (what the loss takes);
    :meth:`decode` turns them into pixel xyxy boxes ``(B, A, 4)`` and class probabilities ``(B, A, nc)``.

    Args:
        nc: number of classes.
        ch: input channels per level.
        strides: stride of each level in pixels.
        reg_max: DFL bins per box side.
    """

    def __init__(self, nc: int, ch: Sequence[int], strides: Sequence[float], reg_max: int = 16) -> None:
        super().__init__()
        self.nc = check_int("nc", nc, minimum=1)
        self.reg_max = check_int("reg_max", reg_max, minimum=2)
        ch = [check_int("ch[i]", c, minimum=1) for c in ch]
        if len(strides) != len(ch):
            raise ValueError(f"strides must have one entry per level ({len(ch)}); got {len(strides)}")
        self.nl = len(ch)
        self.no = nc + 4 * reg_max
        self.register_buffer("stride", torch.tensor([float(s) for s in strides]), persistent=False)
        self.cv2, self.cv3 = _branches(ch, nc, reg_max)
        self.dfl = DFL(reg_max)
        _init_bias(self.cv2, self.cv3, strides, nc)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != self.nl:
            raise ValueError(f"DDetect expects {self.nl} feature maps; got {len(feats)}")
        return [torch.cat((self.cv2[i](x), self.cv3[i](x)), 1) for i, x in enumerate(feats)]

    def split(self, out: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Flatten raw maps into box logits ``(B, A, 4·reg_max)`` and class logits ``(B, A, nc)``."""
        flat = torch.cat([o.flatten(2) for o in out], 2)
        box, cls = flat.split((4 * self.reg_max, self.nc), 1)
        return box.transpose(1, 2), cls.transpose(1, 2)

    def decode(self, out: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw maps -> (pixel xyxy boxes ``(B, A, 4)``, class probabilities ``(B, A, nc)``)."""
        box, cls = self.split(out)
        points, strides = make_anchors(out, self.stride.tolist())
        dist = self.dfl(box.transpose(1, 2)).transpose(1, 2)
        return dist2bbox(dist, points) * strides, cls.sigmoid()


class DualDDetect(nn.Module):
    """The official dual head of YOLOv9-C/E: an auxiliary head (``cv2``/``cv3``/``dfl``, on the first half of the
    inputs) and the main head (``cv4``/``cv5``/``dfl2``, on the second half), in the official key layout.

    ``forward(feats)`` -> ``(aux_maps, main_maps)``. :meth:`main_head` returns the main head as a
    :class:`DDetect` (``cv4 -> cv2``, ``cv5 -> cv3``, ``dfl2 -> dfl``), which is how the auxiliary head is removed
    for inference.
    """

    def __init__(self, nc: int, ch: Sequence[int], strides: Sequence[float], reg_max: int = 16) -> None:
        super().__init__()
        if len(ch) % 2 or not ch:
            raise ValueError(f"DualDDetect needs an even number of levels (aux then main); got {len(ch)}")
        self.nl = len(ch) // 2
        if len(strides) != self.nl:
            raise ValueError(f"strides must have one entry per level pair ({self.nl}); got {len(strides)}")
        self.nc, self.reg_max, self.no = check_int("nc", nc, minimum=1), reg_max, nc + 4 * reg_max
        self.register_buffer("stride", torch.tensor([float(s) for s in strides]), persistent=False)
        self.cv2, self.cv3 = _branches(ch[: self.nl], nc, reg_max)
        self.cv4, self.cv5 = _branches(ch[self.nl:], nc, reg_max)
        self.dfl, self.dfl2 = DFL(reg_max), DFL(reg_max)
        _init_bias(self.cv2, self.cv3, strides, nc)
        _init_bias(self.cv4, self.cv5, strides, nc)
        self._main_ch = list(ch[self.nl:])

    def forward(self, feats: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if len(feats) != 2 * self.nl:
            raise ValueError(f"DualDDetect expects {2 * self.nl} feature maps; got {len(feats)}")
        aux = [torch.cat((self.cv2[i](feats[i]), self.cv3[i](feats[i])), 1) for i in range(self.nl)]
        main = [torch.cat((self.cv4[i](feats[self.nl + i]), self.cv5[i](feats[self.nl + i])), 1) for i in range(self.nl)]
        return aux, main

    def main_head(self) -> DDetect:
        """A :class:`DDetect` holding copies of the main head's weights (bit-identical outputs)."""
        head = DDetect(self.nc, self._main_ch, self.stride.tolist(), self.reg_max)
        sd = {}
        for k, v in self.state_dict().items():
            for src, dst in (("cv4.", "cv2."), ("cv5.", "cv3."), ("dfl2.", "dfl.")):
                if k.startswith(src):
                    sd[dst + k[len(src):]] = v
        head.load_state_dict(sd, strict=True)
        return head.to(self.stride.device)
