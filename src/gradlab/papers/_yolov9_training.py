"""Training, evaluation and caching shared by the YOLOv9 claims and the detection benchmark.

Not a paper module (the registry skips names starting with ``_``). One recipe (fixed before any result was seen):
GELAN-t at width 0.5 / depth 1/3 (0.47M parameters, 2 classes), 64 px rectangle scenes (512 train, seed 1000;
128 held out, seed 2000), AdamW (lr 2e-3, wd 5e-4), one-cycle schedule (15 % warm-up), batch 32, gradient-norm
clip 10, no augmentation; PGI adds the reversible auxiliary branch and ``L = L_main + 0.25 L_aux``; the plain
GELAN trains the same main network (same initialisation: the auxiliary branch is built after the main layers)
on the same batch order with ``L_main``. Trained detectors are cached under ``$GRADLAB_CACHE/yolov9``
(default ``.gradlab/cache``), keyed by the recipe, the kind, the seed and the source of gradlab.detection and
this file, written to a temporary file renamed into place under a file lock, so claims that share a training
(``detects`` and ``pgi_gain``) run it once.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import gradlab.detection as det
from gradlab.claims.fingerprint import code_digest

RECIPES: dict[str, dict] = {
    "smoke": {"arch": "gelan-t", "width": 0.5, "depth": 1 / 3, "nc": 2, "size": 64, "n_train": 64, "n_val": 16,
              "train_seed": 1000, "val_seed": 2000, "steps": 6, "batch": 8, "lr": 2e-3, "wd": 5e-4,
              "warmup": 0.15, "clip": 10.0, "eval_every": 3, "aux_weight": 0.25},
    "quick": {"arch": "gelan-t", "width": 0.5, "depth": 1 / 3, "nc": 2, "size": 64, "n_train": 512, "n_val": 128,
              "train_seed": 1000, "val_seed": 2000, "steps": 250, "batch": 32, "lr": 2e-3, "wd": 5e-4,
              "warmup": 0.15, "clip": 10.0, "eval_every": 25, "aux_weight": 0.25},
}
RECIPES["full"] = dict(RECIPES["quick"], steps=600, n_train=1024, n_val=256)


def recipe_for(scale: str) -> dict:
    """The training recipe of a claim scale (``smoke``, ``quick``, ``full``)."""
    return dict(RECIPES[scale])


def build(kind: str, r: dict, seed: int) -> det.GELANDetector:
    """The untrained model of ``kind`` (``pgi`` | ``plain``), initialised from ``seed``."""
    if r["arch"] != "gelan-t":
        raise ValueError(f"unknown arch {r['arch']!r}")
    torch.manual_seed(seed)
    spec = det.gelan_spec_t()
    if kind == "pgi":
        return det.YOLOv9PGI(spec, nc=r["nc"], width=r["width"], depth=r["depth"])
    if kind == "plain":
        return det.GELANDetector(spec, nc=r["nc"], width=r["width"], depth=r["depth"])
    raise ValueError(f"kind must be 'pgi' or 'plain'; got {kind!r}")


def datasets(r: dict) -> tuple[torch.Tensor, list, torch.Tensor, list]:
    """Training and held-out scenes of a recipe."""
    xtr, ttr = det.make_rectangle_scenes(r["n_train"], r["train_seed"], size=r["size"], num_classes=r["nc"])
    xva, tva = det.make_rectangle_scenes(r["n_val"], r["val_seed"], size=r["size"], num_classes=r["nc"])
    return xtr, ttr, xva, tva


@torch.no_grad()
def evaluate(model: det.GELANDetector, x: torch.Tensor, targets: list, nc: int) -> dict:
    """Held-out COCO mAP50 / mAP50-95 of ``model`` in eval mode (conf 0.001, NMS IoU 0.7, like the official val)."""
    was = model.training
    model.eval()
    preds = []
    for i in range(0, len(x), 64):
        preds += model.predict(x[i:i + 64], conf_thres=0.001, iou_thres=0.7, max_det=100)
    model.train(was)
    r = det.detection_ap(preds, targets, num_classes=nc)
    return {"map50": r["map50"], "map50_95": r["map50_95"], "predictions": preds}


def train(kind: str, r: dict, seed: int, data: tuple | None = None,
          progress: Callable[[float, str], None] | None = None,
          model: det.GELANDetector | None = None) -> tuple[det.GELANDetector, dict]:
    """Train one model (``model``, else ``build(kind, r, seed)``); return the inference detector (PGI: stripped)
    and its curves."""
    xtr, ttr, xva, tva = data if data is not None else datasets(r)
    if model is None:
        model = build(kind, r, seed)
    elif isinstance(model, det.YOLOv9PGI) != (kind == "pgi"):
        raise ValueError(f"model does not match kind {kind!r}")
    if kind == "pgi":
        lossf = det.DualDetectionLoss(model.head, model.aux_head, aux_weight=r["aux_weight"])
    else:
        lossf = det.DetectionLoss(model.head)
    # foreach=True: the same arithmetic as the per-tensor loop, bit for bit on the CPU (checked on this recipe),
    # ~7 % less time per step for the detector's many small tensors (424 plain, 650 with the PGI branch).
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["wd"], foreach=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=r["steps"], pct_start=r["warmup"])
    gen = torch.Generator().manual_seed(seed + 1)
    curve: dict[str, list] = {"step": [], "loss": [], "main_loss": [], "eval_step": [], "map50": [], "map50_95": []}
    t0 = time.perf_counter()
    model.train()  # evaluate() restores the mode it found
    for step in range(1, r["steps"] + 1):
        idx = torch.randint(0, len(xtr), (r["batch"],), generator=gen)
        out = model(xtr[idx])
        loss, parts = lossf(out, [ttr[i] for i in idx.tolist()])
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{kind} seed {seed}: loss became {float(loss)} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r["clip"])
        opt.step()
        sched.step()
        main = 7.5 * float(parts["box"]) + 0.5 * float(parts["cls"]) + 1.5 * float(parts["dfl"])
        curve["step"].append(step)
        curve["loss"].append(float(loss.detach()))
        curve["main_loss"].append(main)
        if step % r["eval_every"] == 0 or step == r["steps"]:
            ev = evaluate(model, xva, tva, r["nc"])
            curve["eval_step"].append(step)
            curve["map50"].append(ev["map50"])
            curve["map50_95"].append(ev["map50_95"])
        if progress is not None:
            progress(step / r["steps"], f"{kind} seed {seed} step {step}/{r['steps']}")
    curve["train_seconds"] = time.perf_counter() - t0
    detector = model.strip_auxiliary() if kind == "pgi" else model
    return detector.eval(), curve


@functools.lru_cache(maxsize=1)
def _source_digest() -> str:
    """Digest of the code that determines a training (read once per process)."""
    files = sorted(Path(det.__file__).parent.glob("*.py")) + [Path(__file__)]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(code_digest(f.read_bytes()).encode())
    return h.hexdigest()


def cache_dir() -> Path:
    """``$GRADLAB_CACHE/yolov9`` (default ``.gradlab/cache/yolov9``)."""
    return Path(os.environ.get("GRADLAB_CACHE", ".gradlab/cache")) / "yolov9"


def cache_key(kind: str, r: dict, seed: int) -> str:
    blob = json.dumps({"recipe": r, "kind": kind, "seed": seed, "source": _source_digest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class Trained:
    """A trained inference detector, its curves, and whether it came from the cache."""

    model: det.GELANDetector
    curve: dict
    cached: bool


def trained(kind: str, r: dict, seed: int, data: tuple | None = None,
            progress: Callable[[float, str], None] | None = None) -> Trained:
    """Train once per (recipe, kind, seed, source) and cache; later calls load the cached detector."""
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    key = cache_key(kind, r, seed)
    path = d / f"{kind}-{key}.pt"
    with open(d / f"{kind}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            model = build("plain", r, seed)  # the inference architecture of both kinds
            model.load_state_dict(blob["state_dict"], strict=True)
            if progress is not None:
                progress(1.0, f"{kind} seed {seed}: cached")
            return Trained(model.eval(), json.loads(blob["curve"]), True)
        model, curve = train(kind, r, seed, data, progress)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=path.name, suffix=".tmp")
        os.close(fd)
        try:
            torch.save({"state_dict": model.state_dict(), "curve": json.dumps(curve)}, tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return Trained(model, curve, False)
