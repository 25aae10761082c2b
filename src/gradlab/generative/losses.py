r"""SSIM, MS-SSIM and the MS-SSIM training loss of "Learning to Generate Images with Perceptual Similarity
Metrics" (Snell et al., arXiv 1511.06409), which trains image generators with :math:`1 - \text{MS-SSIM}` instead of
a pixel loss.

SSIM (Wang, Bovik, Sheikh & Simoncelli 2004) with a Gaussian window :math:`w` (``win_size`` taps, standard
deviation ``win_sigma``; 11 and 1.5 by default), applied as a separable *valid* convolution (no padding), per
channel:

.. math::
    \mu_x = w * x,\quad \sigma_x^2 = w * x^2 - \mu_x^2,\quad \sigma_{xy} = w * (xy) - \mu_x \mu_y,

    l = \frac{2\mu_x\mu_y + C_1}{\mu_x^2 + \mu_y^2 + C_1},\quad
    cs = \frac{2\sigma_{xy} + C_2}{\sigma_x^2 + \sigma_y^2 + C_2},\quad C_i = (K_i L)^2,

with :math:`L` = ``data_range``, :math:`K_1 = 0.01`, :math:`K_2 = 0.03`; SSIM is the mean of :math:`l \cdot cs`
over the window positions (and cs likewise).

MS-SSIM (Wang, Simoncelli & Bovik 2003) over :math:`M` = ``levels`` scales, 2x2 average pooling between scales:

.. math::
    \text{MS-SSIM} = \text{SSIM}_M^{\beta_M} \prod_{j=1}^{M-1} \operatorname{relu}(cs_j)^{\beta_j},

with :math:`\beta = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)` for :math:`M = 5`; for fewer levels the first
:math:`M` weights are renormalised to sum to 1 (three levels for 32x32 images with a 7-tap window). The ReLU on cs
(and on the coarsest SSIM) keeps fractional powers of negative numbers (NaN) out. The pooling pads odd sizes by
one pixel (zero-padded averages, the convention of ``pytorch_msssim``), so sizes halve rounding up and the valid
convolution at the coarsest scale needs each side to be at least :math:`(\text{win\_size} - 1) 2^{M-1} + 1`
(161 for the defaults, 25 for three levels of a 7-tap window); smaller images raise ``ValueError`` naming both.

Images are ``(batch, channels, height, width)`` tensors of any floating dtype and device; values per channel are
averaged (colour images are treated channel by channel). Nothing here imports diffusers.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_choice, check_int, check_positive, check_tensor

__all__ = ["MS_SSIM_WEIGHTS", "gaussian_window", "min_image_size", "ssim", "ms_ssim", "MSSSIMLoss"]

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""Wang, Simoncelli & Bovik's exponents for five scales, finest first."""


