"""GELAN (Generalized Efficient Layer Aggregation Network, YOLOv9 §4.2) built from a layer spec.

A spec is a list of :class:`LayerSpec` ``(from, module, args)`` rows like the official ``gelan-*.yaml`` files
(``from`` = -1 for the previous layer, or absolute layer indices); layers are stored as ``model.<i>`` so state
dict keys match the official checkpoints (``model.22.cv2.0.0.conv.weight``...). The presets
:func:`gelan_spec_c` and :func:`gelan_spec_t` reproduce ``gelan-c.yaml`` (25.3M parameters at 80 classes) and
``gelan-t.yaml``; ``width``/``depth`` multiply channels (rounded up to multiples of 8) and block repeats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import torch
from torch import nn

from gradlab.core.validation import check_int, check_positive, check_tensor
from gradlab.detection.blocks import (
    ADown, AConv, CBFuse, CBLinear, Concat, Conv, ELAN1, RepConvN, RepNCSP, RepNCSPELAN4, SPPELAN,
)
from gradlab.detection.heads import DDetect, make_divisible


class LayerSpec(NamedTuple):
    """One layer: inputs (``-1``, an index, or a tuple of them), module name, module arguments (no input width)."""

    from_: int | tuple[int, ...]
    module: str
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class GELANSpec:
    """A GELAN detector: ``layers`` (the last one a ``DDetect``), the number of ``backbone`` layers (the first
    ones), and the backbone ``levels`` feeding the neck (P3, P4, P5 indices), which PGI taps."""

    layers: tuple[LayerSpec, ...]
    backbone: int
    levels: tuple[int, ...]
    name: str = "gelan"
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        layers = tuple(LayerSpec(*row) for row in self.layers)
        object.__setattr__(self, "layers", layers)
        if not layers or layers[-1].module != "DDetect":
            raise ValueError("GELANSpec.layers must end with a DDetect layer")
        check_int("backbone", self.backbone, minimum=1, maximum=len(layers) - 1)
        for lv in self.levels:
            check_int("levels[i]", lv, minimum=1, maximum=self.backbone - 1)


def _resolve(i: int, f: int) -> int:
    return i + f if f < 0 else f


def _scale(c: int, width: float) -> int:
    return max(8, make_divisible(c * width, 8)) if width != 1.0 else c


def build_layer(row: LayerSpec, i: int, chs: list[int], strides: list[float], nc: int, width: float = 1.0,
                depth: float = 1.0, reg_max: int = 16) -> tuple[nn.Module, int, float]:
    """Build layer ``i`` of a spec given the output widths/strides of the earlier layers; return (module, c2, stride)."""
    froms = row.from_ if isinstance(row.from_, (tuple, list)) else (row.from_,)
    src = [_resolve(i, f) for f in froms]
    for s in src:
        if not 0 <= s < i:
            raise ValueError(f"layer {i} ({row.module}) takes input {s}, which is not an earlier layer")
    c1, s1 = chs[src[0]], strides[src[0]]
    a, m = row.args, row.module
    n_rep = (lambda n: max(1, round(n * depth)))
    if m == "Conv":
        c2, k, s = _scale(a[0], width), a[1], a[2]
        return Conv(c1, c2, k, s), c2, s1 * s
    if m == "RepNCSPELAN4":
        c2 = _scale(a[0], width)
        return RepNCSPELAN4(c1, c2, _scale(a[1], width), _scale(a[2], width), n_rep(a[3])), c2, s1
    if m == "RepNCSP":  # a plain CSP stage (CSPNet), for baselines
        c2 = _scale(a[0], width)
        return RepNCSP(c1, c2, n_rep(a[1])), c2, s1
    if m == "ELAN1":
        c2 = _scale(a[0], width)
        return ELAN1(c1, c2, _scale(a[1], width), _scale(a[2], width)), c2, s1
    if m in ("ADown", "AConv"):
        c2 = _scale(a[0], width)
        return (ADown if m == "ADown" else AConv)(c1, c2), c2, s1 * 2
    if m == "SPPELAN":
        c2 = _scale(a[0], width)
        return SPPELAN(c1, c2, _scale(a[1], width)), c2, s1
    if m == "Upsample":
        return nn.Upsample(scale_factor=a[0], mode="nearest"), c1, s1 / a[0]
    if m == "Concat":
        if len({strides[s] for s in src}) != 1:
            raise ValueError(f"layer {i} concatenates maps of different strides {[strides[s] for s in src]}")
        return Concat(a[0] if a else 1), sum(chs[s] for s in src), s1
    if m == "DDetect":
        return DDetect(nc, [chs[s] for s in src], [strides[s] for s in src], reg_max), 0, max(strides[s] for s in src)
    if m == "CBLinear":
        return CBLinear(c1, [_scale(c, width) for c in a[0]]), 0, s1
    if m == "CBFuse":
        return CBFuse(a[0]), chs[src[-1]], strides[src[-1]]
    raise ValueError(f"unknown module {m!r} in layer {i}; expected one of Conv, RepNCSPELAN4, RepNCSP, ELAN1, ADown, AConv, "
                     "SPPELAN, Upsample, Concat, DDetect, CBLinear, CBFuse")


class GELAN(nn.Module):
    """A network built from a :class:`GELANSpec` (layers ``model.<i>``); ``forward`` returns the last layer's output.

    Args:
        spec: the layer spec (see :func:`gelan_spec_c`).
        nc: number of classes (for the ``DDetect`` layer).
        in_channels: image channels.
        width, depth: channel and repeat multipliers applied to every layer.
        reg_max: DFL bins of the head.
    """

    def __init__(self, spec: GELANSpec, nc: int = 80, in_channels: int = 3, width: float = 1.0, depth: float = 1.0,
                 reg_max: int = 16) -> None:
        super().__init__()
        if not isinstance(spec, GELANSpec):
            raise TypeError(f"spec must be a GELANSpec; got {type(spec).__name__}")
        self.spec = spec
        self.nc = check_int("nc", nc, minimum=1)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.width, self.depth = check_positive("width", width), check_positive("depth", depth)
        self.reg_max = reg_max
        chs: list[int] = []
        strides: list[float] = []
        layers = []
        self._froms: list[list[int]] = []
        for i, row in enumerate(spec.layers):
            if i == 0:  # the first layer reads the image
                mod, c2, s2 = build_layer(LayerSpec(-1, row.module, row.args), 1, [in_channels], [1.0], nc, width,
                                          depth, reg_max)
                froms = [-1]
            else:
                mod, c2, s2 = build_layer(row, i, chs, strides, nc, width, depth, reg_max)
                fr = row.from_ if isinstance(row.from_, (tuple, list)) else (row.from_,)
                froms = [_resolve(i, f) for f in fr]
            layers.append(mod)
            chs.append(c2)
            strides.append(s2)
            self._froms.append(froms)
        self.model = nn.ModuleList(layers)
        self.channels = chs
        self.layer_strides = strides
        self.max_stride = int(max(strides))

    def check_images(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a finite image batch ``(B, C, H, W)`` with ``H``, ``W`` divisible by the top stride."""
        check_tensor("images", x, ndim=4, floating=True, finite=True)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"images must have {self.in_channels} channels; got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if h % self.max_stride or w % self.max_stride or h == 0 or w == 0:
            raise ValueError(f"image height and width must be positive multiples of the top stride {self.max_stride}; "
                             f"got {h}x{w}")
        return x

    def run_layers(self, x: torch.Tensor, upto: int | None = None) -> list[Any]:
        """Outputs of layers ``0..upto-1`` (all layers by default), in order."""
        outs: list[Any] = []
        for i, (mod, froms) in enumerate(zip(self.model, self._froms)):
            if upto is not None and i >= upto:
                break
            if i == 0:
                inp = x
            elif len(froms) == 1:
                inp = outs[froms[0]]
            else:
                inp = [outs[f] for f in froms]
            outs.append(mod(inp))
        return outs

    def forward(self, x: torch.Tensor) -> Any:
        self.check_images(x)
        return self.run_layers(x)[-1]

    def fuse(self, fold_batchnorm: bool = False) -> "GELAN":
        """Re-parameterize every :class:`RepConvN` into a single 3x3 conv and, with ``fold_batchnorm``, fold every
        :class:`Conv`'s BatchNorm into its conv (the deployed model the paper counts: GELAN-C 25.3M); outputs
        agree in eval mode. In place; returns self."""
        for m in list(self.modules()):
            if isinstance(m, RepConvN):
                m.fuse()
        if fold_batchnorm:
            for m in list(self.modules()):
                if isinstance(m, Conv):
                    m.fuse()
        return self


