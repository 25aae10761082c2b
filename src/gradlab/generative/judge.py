"""``ShapeJudge``: a small CNN that reads an image's colour and shape, the evaluator of the generative claims.

It is trained on real :func:`gradlab.generative.tiny.make_shapes` images over **all** colours (held-out ones
included) with light augmentation (Gaussian pixel noise, brightness jitter, a random 3x3 box blur) so that it reads
imperfect generated images too. It is a measuring instrument only: no component may use it as a training signal.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_choice, check_int, check_tensor
from gradlab.generative.cache import cached_artifact
from gradlab.generative.tiny import COLOURS, IMAGE_SIZE, SHAPES, make_shapes

__all__ = ["ShapeJudge", "train_shape_judge", "JUDGE_RECIPES", "load_shape_judge", "generation_accuracy"]


class ShapeJudge(nn.Module):
    """Two-headed CNN on ``(B, 3, S, S)`` images in [-1, 1]: logits over :data:`COLOURS` and over :data:`SHAPES`."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.width = check_int("width", width, minimum=4)
        w = self.width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.colour_head = nn.Linear(2 * w, len(COLOURS))
        self.shape_head = nn.Linear(2 * w, len(SHAPES))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        check_tensor("images", images, ndim=4, floating=True)
        if images.shape[1] != 3:
            raise ValueError(f"images must have 3 channels; got shape {tuple(images.shape)}")
        h = self.features(images)
        return self.colour_head(h), self.shape_head(h)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> tuple[list[str], list[str]]:
        """The most likely colour and shape names per image (images clamped to [-1, 1] first)."""
        c, s = self(images.clamp(-1, 1))
        return [COLOURS[i] for i in c.argmax(1).tolist()], [SHAPES[i] for i in s.argmax(1).tolist()]


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    bright = 0.75 + 0.25 * torch.rand(n, 1, 1, 1, generator=g)
    x = (x + 1) * bright - 1
    blur = torch.rand(n, 1, 1, 1, generator=g) < 0.3
    xb = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.where(blur, xb, x)
    sigma = 0.15 * torch.rand(n, 1, 1, 1, generator=g)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


JUDGE_RECIPES: dict[str, dict] = {
    "smoke": {"steps": 40, "batch": 64, "lr": 3e-3, "seed": 0, "width": 16},
    "quick": {"steps": 600, "batch": 64, "lr": 3e-3, "seed": 0, "width": 32},
}
JUDGE_RECIPES["full"] = dict(JUDGE_RECIPES["quick"])


def train_shape_judge(*, steps: int, batch: int = 64, lr: float = 3e-3, seed: int = 0, width: int = 32) -> ShapeJudge:
    """Train a :class:`ShapeJudge` with Adam and cross-entropy on both heads over fresh augmented batches."""
    steps = check_int("steps", steps, minimum=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = ShapeJudge(width)
    g = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(judge.parameters(), lr=lr, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        data = make_shapes(batch, seed=10_000_019 + seed * 100003 + step, size=IMAGE_SIZE, colours=COLOURS)
        yc = torch.tensor([COLOURS.index(c) for c in data.colours])
        ys = torch.tensor([SHAPES.index(s) for s in data.shapes])
        lc, ls = judge(_augment(data.images, g))
        loss = F.cross_entropy(lc, yc) + F.cross_entropy(ls, ys)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return judge.eval()


class _build_judge_artifact:
    def __init__(self, recipe: dict):
        self.recipe = recipe

    def __call__(self, tmp: Path) -> None:
        judge = train_shape_judge(**self.recipe)
        torch.save(judge.state_dict(), tmp / "judge.pt")
        test = make_shapes(512, seed=987_654, colours=COLOURS)
        colours, shapes = judge.predict(test.images)
        acc = {"colour": sum(a == b for a, b in zip(colours, test.colours)) / len(test),
               "shape": sum(a == b for a, b in zip(shapes, test.shapes)) / len(test)}
        (tmp / "judge.json").write_text(json.dumps({"width": judge.width, "heldout_accuracy": acc}))


def load_shape_judge(scale: str = "quick", *, cache_dir: str | os.PathLike | None = None) -> ShapeJudge:
    """The trained judge for ``scale`` (cached like the tiny model; ``judge.json`` holds its accuracy on 512 fresh
    real images), in eval mode with gradients off."""
    check_choice("scale", scale, tuple(JUDGE_RECIPES))
    recipe = dict(JUDGE_RECIPES[scale])
    path = cached_artifact(f"shape-judge-{scale}", recipe, _build_judge_artifact(recipe), cache_dir=cache_dir)
    meta = json.loads((path / "judge.json").read_text())
    judge = ShapeJudge(meta["width"])
    judge.load_state_dict(torch.load(path / "judge.pt", map_location="cpu", weights_only=True))
    return judge.eval().requires_grad_(False)


@torch.no_grad()
def generation_accuracy(model, judge: ShapeJudge, *, n: int = 64, seed: int = 0, num_steps: int = 20,
                        guidance_scale: float = 7.5, colours=None) -> dict[str, float]:
    """Whether a text-to-image model generates what it is asked: ``n`` prompts ``"a {colour} {shape}"`` cycling
    over ``colours`` (default: the training colours) x :data:`SHAPES`, sampled with DDIM + CFG from
    ``torch.Generator().manual_seed(seed)``, read by ``judge``. Returns ``{"colour": acc, "shape": acc}``."""
    from gradlab.generative.tiny import TRAIN_COLOURS

    n = check_int("n", n, minimum=1)
    colours = tuple(TRAIN_COLOURS if colours is None else colours)
    combos = [(c, s) for c in colours for s in SHAPES]
    asked = [combos[i % len(combos)] for i in range(n)]
    emb = model.encode_prompt([f"a {c} {s}" for c, s in asked])
    images = model.sample(emb, num_steps=num_steps, guidance_scale=guidance_scale,
                          generator=torch.Generator(device=model.device).manual_seed(seed))
    got_c, got_s = judge.predict(images.float().cpu())
    return {"colour": sum(g == a for g, (a, _) in zip(got_c, asked)) / n,
            "shape": sum(g == a for g, (_, a) in zip(got_s, asked)) / n}
