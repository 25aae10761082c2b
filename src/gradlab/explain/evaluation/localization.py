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

``valid_mask`` (same shapes as ``mask``) restricts every score to the pixels where it is true, e.g. the head in a
brain image: pixels outside it are neither signal nor background. Without it, an attribution that only knows where
the image is non-zero already beats chance (issue 9: a head silhouette scores pixel AUROC 0.75 on a full 32x32
frame, 0.5 within the head). With ``valid_mask = V`` and ground truth ``M`` the scores are the same formulas on the
pixels of ``V``: mass ``sum_{M & V} |a| / sum_V |a|``, AUROC of ``M`` against ``V`` minus ``M``, the pointing game's argmax
over ``V``, chance mass ``|M & V| / |V|``. ``M`` outside ``V`` is ignored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradlab.core import check_choice, check_int, check_tensor
from gradlab.explain._common import check_binary_mask, check_bool

__all__ = ["attribution_mass_in_mask", "mask_fraction", "pixel_auroc", "pointing_game"]


def _as_mask(name: str, mask: torch.Tensor, a: torch.Tensor, reduce_channels: str | None) -> torch.Tensor:
    """A boolean mask broadcast to the (possibly channel-reduced) attributions ``a``; same batch size required."""
    m = check_binary_mask(name, mask.detach()).to(a.device)
    if m.ndim == 0 or m.shape[0] != a.shape[0]:
        raise ValueError(f"{name} must have one mask per attribution map (batch size {a.shape[0]}); got shape "
                         f"{tuple(mask.shape)}")
    if m.ndim == a.ndim - 1 and a.ndim == 4:
        m = m.unsqueeze(1)
    if reduce_channels == "sum" and m.ndim == 4 and m.shape[1] != 1:
        m = m.any(dim=1, keepdim=True)
    try:
        return m.expand_as(a)
    except RuntimeError as exc:
        raise ValueError(f"{name} of shape {tuple(mask.shape)} cannot be broadcast to attributions of shape "
                         f"{tuple(a.shape)}") from exc


