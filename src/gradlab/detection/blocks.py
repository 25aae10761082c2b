"""GELAN building blocks of YOLOv9 (Wang, Yeh, Liao 2024, arXiv 2402.13616, §4 and Fig. 4).

Attribute names follow the official configuration (``conv``/``bn``, ``cv1``..``cv5``, ``m``) so that official
state dicts load by key. Written from the paper and the official layer definitions (the MIT rewrite
github.com/MultimediaTechLab/YOLO guided the structure); no code copied.

* ``Conv``: Conv2d (no bias) -> BatchNorm2d(eps 1e-3, momentum 0.03) -> SiLU.
* ``RepConvN``: ``SiLU(BN(W3 * x) + BN(W1 * x))`` (3x3 and 1x1 branches, no identity branch, RepVGG-style), which
  :meth:`RepConvN.fuse` turns into one 3x3 convolution with bias.
* ``RepNCSPELAN4`` (the GELAN block): ``[y0, y1] = split(cv1(x))``, ``y2 = cv2(y1)``, ``y3 = cv3(y2)``,
  ``out = cv4(cat(y0, y1, y2, y3))`` with ``cv2``/``cv3`` = RepNCSP (CSP of RepN bottlenecks) then a 3x3 Conv.
* ``ADown``: 2x2 average pool (stride 1), channel split; half by a stride-2 3x3 Conv, half by a 3x3 stride-2 max
  pool and a 1x1 Conv; concatenated.
* ``CBLinear``/``CBFuse``: the reversible auxiliary branch's links (CBNet-style composite backbone): a 1x1 conv
  with bias whose output is split into per-level chunks, and the sum of nearest-resized chunks with a feature map.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_int


def autopad(k: int, p: int | None = None, d: int = 1) -> int:
    """'Same' padding for an odd kernel ``k`` with dilation ``d`` unless ``p`` is given."""
    if p is not None:
        return p
    return (d * (k - 1) + 1) // 2


class Conv(nn.Module):
    """Conv2d(bias=False) -> BatchNorm2d -> SiLU (``act=False``: identity)."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, d: int = 1,
                 act: bool = True) -> None:
        super().__init__()
        for name, v in (("c1", c1), ("c2", c2), ("k", k), ("s", s), ("g", g), ("d", d)):
            check_int(name, v, minimum=1)
        if c1 % g or c2 % g:
            raise ValueError(f"c1 ({c1}) and c2 ({c2}) must be divisible by groups g ({g})")
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    @torch.no_grad()
    def fuse(self) -> "Conv":
        """Fold the BatchNorm (running statistics) into the conv, which gets a bias (in place; returns self)."""
        if isinstance(self.bn, nn.Identity):
            return self
        w, b = _fuse_conv_bn(self.conv, self.bn)
        ref = self.conv
        conv = nn.Conv2d(ref.in_channels, ref.out_channels, ref.kernel_size, ref.stride, ref.padding,
                         dilation=ref.dilation, groups=ref.groups, bias=True).to(device=w.device, dtype=w.dtype)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        self.conv, self.bn = conv, nn.Identity()
        return self


def _fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel and bias of ``bn(conv(x))`` in eval: ``W' = W * gamma / sqrt(var + eps)``, ``b' = beta - mean * gamma / std``."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    w = conv.weight * scale.reshape(-1, 1, 1, 1)
    b = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        b = b + conv.bias * scale
    return w, b