class GELANDetector(GELAN):
    """A GELAN whose last layer is a :class:`DDetect`: ``forward`` gives the raw head maps (for the loss),
    :meth:`decode` pixel boxes and probabilities, :meth:`predict` post-processed detections per image."""

    @property
    def head(self) -> DDetect:
        return self.model[-1]

    @property
    def strides(self) -> list[float]:
        return self.head.stride.tolist()

    def decode(self, out: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head.decode(out)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, conf_thres: float = 0.001, iou_thres: float = 0.7,
                max_det: int = 300) -> list[dict[str, torch.Tensor]]:
        """Detections per image ``{"boxes", "scores", "labels"}`` (see :func:`gradlab.detection.postprocess`)."""
        from gradlab.detection.postprocess import postprocess

        boxes, scores = self.decode(self(images))
        return postprocess(boxes, scores, conf_thres=conf_thres, iou_thres=iou_thres, max_det=max_det)


def gelan_spec_c() -> GELANSpec:
    """``gelan-c.yaml``: Conv/Conv, RepNCSPELAN4 + ADown backbone, SPPELAN, PAN neck, DDetect on P3/P4/P5."""
    L = LayerSpec
    return GELANSpec(name="gelan-c", backbone=9, levels=(4, 6, 8), layers=(
        L(-1, "Conv", (64, 3, 2)), L(-1, "Conv", (128, 3, 2)), L(-1, "RepNCSPELAN4", (256, 128, 64, 1)),
        L(-1, "ADown", (256,)), L(-1, "RepNCSPELAN4", (512, 256, 128, 1)), L(-1, "ADown", (512,)),
        L(-1, "RepNCSPELAN4", (512, 512, 256, 1)), L(-1, "ADown", (512,)), L(-1, "RepNCSPELAN4", (512, 512, 256, 1)),
        L(-1, "SPPELAN", (512, 256)), L(-1, "Upsample", (2,)), L((-1, 6), "Concat", (1,)),
        L(-1, "RepNCSPELAN4", (512, 512, 256, 1)), L(-1, "Upsample", (2,)), L((-1, 4), "Concat", (1,)),
        L(-1, "RepNCSPELAN4", (256, 256, 128, 1)), L(-1, "ADown", (256,)), L((-1, 12), "Concat", (1,)),
        L(-1, "RepNCSPELAN4", (512, 512, 256, 1)), L(-1, "ADown", (512,)), L((-1, 9), "Concat", (1,)),
        L(-1, "RepNCSPELAN4", (512, 512, 256, 1)), L((15, 18, 21), "DDetect", ()),
    ))