def gaussian_window(win_size: int = 11, win_sigma: float = 1.5, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Normalised 1-D Gaussian taps :math:`w_i \\propto \\exp(-(i - (n-1)/2)^2 / 2\\sigma^2)`, ``i = 0..n-1``."""
    n = _check_win(win_size)
    sigma = check_positive("win_sigma", win_sigma)
    coords = torch.arange(n, dtype=torch.float64, device=device) - (n - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return (g / g.sum()).to(dtype)


def min_image_size(levels: int = 5, win_size: int = 11) -> int:
    """Smallest side length for which every one of ``levels`` scales holds one ``win_size`` valid window."""
    check_int("levels", levels, minimum=1)
    return (_check_win(win_size) - 1) * 2 ** (levels - 1) + 1


def _check_win(win_size: int) -> int:
    n = check_int("win_size", win_size, minimum=1)
    if n % 2 == 0:
        raise ValueError(f"win_size must be odd; got {n}")
    return n


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    check_tensor("x", x, ndim=4, floating=True)
    check_tensor("y", y, ndim=4, floating=True)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape; got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.dtype != y.dtype or x.device != y.device:
        raise TypeError(f"x and y must share dtype and device; got {x.dtype}/{x.device} and {y.dtype}/{y.device}")
    for name, t in (("x", x), ("y", y)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf")


def _check_size(x: torch.Tensor, levels: int, win_size: int, what: str) -> None:
    need = min_image_size(levels, win_size)
    h, w = x.shape[-2:]
    if min(h, w) < need:
        raise ValueError(
            f"image size {h}x{w} is too small for {what} with levels={levels} and win_size={win_size}: "
            f"each side must be at least {need} (= (win_size - 1) * 2**(levels - 1) + 1)"
        )


def _blur_valid(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid convolution of every channel of ``z`` (N, C, H, W) with the 1-D window ``g``."""
    c = z.shape[1]
    n = g.numel()
    z = F.conv2d(z, g.view(1, 1, 1, n).expand(c, 1, 1, n), groups=c)
    return F.conv2d(z, g.view(1, 1, n, 1).expand(c, 1, n, 1), groups=c)


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, data_range: float, k1: float,
             k2: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel SSIM and cs, each (N, C): means of the maps l*cs and cs over the valid window positions."""
    c = x.shape[1]
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    stats = _blur_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), g)
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(c, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    cs_map = (2.0 * cov + c2) / (var_x + var_y + c2)
    lum = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return (lum * cs_map).flatten(2).mean(-1), cs_map.flatten(2).mean(-1)


def _reduce(per_image: torch.Tensor, reduction: str) -> torch.Tensor:
    return per_image.mean() if reduction == "mean" else per_image


def _check_common(data_range: float, win_sigma: float, k1: float, k2: float, reduction: str) -> float:
    dr = check_positive("data_range", data_range)
    check_positive("win_sigma", win_sigma)
    check_positive("k1", k1)
    check_positive("k2", k2)
    check_choice("reduction", reduction, ("mean", "none"))
    return dr


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, win_size: int = 11, win_sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03, reduction: str = "mean") -> torch.Tensor:
    """Mean SSIM of ``x`` and ``y`` (N, C, H, W): a scalar (``reduction="mean"``) or one value per image
    (``"none"``, averaged over channels and window positions). Sides must be at least ``win_size``."""
    dr = _check_common(data_range, win_sigma, k1, k2, reduction)
    _check_pair(x, y)
    win = _check_win(win_size)
    _check_size(x, 1, win, "ssim")
    g = gaussian_window(win, win_sigma, dtype=x.dtype, device=x.device)
    s, _ = _ssim_cs(x, y, g, dr, k1, k2)
    return _reduce(s.mean(1), reduction)


def _resolve_weights(levels: int | None, weights: Sequence[float] | torch.Tensor | None) -> list[float]:
    if weights is None:
        m = 5 if levels is None else check_int("levels", levels, minimum=1, maximum=len(MS_SSIM_WEIGHTS))
        w = list(MS_SSIM_WEIGHTS[:m])
        if m < len(MS_SSIM_WEIGHTS):
            total = sum(w)
            w = [v / total for v in w]
        return w
    w = [float(v) for v in (weights.tolist() if isinstance(weights, torch.Tensor) else weights)]
    if not w or any(not math.isfinite(v) or v < 0 for v in w):
        raise ValueError(f"weights must be a non-empty sequence of finite non-negative numbers; got {w}")
    if levels is not None and check_int("levels", levels, minimum=1) != len(w):
        raise ValueError(f"levels ({levels}) must equal len(weights) ({len(w)}) when both are given")
    return w


def ms_ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, win_size: int = 11, win_sigma: float = 1.5,
            levels: int | None = None, weights: Sequence[float] | torch.Tensor | None = None, k1: float = 0.01,
            k2: float = 0.03, reduction: str = "mean") -> torch.Tensor:
    """Multi-scale SSIM of ``x`` and ``y`` (N, C, H, W); see the module docstring for the formula.

    Args:
        levels: number of scales (default 5); the first ``levels`` standard weights are renormalised to sum 1
            when ``levels < 5``.
        weights: explicit per-scale exponents, finest first (used as given; ``levels`` then defaults to their
            number).
        reduction: ``"mean"`` (scalar) or ``"none"`` (one value per image, channels averaged).
    """
    dr = _check_common(data_range, win_sigma, k1, k2, reduction)
    _check_pair(x, y)
    win = _check_win(win_size)
    w = _resolve_weights(levels, weights)
    m = len(w)
    _check_size(x, m, win, "ms_ssim")
    g = gaussian_window(win, win_sigma, dtype=x.dtype, device=x.device)
    factors = []
    for j in range(m):
        s, cs = _ssim_cs(x, y, g, dr, k1, k2)
        if j < m - 1:
            factors.append(torch.relu(cs))
            pad = [x.shape[-2] % 2, x.shape[-1] % 2]
            x = F.avg_pool2d(x, kernel_size=2, padding=pad)
            y = F.avg_pool2d(y, kernel_size=2, padding=pad)
        else:
            factors.append(torch.relu(s))
    stacked = torch.stack(factors, dim=0)  # (levels, N, C)
    exps = torch.tensor(w, dtype=stacked.dtype, device=stacked.device).view(-1, 1, 1)
    value = torch.prod(stacked**exps, dim=0)  # (N, C)
    return _reduce(value.mean(1), reduction)


class MSSSIMLoss(nn.Module):
    """``1 - MS-SSIM(input, target)``, the training loss of Snell et al. (arXiv 1511.06409).

    ``MSSSIMLoss(levels=3, win_size=7)`` suits 32x32 images (at least 25 pixels per side). The reduction over
    images is ``"mean"`` (default), ``"sum"`` or ``"none"``.
    """

    def __init__(self, data_range: float = 1.0, win_size: int = 11, win_sigma: float = 1.5,
                 levels: int | None = None, weights: Sequence[float] | None = None, k1: float = 0.01,
                 k2: float = 0.03, reduction: str = "mean") -> None:
        super().__init__()
        _check_common(data_range, win_sigma, k1, k2, "none")
        check_choice("reduction", reduction, ("mean", "sum", "none"))
        self.weights = _resolve_weights(levels, weights)
        self.levels = len(self.weights)
        self.win_size = _check_win(win_size)
        self.data_range = float(data_range)
        self.win_sigma = float(win_sigma)
        self.k1, self.k2 = float(k1), float(k2)
        self.reduction = reduction

    @property
    def min_size(self) -> int:
        """Smallest image side this loss accepts."""
        return min_image_size(self.levels, self.win_size)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torch's name
        per_image = 1.0 - ms_ssim(input, target, data_range=self.data_range, win_size=self.win_size,
                                  win_sigma=self.win_sigma, weights=self.weights, k1=self.k1, k2=self.k2,
                                  reduction="none")
        if self.reduction == "mean":
            return per_image.mean()
        if self.reduction == "sum":
            return per_image.sum()
        return per_image

    def extra_repr(self) -> str:
        return (f"levels={self.levels}, win_size={self.win_size}, win_sigma={self.win_sigma}, "
                f"data_range={self.data_range}, reduction={self.reduction!r}")