class RepConvN(nn.Module):
    """Re-parameterizable conv without identity branch: ``SiLU(BN(conv3x3(x)) + BN(conv1x1(x)))``.

    After :meth:`fuse` (inference re-parameterization, RepVGG) the block is ``SiLU(conv3x3'(x) + b')`` with
    ``W' = W3·γ3/σ3 + pad(W1·γ1/σ1)`` and ``b' = β3 - μ3γ3/σ3 + β1 - μ1γ1/σ1``; outputs agree in eval mode.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int = 1, g: int = 1, act: bool = True) -> None:
        super().__init__()
        if k != 3 or p != 1:
            raise ValueError(f"RepConvN supports k=3, p=1 (a 3x3 plus a 1x1 branch); got k={k}, p={p}")
        self.g = g
        self.act = nn.SiLU() if act else nn.Identity()
        self.conv1 = Conv(c1, c2, k, s, p=p, g=g, act=False)
        self.conv2 = Conv(c1, c2, 1, s, p=p - k // 2, g=g, act=False)

    @property
    def fused(self) -> bool:
        """Whether :meth:`fuse` has replaced the two branches by one convolution."""
        return hasattr(self, "conv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused:
            return self.act(self.conv(x))
        return self.act(self.conv1(x) + self.conv2(x))

    @torch.no_grad()
    def fuse(self) -> "RepConvN":
        """Merge both branches and their BatchNorms into one 3x3 ``Conv2d`` with bias (in place; returns self).

        Uses the BatchNorm running statistics, so call it on an eval-mode (trained) block.
        """
        if self.fused:
            return self
        w3, b3 = _fuse_conv_bn(self.conv1.conv, self.conv1.bn)
        w1, b1 = _fuse_conv_bn(self.conv2.conv, self.conv2.bn)
        ref = self.conv1.conv
        conv = nn.Conv2d(ref.in_channels, ref.out_channels, 3, ref.stride, ref.padding, groups=ref.groups, bias=True)
        conv = conv.to(device=ref.weight.device, dtype=ref.weight.dtype)
        conv.weight.copy_(w3 + F.pad(w1, [1, 1, 1, 1]))
        conv.bias.copy_(b3 + b1)
        self.conv = conv
        del self.conv1, self.conv2
        return self


class RepNBottleneck(nn.Module):
    """``x + cv2(cv1(x))`` with ``cv1`` a RepConvN and ``cv2`` a 3x3 Conv (no shortcut if channels differ)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = RepConvN(c1, c_, 3, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class RepNCSP(nn.Module):
    """CSP block: ``cv3(cat(m(cv1(x)), cv2(x)))`` with ``m`` = ``n`` RepNBottlenecks at ``c2·e`` channels."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        check_int("n", n, minimum=1)
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(RepNBottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class RepNCSPELAN4(nn.Module):
    """The GELAN block (paper Fig. 4d): split, two RepNCSP + 3x3 Conv stages, concatenate all four, 1x1 Conv.

    Args: ``c1`` input, ``c2`` output, ``c3`` width of the first 1x1 (even), ``c4`` width of each stage,
    ``n`` (``c5`` in the official config) bottlenecks per RepNCSP.
    """

    def __init__(self, c1: int, c2: int, c3: int, c4: int, n: int = 1) -> None:
        super().__init__()
        if c3 % 2:
            raise ValueError(f"c3 must be even (it is split in halves); got {c3}")
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = nn.Sequential(RepNCSP(c3 // 2, c4, n), Conv(c4, c4, 3, 1))
        self.cv3 = nn.Sequential(RepNCSP(c4, c4, n), Conv(c4, c4, 3, 1))
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0, y1 = self.cv1(x).chunk(2, 1)
        y2 = self.cv2(y1)
        y3 = self.cv3(y2)
        return self.cv4(torch.cat((y0, y1, y2, y3), 1))


class ELAN1(nn.Module):
    """ELAN block of GELAN-t/s: like RepNCSPELAN4 with plain 3x3 Convs instead of RepNCSP stages."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int) -> None:
        super().__init__()
        if c3 % 2:
            raise ValueError(f"c3 must be even (it is split in halves); got {c3}")
        self.c = c3 // 2
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv2 = Conv(c3 // 2, c4, 3, 1)
        self.cv3 = Conv(c4, c4, 3, 1)
        self.cv4 = Conv(c3 + 2 * c4, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y0, y1 = self.cv1(x).chunk(2, 1)
        y2 = self.cv2(y1)
        y3 = self.cv3(y2)
        return self.cv4(torch.cat((y0, y1, y2, y3), 1))


class ADown(nn.Module):
    """Stride-2 downsampling of GELAN-c: avg-pool 2x2/1, split; 3x3/2 Conv | max-pool 3x3/2 + 1x1 Conv; concat."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        if c1 % 2 or c2 % 2:
            raise ValueError(f"ADown needs even c1 and c2; got {c1}, {c2}")
        self.c = c2 // 2
        self.cv1 = Conv(c1 // 2, self.c, 3, 2, 1)
        self.cv2 = Conv(c1 // 2, self.c, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, 2, 1, 0, False, True)
        x1, x2 = x.chunk(2, 1)
        x1 = self.cv1(x1)
        x2 = self.cv2(F.max_pool2d(x2, 3, 2, 1))
        return torch.cat((x1, x2), 1)


class AConv(nn.Module):
    """Stride-2 downsampling of GELAN-t/s: avg-pool 2x2/1 then a 3x3/2 Conv."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.cv1 = Conv(c1, c2, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv1(F.avg_pool2d(x, 2, 1, 0, False, True))


class SPPELAN(nn.Module):
    """Spatial pyramid pooling ELAN: 1x1 Conv, three chained 5x5/1 max pools, concat of the four maps, 1x1 Conv."""

    def __init__(self, c1: int, c2: int, c3: int, k: int = 5) -> None:
        super().__init__()
        self.c = c3
        self.k = k
        self.cv1 = Conv(c1, c3, 1, 1)
        self.cv5 = Conv(4 * c3, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x)]
        for _ in range(3):
            y.append(F.max_pool2d(y[-1], self.k, 1, self.k // 2))
        return self.cv5(torch.cat(y, 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dim``."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.d = dim

    def forward(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat(list(xs), self.d)


class CBLinear(nn.Module):
    """PGI link from a main-branch level: a 1x1 conv (with bias) to ``sum(c2s)`` channels, split into chunks.

    Chunk ``j`` is fused into auxiliary level ``j`` (see :class:`CBFuse`).
    """

    def __init__(self, c1: int, c2s: Sequence[int], k: int = 1, s: int = 1) -> None:
        super().__init__()
        self.c2s = [check_int("c2s[i]", c, minimum=1) for c in c2s]
        if not self.c2s:
            raise ValueError("c2s must name at least one output chunk")
        self.conv = nn.Conv2d(c1, sum(self.c2s), k, s, autopad(k), bias=True)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.conv(x).split(self.c2s, dim=1))


class CBFuse(nn.Module):
    """PGI fusion: ``x + sum_i resize_nearest(chunks_i[idx[i]], size(x))`` (``forward(chunk_lists..., x)``)."""

    def __init__(self, idx: Sequence[int]) -> None:
        super().__init__()
        self.idx = [check_int("idx[i]", i, minimum=0) for i in idx]

    def forward(self, xs: Sequence) -> torch.Tensor:
        if len(xs) != len(self.idx) + 1:
            raise ValueError(f"CBFuse expects {len(self.idx)} chunk lists and a feature map; got {len(xs)} inputs")
        target = xs[-1]
        out = target
        for chunks, j in zip(xs[:-1], self.idx):
            out = out + F.interpolate(chunks[j], size=target.shape[2:], mode="nearest")
        return out
