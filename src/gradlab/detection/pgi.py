"""Programmable Gradient Information (YOLOv9 §4.1, Fig. 3d): a GELAN detector trained with a reversible
auxiliary branch that is removed for inference.

Structure (the ``yolov9-c.yaml`` auxiliary branch, generalised to any :class:`GELANSpec`):

* the main branch is the GELAN detector itself (``model.<i>``, the same keys as :class:`GELANDetector`);
* ``aux.cblinear[k]``: a :class:`CBLinear` on main backbone level ``k`` (P3, P4, P5) emitting one chunk for each
  auxiliary level ``j <= k``;
* ``aux.backbone``: a second copy of the backbone run on the raw image; right after the downsampling layer in
  front of auxiliary level ``j``, ``aux.cbfuse[j]`` adds chunk ``j`` of every ``CBLinear`` ``k >= j`` (nearest-resized);
* ``aux.head``: a :class:`DDetect` on the auxiliary levels, trained with the same loss
  (:class:`DualDetectionLoss`, ``L = L_main + 0.25 L_aux``).

The auxiliary loss reaches the main backbone only through ``CBLinear`` (reliable gradients from the
reversible branch); the main neck and head receive none of it. In eval mode only the main branch runs, and
:meth:`YOLOv9PGI.strip_auxiliary` returns the plain :class:`GELANDetector` (its state dict is a subset of this
one's, outputs bit-identical). The MIT official rewrite (github.com/MultimediaTechLab/YOLO, ``v9-c.yaml``'s
``auxiliary:`` section) guided this design; the code is our own.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradlab.detection.blocks import CBFuse, CBLinear
from gradlab.detection.gelan import GELAN, GELANDetector, GELANSpec, LayerSpec, build_layer
from gradlab.detection.heads import DDetect


class AuxiliaryBranch(nn.Module):
    """The reversible auxiliary branch of :class:`YOLOv9PGI` (``cblinear``, ``backbone``, ``cbfuse``, ``head``)."""

    def __init__(self, main: GELAN, nc: int, in_channels: int, width: float, depth: float, reg_max: int) -> None:
        super().__init__()
        spec = main.spec
        self.levels = list(spec.levels)
        self.fuse_at = [lv - 1 for lv in self.levels]  # the downsampling layer in front of each level
        for j, f in enumerate(self.fuse_at):
            prev = main.layer_strides[f - 1] if f > 0 else 1.0
            if main.layer_strides[f] <= prev:
                raise ValueError(f"backbone layer {f} (before level {self.levels[j]}) must downsample for CBFuse")
        chs: list[int] = []
        strides: list[float] = []
        layers = []
        for i in range(spec.backbone):
            row = spec.layers[i]
            if i == 0:
                mod, c2, s2 = build_layer(LayerSpec(-1, row.module, row.args), 1, [in_channels], [1.0], nc, width, depth)
            else:
                if row.from_ != -1:
                    raise ValueError("the auxiliary backbone supports sequential backbones (from = -1) only")
                mod, c2, s2 = build_layer(row, i, chs, strides, nc, width, depth)
            layers.append(mod)
            chs.append(c2)
            strides.append(s2)
        self.backbone = nn.ModuleList(layers)
        fuse_ch = [chs[f] for f in self.fuse_at]
        self.cblinear = nn.ModuleList(CBLinear(main.channels[lv], fuse_ch[: k + 1]) for k, lv in enumerate(self.levels))
        self.cbfuse = nn.ModuleList(CBFuse([j] * (len(self.levels) - j)) for j in range(len(self.levels)))
        self.head = DDetect(nc, [chs[lv] for lv in self.levels], [strides[lv] for lv in self.levels], reg_max)

    def forward(self, x: torch.Tensor, main_levels: list[torch.Tensor]) -> list[torch.Tensor]:
        chunks = [cb(f) for cb, f in zip(self.cblinear, main_levels)]
        feats: dict[int, torch.Tensor] = {}
        y = x
        for i, layer in enumerate(self.backbone):
            y = layer(y)
            if i in self.fuse_at:
                j = self.fuse_at.index(i)
                y = self.cbfuse[j](chunks[j:] + [y])
            if i in self.levels:
                feats[i] = y
        return self.head([feats[lv] for lv in self.levels])


class YOLOv9PGI(GELANDetector):
    """GELAN detector + PGI auxiliary branch (see the module docstring).

    ``forward(images)``: in training mode ``(aux_maps, main_maps)`` (feed to :class:`DualDetectionLoss`); in eval
    mode the main maps only, without running any auxiliary module.

    Args: as :class:`GELANDetector` (``spec``, ``nc``, ``in_channels``, ``width``, ``depth``, ``reg_max``).
    """

    def __init__(self, spec: GELANSpec, nc: int = 80, in_channels: int = 3, width: float = 1.0, depth: float = 1.0,
                 reg_max: int = 16) -> None:
        super().__init__(spec, nc=nc, in_channels=in_channels, width=width, depth=depth, reg_max=reg_max)
        self.aux = AuxiliaryBranch(self, nc, in_channels, width, depth, reg_max)

    @property
    def aux_head(self) -> DDetect:
        return self.aux.head

    def forward(self, x: torch.Tensor) -> Any:
        self.check_images(x)
        outs = self.run_layers(x)
        if not self.training:
            return outs[-1]
        aux_maps = self.aux(x, [outs[lv] for lv in self.spec.levels])
        return aux_maps, outs[-1]

    def config(self) -> dict[str, Any]:
        """Constructor arguments as plain Python values (what :meth:`save` stores beside the weights)."""
        return {"layers": [[list(r.from_) if isinstance(r.from_, tuple) else r.from_, r.module, list(r.args)]
                           for r in self.spec.layers],
                "backbone": self.spec.backbone, "levels": list(self.spec.levels), "name": self.spec.name,
                "nc": self.nc, "in_channels": self.in_channels, "width": self.width, "depth": self.depth,
                "reg_max": self.reg_max}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "YOLOv9PGI":
        layers = tuple(LayerSpec(tuple(f) if isinstance(f, list) else f, m, tuple(a)) for f, m, a in cfg["layers"])
        spec = GELANSpec(layers=layers, backbone=cfg["backbone"], levels=tuple(cfg["levels"]), name=cfg["name"])
        return cls(spec, nc=cfg["nc"], in_channels=cfg["in_channels"], width=cfg["width"], depth=cfg["depth"],
                   reg_max=cfg["reg_max"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write config and state dict to ``path`` atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"config": self.config(), "state_dict": self.state_dict()}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "YOLOv9PGI":
        """Rebuild a model written by :meth:`save` (``torch.load(weights_only=True)``)."""
        blob = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
            raise ValueError(f"{path} is not a YOLOv9PGI file (expected keys 'config' and 'state_dict')")
        model = cls.from_config(blob["config"])
        model.load_state_dict(blob["state_dict"], strict=True)
        return model

    def strip_auxiliary(self) -> GELANDetector:
        """The inference model: a :class:`GELANDetector` with copies of the main-branch weights (every key of its
        state dict is a key of this model's, with an equal tensor), in this model's train/eval mode."""
        det = GELANDetector(self.spec, nc=self.nc, in_channels=self.in_channels, width=self.width, depth=self.depth,
                            reg_max=self.reg_max)
        ref = next(self.parameters())
        det = det.to(device=ref.device, dtype=ref.dtype)
        sd = {k: v for k, v in self.state_dict().items() if not k.startswith("aux.")}
        det.load_state_dict(sd, strict=True)
        return det.train(self.training)
