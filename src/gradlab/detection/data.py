"""Synthetic detection scenes: 1..``max_objects`` axis-aligned coloured rectangles on a noisy grey background.

Class ``k`` has a fixed hue (0 red, 1 blue, 2 green, 3 yellow, ...) with per-object brightness jitter; boxes do
not overlap (one pixel gap), so every box is fully visible. Generated on CPU from a seed, fully vectorised over
scenes; used by the YOLOv9 claims and tests (research notes §5d).
"""

from __future__ import annotations

import torch

from gradlab.core.validation import check_int

_COLOURS = torch.tensor([[0.9, 0.15, 0.1], [0.1, 0.25, 0.9], [0.1, 0.8, 0.2], [0.9, 0.85, 0.1],
                         [0.8, 0.2, 0.8], [0.1, 0.8, 0.8]])


def make_rectangle_scenes(n: int, seed: int, size: int = 64, max_objects: int = 3, num_classes: int = 2,
                          min_side: int = 8, max_side: int | None = None, candidates: int = 24
                          ) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """``n`` scenes ``(n, 3, size, size)`` in [0, 1] and targets ``[{"boxes": (k, 4) xyxy pixels, "labels": (k,)}]``.

    Args:
        n: number of scenes. seed: generator seed (same seed, same scenes).
        size: image side in pixels. max_objects: each scene holds ``randint(1, max_objects)`` rectangles (fewer
            only if no non-overlapping place was found among ``candidates`` draws).
        num_classes: 1..6 colours. min_side, max_side: rectangle side range in pixels (default ``size // 2``).
    """
    check_int("n", n, minimum=1)
    check_int("seed", seed)
    check_int("size", size, minimum=8)
    check_int("max_objects", max_objects, minimum=1)
    check_int("num_classes", num_classes, minimum=1, maximum=len(_COLOURS))
    max_side = size // 2 if max_side is None else max_side
    check_int("min_side", min_side, minimum=2, maximum=size)
    check_int("max_side", max_side, minimum=min_side, maximum=size)
    check_int("candidates", candidates, minimum=1)
    g = torch.Generator().manual_seed(seed)
    base = 0.15 + 0.35 * torch.rand(n, 1, 1, 1, generator=g)
    images = (base + 0.04 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)
    want = torch.randint(1, max_objects + 1, (n,), generator=g)
    placed = torch.zeros(n, 0, 4)
    placed_ok = torch.zeros(n, 0, dtype=torch.bool)
    labels = torch.zeros(n, 0, dtype=torch.long)
    grid = torch.arange(size, dtype=torch.float)
    for k in range(max_objects):
        wh = torch.randint(min_side, max_side + 1, (n, candidates, 2), generator=g).float()
        xy = torch.rand(n, candidates, 2, generator=g) * (size - wh + 1)
        xy = xy.floor()
        cand = torch.cat((xy, xy + wh), -1)  # (n, C, 4)
        if placed.shape[1]:
            a, p = cand[:, :, None, :], placed[:, None, :, :]
            sep = ((a[..., 0] >= p[..., 2] + 1) | (p[..., 0] >= a[..., 2] + 1)
                   | (a[..., 1] >= p[..., 3] + 1) | (p[..., 1] >= a[..., 3] + 1))
            free = (sep | ~placed_ok[:, None, :]).all(-1)  # (n, C)
        else:
            free = torch.ones(n, candidates, dtype=torch.bool)
        has = free.any(1) & (want > k)
        first = free.float().argmax(1)
        box = cand[torch.arange(n), first]  # (n, 4)
        cls = torch.randint(0, num_classes, (n,), generator=g)
        colour = (_COLOURS[cls] * (0.85 + 0.3 * torch.rand(n, 1, generator=g))).clamp(0, 1)
        inside = ((grid[None, None, :] >= box[:, 0, None, None]) & (grid[None, None, :] < box[:, 2, None, None])
                  & (grid[None, :, None] >= box[:, 1, None, None]) & (grid[None, :, None] < box[:, 3, None, None]))
        inside &= has[:, None, None]
        images = torch.where(inside[:, None], colour[:, :, None, None], images)
        placed = torch.cat((placed, box[:, None]), 1)
        placed_ok = torch.cat((placed_ok, has[:, None]), 1)
        labels = torch.cat((labels, cls[:, None]), 1)
    targets = [{"boxes": placed[i][placed_ok[i]].clone(), "labels": labels[i][placed_ok[i]].clone()} for i in range(n)]
    return images.contiguous(), targets
