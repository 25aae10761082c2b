r"""NoProp in continuous time: NoProp-CT (a learned noise schedule) and NoProp-FM (flow matching)
(Li, Teh, Pascanu, "NoProp: Training Neural Networks without Back-propagation or Forward-propagation",
arXiv 2503.24322, §3.2 and §3.3).

Both replace NoProp-DT's T separate blocks by **one** network that takes the time :math:`t \in [0, 1]` as an input;
training draws one :math:`t` per example, so no forward pass runs through time and nothing is back-propagated
across time steps. :math:`t = 0` is noise, :math:`t = 1` is the clean label embedding :math:`u_y = W_{Embed}[y]`
(the direction of :mod:`gradlab.training.noprop`).

**NoProp-CT** (variational diffusion in continuous time).
Noising marginals :math:`q(z_t \mid y) = \mathcal N(\sqrt{\bar\alpha(t)}\,u_y, (1 - \bar\alpha(t)) I)` with
:math:`\bar\alpha(t) = \sigma(-\gamma(t))`, :math:`\mathrm{SNR}(t) = e^{-\gamma(t)}` and a *learned* monotone
:math:`\gamma` (:class:`MonotoneSNR`, the construction of Kingma et al.'s variational diffusion models:
:math:`\gamma(t) = \gamma_{max} + (\gamma_{min} - \gamma_{max})\,\frac{\tilde\gamma(t) - \tilde\gamma(0)}
{\tilde\gamma(1) - \tilde\gamma(0)}` with :math:`\tilde\gamma` a network with positive weights, so SNR rises
strictly from :math:`e^{-\gamma_{max}}` at :math:`t = 0` to :math:`e^{-\gamma_{min}}` at :math:`t = 1`). The network
predicts the clean embedding :math:`\hat u(z_t, x, t) = \mathrm{softmax}(\mathrm{logits}_\theta(z_t, x, t))\,
W_{Embed}`. Loss (the continuous-time limit of Eq. 8, weight :math:`\mathrm{SNR}'(t)` and no factor :math:`T`):

.. math::
   L = \mathbb E_{q(z_1|y)}[-\log \hat p_{out}(y \mid z_1)] + \mathrm{KL}(q(z_0|y)\,\|\,\mathcal N(0, I))
     + \tfrac{\eta}{2}\,\mathbb E_{t \sim U(0,1)} \mathbb E_{q(z_t|y)}[\mathrm{SNR}'(t)\,\|\hat u(z_t, x, t) - u_y\|^2]

Inference on a grid :math:`0 = t_0 < \dots < t_n = 1`: the Gaussian posterior step of NoProp-DT
(:func:`gradlab.training.noprop.posterior_coefficients` on :math:`\bar\alpha(t_0), \dots, \bar\alpha(t_n)`),
:math:`z_{k} = a_k \hat u(z_{k-1}, x, t_{k-1}) + b_k z_{k-1} (+ \sqrt{c_k}\epsilon)`.

**NoProp-FM** (flow matching). :math:`z_t = t\,u_y + (1 - t)\,z_0`, :math:`z_0 \sim \mathcal N(0, I)`; the network
is a vector field :math:`v_\theta(z_t, x, t)` regressed onto :math:`u_y - z_0`, plus the classification term on the
clean end point:

.. math::
   L = \mathbb E_{t, z_0}\,\|v_\theta(z_t, x, t) - (u_y - z_0)\|^2 + \mathbb E[-\log \hat p_{out}(y \mid z_1 = u_y)]

Inference integrates :math:`\dot z = v_\theta(z, x, t)` from :math:`z_0` (0, or :math:`\mathcal N(0, I)` with
``noise=True``) by Euler steps and predicts :math:`\arg\max \hat p_{out}(y \mid z_1)`.

The networks are MLPs (:class:`NoPropTimeBlock`: an x-path, a z-path and a sinusoidal time path fused into one
head); the paper's image path is a CNN. The schedule endpoints (:math:`\gamma_{max} = 13.3`, :math:`\gamma_{min} =
-6.9`, ᾱ from 1.7e-6 to 0.999) are this module's defaults, chosen to match NoProp-DT's ᾱ range, not the paper's.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gradlab.core.validation import check_choice, check_int, check_positive, check_tensor, check_type
from gradlab.training.noprop import posterior_coefficients

__all__ = ["MonotoneSNR", "NoPropTimeBlock", "NoPropCT", "NoPropFM", "time_features"]


def time_features(t: torch.Tensor, dim: int) -> torch.Tensor:
    r"""Sinusoidal features of :math:`t \in [0, 1]`: ``[sin(2^k π t), cos(2^k π t)]`` for ``k = 0..dim/2 - 1``
    (``t`` of shape ``(batch,)``; returns ``(batch, dim)``)."""
    dim = check_int("dim", dim, minimum=2)
    if dim % 2:
        raise ValueError(f"dim must be even; got {dim}")
    freqs = math.pi * 2.0 ** torch.arange(dim // 2, dtype=t.dtype, device=t.device)
    ang = t[:, None] * freqs
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


class MonotoneSNR(nn.Module):
    r"""A learned, strictly monotone noise schedule :math:`\gamma(t) = -\log \mathrm{SNR}(t)` on :math:`[0, 1]`
    with fixed endpoints :math:`\gamma(0) = \gamma_{max}`, :math:`\gamma(1) = \gamma_{min}` (variational diffusion
    models' monotone network: :math:`\tilde\gamma(t) = l_1(t) + l_3(\sigma(l_2(l_1(t))))` with positive weights,
    min-max normalised).

    Methods: :meth:`gamma`, :meth:`snr`, :meth:`alpha_bar`, :meth:`snr_derivative` (exact, by autograd).
    """

    def __init__(self, gamma_min: float = -6.9, gamma_max: float = 13.3, hidden: int = 64) -> None:
        super().__init__()
        for name, v in (("gamma_min", gamma_min), ("gamma_max", gamma_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise TypeError(f"{name} must be a finite float; got {v!r}")
        if not gamma_min < gamma_max:
            raise ValueError(f"gamma_min must be < gamma_max; got {gamma_min} and {gamma_max}")
        if gamma_min < -6.9:
            raise ValueError(f"gamma_min must be >= -6.9 (alpha_bar(1) <= 0.999, as NoProp-DT); got {gamma_min}")
        hidden = check_int("hidden", hidden, minimum=1)
        self.gamma_min, self.gamma_max = float(gamma_min), float(gamma_max)
        self.w1 = nn.Parameter(torch.zeros(1))
        self.b1 = nn.Parameter(torch.zeros(1))
        self.w2 = nn.Parameter(torch.zeros(hidden, 1))
        self.b2 = nn.Parameter(torch.zeros(hidden))
        self.w3 = nn.Parameter(torch.zeros(1, hidden))
        with torch.no_grad():
            self.w2.normal_(0.0, 1.0)
            self.b2.normal_(0.0, 1.0)
            self.w3.fill_(-3.0)  # softplus(-3) ≈ 0.05: the schedule starts close to linear in gamma

    def _raw(self, t: torch.Tensor) -> torch.Tensor:
        l1 = F.softplus(self.w1) * t[:, None] + self.b1
        h = torch.sigmoid(l1 @ F.softplus(self.w2).T + self.b2)
        return (l1 + h @ F.softplus(self.w3).T).squeeze(-1)

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\gamma(t)`, strictly decreasing, :math:`\gamma(0) = \gamma_{max}`, :math:`\gamma(1) = \gamma_{min}`."""
        t = _check_times(t)
        ends = self._raw(torch.tensor([0.0, 1.0], dtype=t.dtype, device=t.device))
        frac = (self._raw(t) - ends[0]) / (ends[1] - ends[0])
        return self.gamma_max + (self.gamma_min - self.gamma_max) * frac

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathrm{SNR}(t) = e^{-\gamma(t)}`."""
        return torch.exp(-self.gamma(t))

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\bar\alpha(t) = \sigma(-\gamma(t)) = \mathrm{SNR}/(1 + \mathrm{SNR})`."""
        return torch.sigmoid(-self.gamma(t))

    def snr_derivative(self, t: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
        r""":math:`\mathrm{SNR}'(t) = -\gamma'(t)\,e^{-\gamma(t)}` (exact, by autograd; ``create_graph`` keeps it
        differentiable in the schedule's parameters)."""
        t = _check_times(t).detach().requires_grad_(True)
        with torch.enable_grad():
            g = self.gamma(t)
            (dg,) = torch.autograd.grad(g.sum(), t, create_graph=create_graph)
        return -dg * torch.exp(-g)


def _check_times(t: Any) -> torch.Tensor:
    t = check_tensor("t", t, ndim=1, floating=True, finite=True)
    if bool((t < 0).any()) or bool((t > 1).any()):
        raise ValueError(f"t must lie in [0, 1]; got range [{float(t.min())}, {float(t.max())}]")
    return t


class NoPropTimeBlock(nn.Module):
    """The time-conditioned network: x-path ``in → h → h``, z-path ``D → h``, time path (sinusoidal features
    → ``h``), fused ``3h → h → out_features`` (ReLU)."""

    def __init__(self, in_features: int, embed_dim: int, out_features: int, hidden: int = 128,
                 time_dim: int = 16) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("embed_dim", embed_dim), ("out_features", out_features),
                        ("hidden", hidden)):
            check_int(name, v, minimum=1)
        self.time_dim = check_int("time_dim", time_dim, minimum=2)
        if time_dim % 2:
            raise ValueError(f"time_dim must be even; got {time_dim}")
        self.x_path = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.z_path = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU())
        self.t_path = nn.Sequential(nn.Linear(time_dim, hidden), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(3 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_features))

    def forward(self, x: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tf = time_features(t.to(x.dtype), self.time_dim)
        return self.head(torch.cat([self.x_path(x), self.z_path(z), self.t_path(tf)], dim=-1))


class _NoPropContinuous(nn.Module, ABC):
    """Shared embedding, head and input checks of NoProp-CT and NoProp-FM."""

    def __init__(self, in_features: int, num_classes: int, embed_dim: int | None, embedding: str) -> None:
        super().__init__()
        check_int("in_features", in_features, minimum=1)
        check_int("num_classes", num_classes, minimum=2)
        D = num_classes if embed_dim is None else check_int("embed_dim", embed_dim, minimum=1)
        check_choice("embedding", embedding, ("learned", "onehot"))
        if embedding == "onehot" and D != num_classes:
            raise ValueError(f"embedding='onehot' needs embed_dim == num_classes ({num_classes}); got {D}")
        self.in_features, self.num_classes, self.embed_dim = in_features, num_classes, D
        init = torch.eye(num_classes) if D == num_classes else torch.randn(num_classes, D) / math.sqrt(D)
        if embedding == "learned":
            self.W_embed = nn.Parameter(init)
        else:
            self.register_buffer("W_embed", init)
        self.out = nn.Linear(D, num_classes)

    def _check_x(self, x: Any) -> torch.Tensor:
        x = check_tensor("x", x, ndim=2, floating=True, finite=True)
        if x.shape[1] != self.in_features or x.shape[0] == 0:
            raise ValueError(f"x must have shape (batch >= 1, {self.in_features}); got {tuple(x.shape)}")
        return x

    def _check_xy(self, x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._check_x(x)
        y = check_tensor("y", y, ndim=1, dtype=torch.int64)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y must have one label per row of x ({x.shape[0]}); got {y.shape[0]}")
        if bool((y < 0).any()) or bool((y >= self.num_classes).any()):
            raise ValueError(f"y must hold class indices in [0, {self.num_classes}); got range "
                             f"[{int(y.min())}, {int(y.max())}]")
        return x, y

    @staticmethod
    def _check_steps(steps: Any) -> int:
        return check_int("steps", steps, minimum=1)

    def training_step(self, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
                      generator: torch.Generator | None = None) -> dict[str, float]:
        """One optimizer step on the loss (one time per example; no forward pass through time)."""
        check_type("optimizer", optimizer, torch.optim.Optimizer)
        x, y = self._check_xy(x, y)
        optimizer.zero_grad(set_to_none=True)
        terms = self.loss_terms(x, y, generator)
        terms["total"].backward()
        optimizer.step()
        return {k: float(v.detach()) for k, v in terms.items()}

    @abstractmethod
    def loss_terms(self, x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The loss terms of one batch, ``total`` among them (each variant defines its own)."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor, steps: int = 100, noise: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Class predictions :math:`\\arg\\max \\hat p_{out}(y \\mid z_1)` after ``steps`` integration steps."""
        return self.forward(x, steps=steps, noise=noise, generator=generator).argmax(-1)


class NoPropCT(_NoPropContinuous):
    r"""NoProp-CT: one time-conditioned denoiser :math:`\hat u(z_t, x, t)` and a learned monotone schedule
    (arXiv 2503.24322 §3.2; module docstring for the loss and the sampler).

    Args:
        in_features, num_classes, embed_dim, embedding, hidden: as :class:`gradlab.training.NoPropDT`.
        eta: :math:`\eta`, the weight of the denoising term (1 in the paper's Table 3 for CT).
        schedule: a :class:`MonotoneSNR` (default: a new one with this module's endpoints).
    """

    def __init__(self, in_features: int, num_classes: int, embed_dim: int | None = None, hidden: int = 128,
                 eta: float = 1.0, embedding: str = "learned", schedule: MonotoneSNR | None = None) -> None:
        super().__init__(in_features, num_classes, embed_dim, embedding)
        self.eta = check_positive("eta", eta)
        if schedule is not None:
            check_type("schedule", schedule, MonotoneSNR)
        self.schedule = schedule if schedule is not None else MonotoneSNR()
        self.net = NoPropTimeBlock(in_features, self.embed_dim, num_classes, hidden)

    def predict_embedding(self, x: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r""":math:`\hat u(z_t, x, t) = \mathrm{softmax}(\mathrm{logits}_\theta(z_t, x, t)) W_{Embed}`."""
        return torch.softmax(self.net(x, z, t), dim=-1) @ self.W_embed

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``ce``, ``kl``, ``denoise`` (the SNR'-weighted term, batch mean) and ``total`` for one batch, with one
        ``t ~ U(0, 1)`` per example."""
        x, y = self._check_xy(x, y)
        n = x.shape[0]
        u = self.W_embed[y]
        t = torch.rand(n, generator=generator, dtype=x.dtype, device=x.device)
        ab = self.schedule.alpha_bar(t)[:, None]
        eps = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        z_t = ab.sqrt() * u + (1.0 - ab).sqrt() * eps
        sq = ((self.predict_embedding(x, z_t, t) - u) ** 2).sum(-1)
        denoise = 0.5 * self.eta * (self.schedule.snr_derivative(t) * sq).mean()
        ends = self.schedule.alpha_bar(torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device))
        eps1 = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        z_1 = ends[1].sqrt() * u + (1.0 - ends[1]).sqrt() * eps1
        ce = F.cross_entropy(self.out(z_1), y)
        ab0, D = ends[0], self.embed_dim
        kl = 0.5 * (ab0 * (u ** 2).sum(-1).mean() - D * ab0 - D * torch.log1p(-ab0))
        return {"ce": ce, "kl": kl, "denoise": denoise, "total": ce + kl + denoise}

    def forward(self, x: torch.Tensor, steps: int = 100, noise: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Logits of :math:`\hat p_{out}(y \mid z_1)` after ``steps`` posterior steps on the uniform grid
        (``noise=False``: :math:`z_0 = 0` and no :math:`\sqrt{c_k}\epsilon`)."""
        x = self._check_x(x)
        steps = self._check_steps(steps)
        check_type("noise", noise, bool)
        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
        with torch.no_grad():  # the grid's alpha_bar in float64, so that 1000 steps stay strictly increasing
            ab = copy.deepcopy(self.schedule).to(device="cpu", dtype=torch.float64).alpha_bar(grid)
        a, b, c = (v.to(dtype=x.dtype, device=x.device) for v in posterior_coefficients(ab))
        shape = (x.shape[0], self.embed_dim)
        z = (torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device) if noise
             else torch.zeros(shape, dtype=x.dtype, device=x.device))
        for k in range(1, steps + 1):
            t_prev = grid[k - 1].to(device=x.device, dtype=x.dtype).expand(x.shape[0])
            z = a[k - 1] * self.predict_embedding(x, z, t_prev) + b[k - 1] * z
            if noise:
                z = z + c[k - 1].sqrt() * torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device)
        return self.out(z)


class NoPropFM(_NoPropContinuous):
    r"""NoProp-FM: a time-conditioned vector field :math:`v_\theta(z_t, x, t)` trained by flow matching on
    :math:`z_t = t u_y + (1 - t) z_0` (arXiv 2503.24322 §3.3; module docstring for the loss and the sampler).

    Args: as :class:`NoPropCT` without the schedule; ``embedding`` defaults to ``"onehot"``, since a learned
    embedding can shrink to make the regression trivial while only the classification term holds it apart.
    """

    def __init__(self, in_features: int, num_classes: int, embed_dim: int | None = None, hidden: int = 128,
                 embedding: str = "onehot") -> None:
        super().__init__(in_features, num_classes, embed_dim, embedding)
        self.net = NoPropTimeBlock(in_features, self.embed_dim, self.embed_dim, hidden)

    def velocity(self, x: torch.Tensor, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        r""":math:`v_\theta(z_t, x, t)`."""
        return self.net(x, z, t)

    def loss_terms(self, x: torch.Tensor, y: torch.Tensor,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``flow`` (squared error to :math:`u_y - z_0`, batch mean), ``ce`` (head on :math:`u_y`) and ``total``."""
        x, y = self._check_xy(x, y)
        u = self.W_embed[y]
        t = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        z0 = torch.randn(u.shape, generator=generator, dtype=u.dtype, device=u.device)
        z_t = t[:, None] * u + (1.0 - t[:, None]) * z0
        flow = ((self.velocity(x, z_t, t) - (u - z0)) ** 2).sum(-1).mean()
        ce = F.cross_entropy(self.out(u), y)
        return {"flow": flow, "ce": ce, "total": flow + ce}

    def forward(self, x: torch.Tensor, steps: int = 100, noise: bool = False,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits of :math:`\\hat p_{out}(y \\mid z_1)` after ``steps`` Euler steps of :math:`\\dot z = v_\\theta`
        from :math:`z_0` (0, or :math:`\\mathcal N(0, I)` with ``noise=True``)."""
        x = self._check_x(x)
        steps = self._check_steps(steps)
        check_type("noise", noise, bool)
        shape = (x.shape[0], self.embed_dim)
        z = (torch.randn(shape, generator=generator, dtype=x.dtype, device=x.device) if noise
             else torch.zeros(shape, dtype=x.dtype, device=x.device))
        dt = 1.0 / steps
        for k in range(steps):
            t = torch.full((x.shape[0],), k * dt, dtype=x.dtype, device=x.device)
            z = z + dt * self.velocity(x, z, t)
        return self.out(z)
