r"""NoProp-DT: blocks trained by local denoising losses, with no gradient or forward pass crossing blocks
(Li, Teh, Pascanu, "NoProp: Training Neural Networks without Back-propagation or Forward-propagation",
arXiv 2503.24322).

Notation (discrete time, :math:`t = 0..T`, :math:`z_T` nearly clean):

* class embedding :math:`u_y = W_{Embed}[y]`; noising marginals
  :math:`q(z_t \mid y) = \mathcal N(\sqrt{\bar\alpha_t}\, u_y, (1 - \bar\alpha_t) I)` with :math:`\bar\alpha`
  strictly increasing, default :math:`\bar\alpha_t = 0.999 \cos^2(\tfrac{\pi}{2}(1 - t/T))`, :math:`\bar\alpha_0 = 0`;
  :math:`\mathrm{SNR}(t) = \bar\alpha_t / (1 - \bar\alpha_t)`, :math:`\alpha_{t-1} = \bar\alpha_{t-1}/\bar\alpha_t`.
* block :math:`t` (own parameters :math:`\theta_t`) predicts the clean embedding
  :math:`\hat u_t(z_{t-1}, x) = \mathrm{softmax}(\mathrm{logits}_{\theta_t}(x, z_{t-1}))\, W_{Embed}`.
* loss (the paper's Eq. 8), with every :math:`z_{t-1}` drawn from :math:`q(\cdot \mid y)` so nothing crosses
  blocks:

  .. math::
     L = \mathbb E_{q(z_T|y)}[-\log \hat p_{out}(y \mid z_T)] + \mathrm{KL}(q(z_0|y) \,\|\, \mathcal N(0, I))
       + \tfrac{T}{2}\eta\, \mathbb E_{t \sim U\{1..T\}} \mathbb E_{q(z_{t-1}|y)}
         [(\mathrm{SNR}(t) - \mathrm{SNR}(t-1)) \|\hat u_t - u_y\|^2]

  The expectation over :math:`t` is taken exactly (all :math:`T` blocks per batch), so block :math:`t` carries
  :math:`\tfrac{\eta}{2} (\mathrm{SNR}(t) - \mathrm{SNR}(t-1)) \|\hat u_t - u_y\|^2` (batch mean). The head
  :math:`\hat p_{out}(y \mid z) = \mathrm{softmax}(W_{out} z + b_{out})` sees :math:`z_T \sim q(z_T|y)`.
* inference (Eq. 3 with :math:`u_y` replaced by :math:`\hat u_t`, the Gaussian posterior
  :math:`q(z_t \mid z_{t-1}, y)`): :math:`z_t = a_t \hat u_t + b_t z_{t-1} + \sqrt{c_t}\,\epsilon`,
  :math:`a_t = \sqrt{\bar\alpha_t}(1 - \alpha_{t-1})/(1 - \bar\alpha_{t-1})`,
  :math:`b_t = \sqrt{\alpha_{t-1}}(1 - \bar\alpha_t)/(1 - \bar\alpha_{t-1})`,
  :math:`c_t = (1 - \bar\alpha_t)(1 - \alpha_{t-1})/(1 - \bar\alpha_{t-1})`; the prediction is
  :math:`\arg\max \hat p_{out}(y \mid z_T)`. With ``noise=False`` the :math:`\sqrt{c_t}\epsilon` terms are dropped and
  :math:`z_0 = 0` (the mean of :math:`\mathcal N(0, I)`).

Choices pinned to the paper (re-implementations drift): blocks predict :math:`u_y` (not the noise), the
classification term is cross-entropy on the head applied to :math:`z_T` (not on the blocks' logits), and inference
mixes :math:`\hat u_t` and :math:`z_{t-1}` by :math:`a_t, b_t, c_t`. The blocks are MLPs (the paper's image path is
a CNN). :meth:`NoPropDT.backprop_step` trains the same chain end to end (cross-entropy on the deterministic
inference output), the backprop baseline.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from gradlab.core.validation import check_choice, check_int, check_positive, check_tensor, check_type
from gradlab.training.saved_memory import saved_tensor_bytes

__all__ = ["NoPropDT", "NoPropMLPBlock", "cosine_alpha_bar", "check_alpha_bar", "posterior_coefficients"]

ALPHA_BAR_MAX = 0.999


def cosine_alpha_bar(T: int, max_alpha: float = ALPHA_BAR_MAX, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r""":math:`\bar\alpha_t = m \cos^2(\tfrac{\pi}{2}(1 - t/T))` for :math:`t = 0..T` (``m = max_alpha``), with
    :math:`\bar\alpha_0 = 0` exactly."""
    T = check_int("T", T, minimum=1)
    m = check_positive("max_alpha", max_alpha)
    if m > ALPHA_BAR_MAX:
        raise ValueError(f"max_alpha must be <= {ALPHA_BAR_MAX} (SNR(T) explodes as alpha_bar_T -> 1); got {m}")
    t = torch.arange(T + 1, dtype=torch.float64)
    ab = m * torch.cos(0.5 * math.pi * (1.0 - t / T)) ** 2
    ab[0] = 0.0
    return ab.to(dtype)


def check_alpha_bar(alpha_bar: Any) -> torch.Tensor:
    r"""Validate a schedule :math:`\bar\alpha_0..\bar\alpha_T` (1-D, finite, :math:`0 \le \bar\alpha_0`, strictly
    increasing, :math:`\bar\alpha_T \le 0.999` compared in the schedule's own dtype) and return it as float64."""
    given = check_tensor("alpha_bar", alpha_bar, ndim=1, floating=True, finite=True).detach()
    ab = given.to(torch.float64)
    if ab.numel() < 2:
        raise ValueError(f"alpha_bar must hold T + 1 >= 2 values (alpha_bar_0..alpha_bar_T); got {ab.numel()}")
    if float(ab[0]) < 0.0:
        raise ValueError(f"alpha_bar[0] must be >= 0; got {float(ab[0])}")
    if bool(given[-1] > torch.tensor(ALPHA_BAR_MAX, dtype=given.dtype)):  # 0.999 as the schedule's dtype holds it
        raise ValueError(f"alpha_bar[T] must be <= {ALPHA_BAR_MAX} (SNR(T) explodes as alpha_bar_T -> 1); "
                         f"got {float(ab[-1])}")
    if not bool((ab[1:] > ab[:-1]).all()):
        raise ValueError("alpha_bar must be strictly increasing in t (z_T is the cleanest latent)")
    return ab


def posterior_coefficients(alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""``(a, b, c)`` of :math:`q(z_t \mid z_{t-1}, y) = \mathcal N(a_t u_y + b_t z_{t-1}, c_t I)` for
    :math:`t = 1..T` (index ``t - 1``), from a validated schedule (float64)."""
    ab = check_alpha_bar(alpha_bar)
    cur, prev = ab[1:], ab[:-1]
    alpha_prev = prev / cur
    a = cur.sqrt() * (1.0 - alpha_prev) / (1.0 - prev)
    b = alpha_prev.sqrt() * (1.0 - cur) / (1.0 - prev)
    c = (1.0 - cur) * (1.0 - alpha_prev) / (1.0 - prev)
    return a, b, c


class NoPropMLPBlock(nn.Module):
    """One denoising block: x-path ``in → h → h`` (ReLU), z-path ``D → h`` (ReLU), fused ``2h → h → K`` logits."""

    def __init__(self, in_features: int, embed_dim: int, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        check_int("in_features", in_features, minimum=1)
        check_int("embed_dim", embed_dim, minimum=1)
        check_int("num_classes", num_classes, minimum=2)
        check_int("hidden", hidden, minimum=1)
        self.x_path = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.z_path = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.x_path(x), self.z_path(z)], dim=-1))


class NoPropDT(nn.Module):
    r"""NoProp, discrete time (arXiv 2503.24322, Eq. 8 training, Eq. 3 posterior inference).

    Args:
        in_features: input size (inputs are ``(batch, in_features)``).
        num_classes: K.
        T: number of blocks (10 in the paper).
        embed_dim: D, the embedding size (default K).
        hidden: width of each MLP block.
        eta: :math:`\eta`, the weight of the denoising term (0.1 in the paper for DT).
        embedding: ``"learned"`` (W_Embed trained, initialised one-hot when D = K, else Gaussian rows of norm ≈ 1)
            or ``"onehot"`` (fixed identity, needs D = K).
        alpha_bar: schedule :math:`\bar\alpha_0..\bar\alpha_T` (length T + 1; default :func:`cosine_alpha_bar`).

    Methods: :meth:`loss_terms` (all of Eq. 8), :meth:`training_step` (block-by-block backward, one optimizer step),
    :meth:`forward` (inference logits), :meth:`predict`, :meth:`backprop_step` (end-to-end baseline).
    """

    def __init__(self, in_features: int, num_classes: int, T: int = 10, embed_dim: int | None = None,
                 hidden: int = 128, eta: float = 0.1, embedding: str = "learned",
                 alpha_bar: torch.Tensor | None = None) -> None:
        super().__init__()
        check_int("in_features", in_features, minimum=1)
        check_int("num_classes", num_classes, minimum=2)
        T = check_int("T", T, minimum=1)
        D = num_classes if embed_dim is None else check_int("embed_dim", embed_dim, minimum=1)
        check_int("hidden", hidden, minimum=1)
        self.eta = check_positive("eta", eta)
        check_choice("embedding", embedding, ("learned", "onehot"))
        if embedding == "onehot" and D != num_classes:
            raise ValueError(f"embedding='onehot' needs embed_dim == num_classes ({num_classes}); got {D}")
        ab = cosine_alpha_bar(T) if alpha_bar is None else check_alpha_bar(alpha_bar)
        if ab.numel() != T + 1:
            raise ValueError(f"alpha_bar must have T + 1 = {T + 1} values; got {ab.numel()}")
        self.T, self.num_classes, self.embed_dim, self.in_features = T, num_classes, D, in_features
        init = torch.eye(num_classes) if D == num_classes else torch.randn(num_classes, D) / math.sqrt(D)
        if embedding == "learned":
            self.W_embed = nn.Parameter(init)
        else:
            self.register_buffer("W_embed", init)
        self.blocks = nn.ModuleList(NoPropMLPBlock(in_features, D, num_classes, hidden) for _ in range(T))
        self.out = nn.Linear(D, num_classes)
        snr = ab / (1.0 - ab)
        a, b, c = posterior_coefficients(ab)
        f32 = torch.get_default_dtype()
        self.register_buffer("alpha_bar", ab.to(f32))
        self.register_buffer("snr", snr.to(f32))
        self.register_buffer("snr_weight", (snr[1:] - snr[:-1]).to(f32))  # SNR(t) - SNR(t-1), t = 1..T
        self.register_buffer("post_a", a.to(f32))
        self.register_buffer("post_b", b.to(f32))
        self.register_buffer("post_c", c.to(f32))

    # --- inputs ---------------------------------------------------------------------------------------------
    def _check_x(self, x: Any) -> torch.Tensor:
        x = check_tensor("x", x, ndim=2, floating=True, finite=True)
        if x.shape[1] != self.in_features:
            raise ValueError(f"x must have {self.in_features} features (shape (batch, {self.in_features})); "
                             f"got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError("x must hold at least one example")
        return x

    def _check_y(self, y: Any) -> torch.Tensor:
        y = check_tensor("y", y, ndim=1, dtype=torch.int64)
        if y.shape[0] == 0:
            raise ValueError("y must hold at least one label")
        if bool((y < 0).any()) or bool((y >= self.num_classes).any()):
            raise ValueError(f"y must hold class indices in [0, {self.num_classes}); got range "
                             f"[{int(y.min())}, {int(y.max())}]")
        return y

    def _check_xy(self, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._check_x(x)
        y = self._check_y(y)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have one label per row of x ({x.shape[0]}); got {y.shape[0]}")
        return x, y

    def _check_t(self, t: Any) -> int:
        return check_int("t", t, minimum=1, maximum=self.T)

    # --- pieces of Eq. 8 ---------------------------------------------------------------------------------------
    def sample_latent(self, t: int, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        r""":math:`z_t \sim q(z_t \mid y) = \mathcal N(\sqrt{\bar\alpha_t} u_y, (1 - \bar\alpha_t) I)`, ``t`` in 0..T
        (reparameterised, so gradients reach a learned W_Embed)."""
        t = check_int("t", t, minimum=0, maximum=self.T)
        u = self.W_embed[self._check_y(y)]
        eps = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        return self.alpha_bar[t].sqrt() * u + (1.0 - self.alpha_bar[t]).sqrt() * eps

    def predict_embedding(self, t: int, x: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        r""":math:`\hat u_t = \mathrm{softmax}(\mathrm{logits}_{\theta_t}(x, z_{t-1})) W_{Embed}`."""
        t = self._check_t(t)
        return torch.softmax(self.blocks[t - 1](x, z_prev), dim=-1) @ self.W_embed

    def block_loss(self, t: int, x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator | None = None, z_prev: torch.Tensor | None = None) -> torch.Tensor:
        r"""Block ``t``'s share of Eq. 8: :math:`\tfrac{\eta}{2}(\mathrm{SNR}(t) - \mathrm{SNR}(t-1))
        \,\mathrm{mean}_b \|\hat u_t(z_{t-1}, x) - u_y\|^2`, with :math:`z_{t-1} \sim q(\cdot \mid y)` unless
        ``z_prev`` is given."""
        t = self._check_t(t)
        x, y = self._check_xy(x, y)
        if z_prev is None:
            z_prev = self.sample_latent(t - 1, y, generator)
        else:
            z_prev = check_tensor("z_prev", z_prev, ndim=2, floating=True, finite=True)
            if tuple(z_prev.shape) != (x.shape[0], self.embed_dim):
                raise ValueError(f"z_prev must have shape {(x.shape[0], self.embed_dim)}; got {tuple(z_prev.shape)}")
        u_hat = self.predict_embedding(t, x, z_prev)
        sq = ((u_hat - self.W_embed[y]) ** 2).sum(-1).mean()
        return 0.5 * self.eta * self.snr_weight[t - 1] * sq

    def output_loss(self, y: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        r"""``(CE, KL)``: :math:`-\log \hat p_{out}(y \mid z_T)` with :math:`z_T \sim q(z_T|y)` (batch mean) and
        :math:`\mathrm{KL}(q(z_0|y)\|\mathcal N(0,I)) = \tfrac12(\bar\alpha_0\|u_y\|^2 - D\bar\alpha_0
        - D\log(1 - \bar\alpha_0))` (batch mean; 0 when :math:`\bar\alpha_0 = 0`)."""
        y = self._check_y(y)
        z_T = self.sample_latent(self.T, y, generator)
        ce = nn.functional.cross_entropy(self.out(z_T), y)
        ab0, D = self.alpha_bar[0], self.embed_dim
        u2 = (self.W_embed[y] ** 2).sum(-1).mean()
        kl = 0.5 * (ab0 * u2 - D * ab0 - D * torch.log1p(-ab0))
        return ce, kl

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """All terms of Eq. 8 for one batch: ``ce``, ``kl``, ``denoise`` (length-T tensor, block t at t - 1) and
        ``total``. One graph holds every block: use :meth:`training_step` to train block by block."""
        x, y = self._check_xy(x, y)
        den = torch.stack([self.block_loss(t, x, y, generator) for t in range(1, self.T + 1)])
        ce, kl = self.output_loss(y, generator)
        return {"ce": ce, "kl": kl, "denoise": den, "total": ce + kl + den.sum()}

    def training_step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                      generator: torch.Generator | None = None, measure_saved_bytes: bool = False) -> dict[str, float]:
        """One optimizer step on Eq. 8, backpropagating each block's loss on its own graph (freed before the next
        block is built), then the CE + KL terms. Returns the terms as floats (``peak_saved_bytes``, the largest
        graph's bytes saved for backward, Parameters excluded, when ``measure_saved_bytes``)."""
        check_type("optimizer", optimizer, torch.optim.Optimizer)
        x, y = self._check_xy(x, y)
        optimizer.zero_grad(set_to_none=True)
        peak, den = 0, []
        for t in range(1, self.T + 1):
            if measure_saved_bytes:
                nbytes, loss = saved_tensor_bytes(lambda t=t: self.block_loss(t, x, y, generator), model=self)
                peak = max(peak, nbytes)
            else:
                loss = self.block_loss(t, x, y, generator)
            loss.backward()
            den.append(float(loss.detach()))
        if measure_saved_bytes:
            nbytes, (ce, kl) = saved_tensor_bytes(lambda: self.output_loss(y, generator), model=self)
            peak = max(peak, nbytes)
        else:
            ce, kl = self.output_loss(y, generator)
        (ce + kl).backward()
        optimizer.step()
        res = {"ce": float(ce.detach()), "kl": float(kl.detach()), "denoise": sum(den),
               "total": float(ce.detach() + kl.detach()) + sum(den)}
        if measure_saved_bytes:
            res["peak_saved_bytes"] = float(peak)
        return res

    # --- inference ------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, noise: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Logits of :math:`\hat p_{out}(y \mid z_T)` after running the posterior chain t = 1..T (Eq. 3 with
        :math:`\hat u_t`). ``noise=False``: :math:`z_0 = 0` and no :math:`\sqrt{c_t}\epsilon`; ``noise=True``:
        :math:`z_0 \sim \mathcal N(0, I)` and the full stochastic update."""
        x = self._check_x(x)
        check_type("noise", noise, bool)
        shape = (x.shape[0], self.embed_dim)
        z = (torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device) if noise
             else torch.zeros(shape, dtype=x.dtype, device=x.device))
        for t in range(1, self.T + 1):
            z = self.post_a[t - 1] * self.predict_embedding(t, x, z) + self.post_b[t - 1] * z
            if noise:
                eps = torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
                z = z + self.post_c[t - 1].sqrt() * eps
        return self.out(z)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, noise: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
        """Class predictions :math:`\\arg\\max \\hat p_{out}(y \\mid z_T)`."""
        return self.forward(x, noise=noise, generator=generator).argmax(-1)

    def backprop_step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                      measure_saved_bytes: bool = False) -> dict[str, float]:
        """Baseline: one optimizer step on the cross-entropy of the deterministic inference chain
        (``forward(x, noise=False)``), backpropagated through all T blocks (chained backprop)."""
        check_type("optimizer", optimizer, torch.optim.Optimizer)
        x, y = self._check_xy(x, y)
        optimizer.zero_grad(set_to_none=True)

        def fwd() -> torch.Tensor:
            return nn.functional.cross_entropy(self.forward(x), y)

        if measure_saved_bytes:
            nbytes, loss = saved_tensor_bytes(fwd, model=self)
        else:
            loss = fwd()
        loss.backward()
        optimizer.step()
        res = {"ce": float(loss.detach())}
        if measure_saved_bytes:
            res["peak_saved_bytes"] = float(nbytes)
        return res
