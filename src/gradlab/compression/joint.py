"""Joint learning of codebooks and mappings on a layer's outputs (JLCM, arXiv 2309.17361, ingredients 2–3).

JLCM tunes the codebook values and the weight→codeword mapping together on calibration data, minimising the
layer's output reconstruction error (as gradient-based post-training quantisation does), with a modified
gradient for the (discrete) mapping that makes the search *proximal*: a weight may only move to nearby
codewords. **The paper does not publish its estimator**; this module implements our reading of it:

* each weight keeps the two codewords that bracket its float value, :math:`c^{lo}_{ri} \\le W_{ri} \\le c^{hi}_{ri}`
  (consecutive entries of its group's sorted codebook), and moves only between them:

  .. math:: \\hat W_{ri} = c^{lo}_{ri} + h(v_{ri})\\,(c^{hi}_{ri} - c^{lo}_{ri}),
            \\qquad h(v) = \\operatorname{clip}(1.2\\,\\sigma(v) - 0.1,\\, 0,\\, 1),

  with :math:`v` initialised so that :math:`\\hat W = W` (clipped at the outermost codewords);
* the objective on calibration inputs :math:`X` with float outputs :math:`Y = f(X; W)` is

  .. math:: L = \\frac{\\lVert f(X;\\hat W) - Y\\rVert^2}{\\lVert f(X;\\hat W_0) - Y\\rVert^2}
            + \\lambda\\,\\operatorname{mean}\\bigl(1 - |2h(v) - 1|^{\\beta}\\bigr),

  where :math:`\\hat W_0` is the nearest-codeword (k-means) mapping, so the reconstruction term is 1 at the
  initialisation whatever the layer's error level and :math:`\\lambda` has the same meaning in every layer;

  the regulariser switched on after a warm-up (fraction ``warmup`` of the steps) with :math:`\\beta` annealed
  linearly from ``beta[0]`` to ``beta[1]``, pushing every :math:`h` to 0 or 1;
* Adam updates :math:`v` (learning rate ``lr``) and the codebooks jointly (``codebook_lr`` relative to the
  layer's weight RMS; in the ``scales`` variant the shared codebook and the log-scales); the codebooks flow
  into :math:`\\hat W` through both bracketing codewords;
* for a Linear layer trained on the whole calibration set the loss is evaluated through the Gram matrix,
  :math:`\\lVert X\\hat W^\\top - XW^\\top\\rVert^2 = \\sum_r (\\hat W - W)_r X^\\top X (\\hat W - W)_r^\\top`
  (same value, an ``M × M`` instead of an ``N × R`` product); other layers call the layer itself;
* at the end the mapping is rounded, :math:`I_{ri} = hi_{ri}` if :math:`h(v_{ri}) \\ge 1/2` else :math:`lo_{ri}`.

An alternative latent-index straight-through estimator was measured worse in our research notes, hence this
bracketing relaxation (in the style of AdaRound's rectified sigmoid, applied between codewords).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call

from gradlab.compression.storage import row_groups
from gradlab.core.validation import check_int, check_positive, check_range

__all__ = ["JointConfig", "JointResult", "learn_codebooks_and_mappings", "relative_output_error"]


@dataclass(frozen=True)
class JointConfig:
    """Hyperparameters of :func:`learn_codebooks_and_mappings`.

    ``steps``, ``warmup`` and ``codebook_lr`` follow our research prototype (400 steps, 20 % warm-up, codebook
    lr 1e-4 for weights of RMS ~0.05). ``lr``, ``reg_weight`` and ``beta`` were set on synthetic layers (random
    Linear layers, correlated Gaussian inputs; ``tests/compression``), before any claim was run: with the
    prototype's unnormalised loss and ``λ = 1e-2`` most relaxed mappings were still undecided after 400 steps
    and the rounded result was worse than the initialisation.
    """

    steps: int = 400
    lr: float = 3e-2
    codebook_lr: float = 2e-3
    reg_weight: float = 4.0
    warmup: float = 0.2
    beta: tuple[float, float] = (8.0, 2.0)
    batch_size: int | None = None

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=0)
        check_positive("lr", self.lr)
        check_positive("codebook_lr", self.codebook_lr, allow_zero=True)
        check_positive("reg_weight", self.reg_weight, allow_zero=True)
        check_range("warmup", self.warmup, 0.0, 1.0, high_inclusive=False)
        if not isinstance(self.beta, (tuple, list)) or len(self.beta) != 2:
            raise TypeError(f"beta must be a pair (start, end); got {self.beta!r}")
        for i, b in enumerate(self.beta):
            check_positive(f"beta[{i}]", b)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)


@dataclass
class JointResult:
    """Learned mapping and tables of one layer, and the loss history."""

    indices: torch.Tensor
    codebooks: torch.Tensor
    scales: torch.Tensor | None
    losses: list[float] = field(default_factory=list)


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """:math:`h(v) = \\operatorname{clip}(1.2\\sigma(v) - 0.1, 0, 1)`."""
    return (1.2 * torch.sigmoid(v) - 0.1).clamp(0.0, 1.0)


def inverse_rectified_sigmoid(h: torch.Tensor) -> torch.Tensor:
    """A :math:`v` with :math:`h(v) = h` for :math:`h \\in [0, 1]` (finite at both ends)."""
    return torch.logit((h.clamp(0.0, 1.0) + 0.1) / 1.2)


def _layer_out(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return functional_call(layer, {"weight": weight}, (x,))


def relative_output_error(layer: nn.Module, weight: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                          chunk: int = 1024) -> float:
    """:math:`\\lVert f(X; \\hat W) - Y\\rVert / \\lVert Y \\rVert` for the layer with ``weight`` substituted."""
    num = den = 0.0
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            yb = y[i:i + chunk].to(torch.float64)
            num += float(((_layer_out(layer, weight, x[i:i + chunk]).to(torch.float64) - yb) ** 2).sum())
            den += float((yb ** 2).sum())
    return (num / den) ** 0.5 if den > 0 else float("nan") if num > 0 else 0.0


def learn_codebooks_and_mappings(layer: nn.Module, x: torch.Tensor, y: torch.Tensor, *, mode: str, groups: int,
                                 codebooks: torch.Tensor, scales: torch.Tensor | None = None,
                                 config: JointConfig = JointConfig(),
                                 generator: torch.Generator | None = None) -> JointResult:
    """Jointly learn one layer's codebooks and mapping (see the module docstring).

    Args:
        layer: the float Linear/Conv layer (its ``weight`` is the target :math:`W`, its other settings are used).
        x, y: calibration inputs of the layer and the float layer's outputs on them.
        mode: ``"codebooks"`` (``codebooks`` is ``(G, K)``) or ``"scales"`` (``codebooks`` is ``(K,)`` and
            ``scales`` ``(G,)``, positive); codebooks sorted ascending (as the initialisers return them).
        groups: number of contiguous row groups ``G``.
        config: :class:`JointConfig`.
        generator: for minibatch draws when ``config.batch_size`` is smaller than the calibration set.
    """
    w = layer.weight.detach()
    rows = w.shape[0]
    wf = w.reshape(rows, -1)
    dtype = wf.dtype
    g = row_groups(rows, groups, device=w.device)
    book = nn.Parameter(codebooks.detach().to(dtype).clone())
    if mode == "codebooks":
        log_s = None

        def table() -> torch.Tensor:
            return book[g]
        params = [{"params": [book], "lr": config.codebook_lr * float(wf.pow(2).mean().sqrt().clamp_min(1e-12))}]
    else:
        log_s = nn.Parameter(scales.detach().to(dtype).log())

        def table() -> torch.Tensor:
            return log_s.exp()[g, None] * book[None, :]
        params = [{"params": [book, log_s], "lr": config.codebook_lr}]

    with torch.no_grad():
        tab = table()
        k = tab.shape[1]
        lo = (torch.searchsorted(tab.contiguous(), wf.contiguous(), right=True) - 1).clamp(0, k - 2)
        hi = lo + 1
        c_lo, c_hi = torch.gather(tab, 1, lo), torch.gather(tab, 1, hi)
        gap = c_hi - c_lo
        h0 = torch.where(gap > 0, (wf - c_lo) / torch.where(gap > 0, gap, torch.ones_like(gap)),
                         torch.zeros_like(gap)).clamp(0.0, 1.0)
    v = nn.Parameter(inverse_rectified_sigmoid(h0))
    opt = torch.optim.Adam([{"params": [v], "lr": config.lr}] + params, foreach=True)
    n = x.shape[0]
    warm = int(round(config.warmup * config.steps))
    den_full = (y.to(torch.float64) ** 2).sum().clamp_min(1e-30).to(dtype)
    minibatch = config.batch_size is not None and config.batch_size < n
    gram = None
    if isinstance(layer, nn.Linear) and not minibatch and config.steps > 0:
        # ||X Ŵᵀ - X Wᵀ||² = Σ_r (Ŵ - W)_r (XᵀX) (Ŵ - W)_rᵀ: the same loss with an (M × M) instead of an (N × R) product
        xf = x.reshape(-1, x.shape[-1]).to(dtype)
        gram = xf.T @ xf
    with torch.no_grad():  # rec0: the loss of the nearest-codeword mapping, so that L(init) = 1 at any scale
        tab = table()
        near = torch.where((wf - torch.gather(tab, 1, lo)).abs() <= (torch.gather(tab, 1, hi) - wf).abs(),
                           torch.gather(tab, 1, lo), torch.gather(tab, 1, hi))
        if gram is not None:
            d = near - wf
            rec0 = ((d @ gram) * d).sum() / den_full
        else:
            rec0 = relative_output_error(layer, near.view_as(w), x, y) ** 2 * torch.ones((), dtype=dtype,
                                                                                       device=w.device)
    den_full = den_full * rec0.clamp_min(1e-30)
    losses = []
    for t in range(config.steps):
        if minibatch:
            sel = torch.randint(n, (config.batch_size,), generator=generator,
                                device=generator.device if generator is not None else "cpu").to(x.device)
            xb, yb = x[sel], y[sel]
            den = (yb ** 2).sum().clamp_min(1e-30) * rec0.clamp_min(1e-30)
        else:
            xb, yb, den = x, y, den_full
        tab = table()
        c_lo, c_hi = torch.gather(tab, 1, lo), torch.gather(tab, 1, hi)
        h = rectified_sigmoid(v)
        w_hat = c_lo + h * (c_hi - c_lo)
        if gram is not None:
            delta = w_hat - wf
            loss = ((delta @ gram) * delta).sum() / den
        else:
            loss = ((_layer_out(layer, w_hat.view_as(w), xb) - yb) ** 2).sum() / den
        if t >= warm and config.reg_weight > 0:
            frac = (t - warm) / max(1, config.steps - warm)
            beta = config.beta[1] + (config.beta[0] - config.beta[1]) * (1.0 - frac)
            loss = loss + config.reg_weight * (1.0 - (2.0 * h - 1.0).abs().pow(beta)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
    with torch.no_grad():
        idx = torch.where(rectified_sigmoid(v) >= 0.5, hi, lo).view_as(w)
    out_scales = None if log_s is None else log_s.detach().exp()
    return JointResult(indices=idx, codebooks=book.detach(), scales=out_scales,
                       losses=[float(s) for s in torch.stack(losses).tolist()] if losses else [])
