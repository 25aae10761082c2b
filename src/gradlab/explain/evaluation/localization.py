"""Localisation of attributions against ground-truth masks of the signal.

For an attribution map ``a`` of one input and a boolean ground-truth mask ``M`` (the pixels that carry the
signal), three scores, each returned per sample:

* **attribution mass in the mask** (relevance mass accuracy, Arras et al. 2022):
  ``sum_{i in M} |a_i| / sum_i |a_i|``; chance level is ``|M| / d`` for an attribution that ignores the signal.
* **pixel AUROC**: the area under the ROC curve of ``|a_i|`` as a score for ``i in M``, i.e. the probability
  that a random signal pixel gets a larger score than a random background pixel (ties count one half,
  Mann-Whitney U). Chance is 0.5. Used by Siegel et al. (arXiv 2508.02560) style known-signal validation.
* **pointing game** (Zhang et al. 2018): 1 if the pixel with the largest score lies in ``M`` (optionally
  dilated by ``tolerance`` pixels), else 0.

Attributions of shape ``(n, C, H, W)`` may be scored against masks ``(n, 1, H, W)`` or ``(n, H, W)``: the
mask is broadcast over the channels, so every channel value counts as one score (``reduce_channels="sum"``
instead sums ``|a|`` over channels first, the common choice for RGB saliency maps).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradlab.core import check_choice, check_int, check_tensor

__all__ = ["attribution_mass_in_mask", "mask_fraction", "pixel_auroc", "pointing_game"]


def _prepare(attributions: torch.Tensor, mask: torch.Tensor, absolute: bool,
             reduce_channels: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return per-sample flattened scores and boolean masks of equal shape ``(n, d)``."""
    check_tensor("attributions", attributions, floating=True, finite=True)
    check_tensor("mask", mask)
    if attributions.ndim < 2:
        raise ValueError(f"attributions must have a batch dimension; got shape {tuple(attributions.shape)}")
    if reduce_channels is not None:
        check_choice("reduce_channels", reduce_channels, ["sum"])
    a = attributions.detach().abs() if absolute else attributions.detach()
    m = mask.detach().to(attributions.device).bool()
    if m.ndim == a.ndim - 1 and a.ndim == 4:
        m = m.unsqueeze(1)
    if reduce_channels == "sum":
        if a.ndim != 4:
            raise ValueError("reduce_channels='sum' needs attributions of shape (n, C, H, W)")
        a = a.sum(dim=1, keepdim=True)
        if m.ndim == 4 and m.shape[1] != 1:
            m = m.any(dim=1, keepdim=True)
    try:
        m = m.expand_as(a)
    except RuntimeError as exc:
        raise ValueError(f"mask of shape {tuple(mask.shape)} cannot be broadcast to attributions of shape "
                         f"{tuple(a.shape)}") from exc
    n = a.shape[0]
    return a.reshape(n, -1), m.reshape(n, -1)


def attribution_mass_in_mask(attributions: torch.Tensor, mask: torch.Tensor, absolute: bool = True,
                             reduce_channels: str | None = None) -> torch.Tensor:
    """Per-sample fraction of attribution mass inside the ground-truth mask, ``sum_M |a| / sum |a|``.

    With ``absolute=False`` signed attributions are used (the ratio may then leave [0, 1]). A sample whose
    attributions are all zero has an undefined ratio and gets NaN.
    """
    a, m = _prepare(attributions, mask, absolute, reduce_channels)
    total = a.sum(dim=1)
    inside = (a * m).sum(dim=1)
    return torch.where(total != 0, inside / torch.where(total != 0, total, torch.ones_like(total)),
                       torch.full_like(total, float("nan")))


def pixel_auroc(attributions: torch.Tensor, mask: torch.Tensor, absolute: bool = True,
                reduce_channels: str | None = None) -> torch.Tensor:
    """Per-sample AUROC of the attribution scores for separating mask pixels from the rest (ties count 1/2).

    Computed from average ranks (Mann-Whitney U): ``AUROC = (R_M - |M|(|M|+1)/2) / (|M| (d - |M|))`` with
    ``R_M`` the rank sum of the mask pixels. Raises ``ValueError`` if a mask is empty or covers every pixel.
    """
    from scipy.stats import rankdata

    a, m = _prepare(attributions, mask, absolute, reduce_channels)
    n_pos = m.sum(dim=1)
    d = m.shape[1]
    bad = ((n_pos == 0) | (n_pos == d)).nonzero().flatten()
    if len(bad):
        raise ValueError(f"pixel_auroc needs masks with both signal and background pixels; sample(s) "
                         f"{bad.tolist()[:5]} have {'none' if int(n_pos[bad[0]]) == 0 else 'only'} signal pixels")
    ranks = torch.as_tensor(rankdata(a.cpu().double().numpy(), method="average", axis=1), dtype=torch.float64)
    mm = m.cpu()
    pos = n_pos.cpu().double()
    rank_sum = (ranks * mm).sum(dim=1)
    auc = (rank_sum - pos * (pos + 1) / 2) / (pos * (d - pos))
    return auc.to(device=attributions.device, dtype=attributions.dtype)


def pointing_game(attributions: torch.Tensor, mask: torch.Tensor, tolerance: int = 0, absolute: bool = True,
                  reduce_channels: str | None = None) -> torch.Tensor:
    """Per-sample hit (1.0) or miss (0.0): is the largest attribution inside the mask?

    ``tolerance`` dilates the mask by that many pixels (square neighbourhood, for ``(n, C, H, W)`` inputs) as
    in the original pointing game's 15-pixel tolerance. Among tied maxima the first in raster order counts.
    """
    check_int("tolerance", tolerance, minimum=0)
    a, m = _prepare(attributions, mask, absolute, reduce_channels)
    if tolerance > 0:
        shape = attributions.shape if reduce_channels is None else (attributions.shape[0], 1, *attributions.shape[2:])
        if len(shape) != 4:
            raise ValueError("tolerance > 0 needs attributions of shape (n, C, H, W)")
        grid = m.reshape(shape).float()
        grid = F.max_pool2d(grid, kernel_size=2 * tolerance + 1, stride=1, padding=tolerance)
        m = grid.reshape(shape[0], -1) > 0
    idx = a.argmax(dim=1, keepdim=True)
    return m.gather(1, idx).squeeze(1).to(attributions.dtype)


def mask_fraction(mask: torch.Tensor) -> torch.Tensor:
    """Per-sample fraction of pixels in the mask: the mass in the mask of a uniform attribution (chance level)."""
    check_tensor("mask", mask)
    if mask.ndim < 2:
        raise ValueError(f"mask must have a batch dimension; got shape {tuple(mask.shape)}")
    return mask.detach().float().reshape(mask.shape[0], -1).mean(dim=1)