def gelan_spec_t() -> GELANSpec:
    """``gelan-t.yaml``: ELAN1 + AConv + RepNCSPELAN4 (3 repeats) backbone at widths 16..128."""
    L = LayerSpec
    return GELANSpec(name="gelan-t", backbone=9, levels=(4, 6, 8), layers=(
        L(-1, "Conv", (16, 3, 2)), L(-1, "Conv", (32, 3, 2)), L(-1, "ELAN1", (32, 32, 16)),
        L(-1, "AConv", (64,)), L(-1, "RepNCSPELAN4", (64, 64, 32, 3)), L(-1, "AConv", (96,)),
        L(-1, "RepNCSPELAN4", (96, 96, 48, 3)), L(-1, "AConv", (128,)), L(-1, "RepNCSPELAN4", (128, 128, 64, 3)),
        L(-1, "SPPELAN", (128, 64)), L(-1, "Upsample", (2,)), L((-1, 6), "Concat", (1,)),
        L(-1, "RepNCSPELAN4", (96, 96, 48, 3)), L(-1, "Upsample", (2,)), L((-1, 4), "Concat", (1,)),
        L(-1, "RepNCSPELAN4", (64, 64, 32, 3)), L(-1, "AConv", (48,)), L((-1, 12), "Concat", (1,)),
        L(-1, "RepNCSPELAN4", (96, 96, 48, 3)), L(-1, "AConv", (64,)), L((-1, 9), "Concat", (1,)),
        L(-1, "RepNCSPELAN4", (128, 128, 64, 3)), L((15, 18, 21), "DDetect", ()),
    ))


def gelan_c(nc: int = 80, in_channels: int = 3, width: float = 1.0, depth: float = 1.0) -> GELANDetector:
    """GELAN-C detector (official layout; 25.3M parameters at ``nc=80``)."""
    return GELANDetector(gelan_spec_c(), nc=nc, in_channels=in_channels, width=width, depth=depth)


def gelan_t(nc: int = 80, in_channels: int = 3, width: float = 1.0, depth: float = 1.0) -> GELANDetector:
    """GELAN-T detector (official layout); ``gelan_t(nc=2, width=0.5, depth=1/3)`` is the ~0.4M CPU model."""
    return GELANDetector(gelan_spec_t(), nc=nc, in_channels=in_channels, width=width, depth=depth)