def _prepare(attributions: torch.Tensor, mask: torch.Tensor, absolute: bool, reduce_channels: str | None,
             valid_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return per-sample flattened scores, ground-truth masks and valid masks, each of shape ``(n, d)``.

    The ground truth is restricted to the valid pixels (``M & V``); a sample without valid pixels is an error.
    """
    check_tensor("attributions", attributions, floating=True, finite=True)
    check_tensor("mask", mask)
    check_bool("absolute", absolute)
    if valid_mask is not None:
        check_tensor("valid_mask", valid_mask)
    if attributions.ndim < 2:
        raise ValueError(f"attributions must have a batch dimension; got shape {tuple(attributions.shape)}")
    if attributions.shape[0] == 0:
        raise ValueError(f"attributions has an empty batch dimension (shape {tuple(attributions.shape)})")
    if reduce_channels is not None:
        check_choice("reduce_channels", reduce_channels, ["sum"])
    a = attributions.detach().abs() if absolute else attributions.detach()
    if reduce_channels == "sum":
        if a.ndim != 4:
            raise ValueError("reduce_channels='sum' needs attributions of shape (n, C, H, W)")
        a = a.sum(dim=1, keepdim=True)
    n = a.shape[0]
    m = _as_mask("mask", mask, a, reduce_channels).reshape(n, -1)
    if valid_mask is None:
        v = torch.ones_like(m)
    else:
        v = _as_mask("valid_mask", valid_mask, a, reduce_channels).reshape(n, -1)
        empty = (~v.any(dim=1)).nonzero().flatten()
        if len(empty):
            raise ValueError(f"valid_mask selects no pixel in sample(s) {empty.tolist()[:5]}")
    return a.reshape(n, -1), m & v, v


def attribution_mass_in_mask(attributions: torch.Tensor, mask: torch.Tensor, absolute: bool = True,
                             reduce_channels: str | None = None,
                             valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample fraction of attribution mass inside the ground-truth mask, ``sum_M |a| / sum |a|``.

    With ``absolute=False`` signed attributions are used (the ratio may then leave [0, 1]). A sample whose
    attributions are all zero (on the valid pixels) has an undefined ratio and gets NaN. ``valid_mask`` restricts
    both sums to its pixels.
    """
    a, m, v = _prepare(attributions, mask, absolute, reduce_channels, valid_mask)
    a = a * v
    total = a.sum(dim=1)
    inside = (a * m).sum(dim=1)
    return torch.where(total != 0, inside / torch.where(total != 0, total, torch.ones_like(total)),
                       torch.full_like(total, float("nan")))


def pixel_auroc(attributions: torch.Tensor, mask: torch.Tensor, absolute: bool = True,
                reduce_channels: str | None = None, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample AUROC of the attribution scores for separating mask pixels from the rest (ties count 1/2).

    Computed from average ranks (Mann-Whitney U): ``AUROC = (R_M - |M|(|M|+1)/2) / (|M| (d - |M|))`` with
    ``R_M`` the rank sum of the mask pixels and ``d`` the number of (valid) pixels. With ``valid_mask`` only its
    pixels are ranked: the others are given the score ``-inf`` so they take the lowest ranks, and each valid
    pixel's rank among the valid ones is its rank minus the number of invalid pixels. Raises ``ValueError`` if a
    mask (within the valid pixels) is empty or covers every valid pixel.
    """
    from scipy.stats import rankdata

    a, m, v = _prepare(attributions, mask, absolute, reduce_channels, valid_mask)
    n_pos = m.sum(dim=1)
    d = v.sum(dim=1)
    bad = ((n_pos == 0) | (n_pos == d)).nonzero().flatten()
    if len(bad):
        raise ValueError(f"pixel_auroc needs masks with both signal and background pixels; sample(s) "
                         f"{bad.tolist()[:5]} have {'none' if int(n_pos[bad[0]]) == 0 else 'only'} signal pixels"
                         + (" within valid_mask" if valid_mask is not None else ""))
    scores = torch.where(v, a, torch.full_like(a, -float("inf"))).cpu().double().numpy()
    n_invalid = (v.shape[1] - d).cpu().double()
    ranks = torch.as_tensor(rankdata(scores, method="average", axis=1), dtype=torch.float64) - n_invalid[:, None]
    mm = m.cpu()
    pos = n_pos.cpu().double()
    dd = d.cpu().double()
    rank_sum = (ranks * mm).sum(dim=1)
    auc = (rank_sum - pos * (pos + 1) / 2) / (pos * (dd - pos))
    return auc.to(device=attributions.device, dtype=attributions.dtype)


def pointing_game(attributions: torch.Tensor, mask: torch.Tensor, tolerance: int = 0, absolute: bool = True,
                  reduce_channels: str | None = None, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample hit (1.0) or miss (0.0): is the largest attribution inside the mask?

    ``tolerance`` dilates the mask by that many pixels (square neighbourhood, for ``(n, C, H, W)`` inputs) as
    in the original pointing game's 15-pixel tolerance. Among tied maxima the first in raster order counts.
    With ``valid_mask`` the maximum is taken over its pixels only.
    """
    check_int("tolerance", tolerance, minimum=0)
    a, m, v = _prepare(attributions, mask, absolute, reduce_channels, valid_mask)
    a = torch.where(v, a, torch.full_like(a, -float("inf")))
    if tolerance > 0:
        shape = attributions.shape if reduce_channels is None else (attributions.shape[0], 1, *attributions.shape[2:])
        if len(shape) != 4:
            raise ValueError("tolerance > 0 needs attributions of shape (n, C, H, W)")
        grid = m.reshape(shape).float()
        grid = F.max_pool2d(grid, kernel_size=2 * tolerance + 1, stride=1, padding=tolerance)
        m = grid.reshape(shape[0], -1) > 0
    idx = a.argmax(dim=1, keepdim=True)
    return m.gather(1, idx).squeeze(1).to(attributions.dtype)


def mask_fraction(mask: torch.Tensor, valid_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample fraction of pixels in the mask: the mass in the mask of a uniform attribution (chance level).

    With ``valid_mask`` (same shape as ``mask``, or broadcastable to it): ``|M & V| / |V|``.
    """
    check_tensor("mask", mask)
    if mask.ndim < 2 or mask.shape[0] == 0:
        raise ValueError(f"mask must have a (non-empty) batch dimension; got shape {tuple(mask.shape)}")
    m = check_binary_mask("mask", mask.detach())
    if valid_mask is None:
        return m.float().reshape(m.shape[0], -1).mean(dim=1)
    check_tensor("valid_mask", valid_mask)
    try:
        v = check_binary_mask("valid_mask", valid_mask.detach()).to(m.device).expand_as(m)
    except RuntimeError as exc:
        raise ValueError(f"valid_mask of shape {tuple(valid_mask.shape)} cannot be broadcast to mask of shape "
                         f"{tuple(mask.shape)}") from exc
    n = m.shape[0]
    count = v.reshape(n, -1).sum(dim=1)
    if bool((count == 0).any()):
        raise ValueError(f"valid_mask selects no pixel in sample(s) {(count == 0).nonzero().flatten().tolist()[:5]}")
    return (m & v).reshape(n, -1).sum(dim=1).float() / count.float()
