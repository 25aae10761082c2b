r"""Level Set Traversal (LST): walking along a classifier's level sets to find its blind spots.

Balasubramanian, Sriramanan, Sadasivan & Feizi, "Exploring Geometry of Blind Spots in Vision Models"
(NeurIPS 2023, arXiv 2310.19889). The level set ``{x : p_s(x) = p_0}`` of the source-class confidence
``p_s(x) = softmax(f(x))_s`` is locally orthogonal to the gradient ``g = grad_x CE(f(x), s) = -grad_x log p_s(x)``.
LST moves a source image ``x_src`` toward a target image ``x_tgt`` of another class using only the part of the
step that does not change the confidence to first order.

The paper's rule (``rule="paper"``, the default; the official ``batch_level_set_traversal``):

.. math::

    x_0 = \mathrm{clip}(x_{src} + u),\quad u \sim U(-\epsilon_0, \epsilon_0)^d \ (\epsilon_0 = 2/255),
    \qquad p_0 = p_s(x_{src}),

    v = x_{tgt} - x,\qquad v_\perp = v - \frac{\langle g, v\rangle}{\langle g, g\rangle} g,

    \delta \leftarrow \mathrm{clip}_{[-a, a]}(\delta + \tfrac{a}{2} g)\ \text{(only with the adversarial drift, } a > 0),
    \qquad x' = \mathrm{clip}_{[0, 1]}(x + \eta v_\perp - \delta),

and :math:`x'` is *accepted* iff :math:`p_0 - p_s(x') < p_{thresh}`; otherwise the sample stays at ``x``. The step
``eta`` is fixed. The drift ``delta`` accumulates element-wise-clipped CE-gradient steps of size ``a = adv_step`` and is
subtracted every iteration (it pushes confidence back up); it is updated every iteration, accepted or not, as in
the official code, and is off by default (the official default; ``--adv_pert`` turns it on). Without the drift a
rejected sample proposes the same step again, so it stays frozen (the official behaviour; log ``acceptance_rate``).

Deviations from the official code, all stated: the gradient is the per-sample CE gradient (the official code
differentiates the batch *mean* of the CE, which divides the drift increments by the batch size, so its drift
depends on the batch size; the projection is unchanged by that scale); where ``g = 0`` the direction is used
unprojected instead of dividing by zero.

A variant, ``rule="newton"`` (ours, kept for comparison): after the orthogonal step, ``correction_steps``
first-order Newton steps back onto the level set,

    x' <- x' + ((log p_0 - log p_s(x')) / ||grad log p_s(x')||^2) grad log p_s(x')      (only when p_s(x') < p_0),

each no longer than the traversal step it corrects, with the same acceptance rule; a rejected sample halves its own
step size and an accepted one grows it by 1.25 up to ``step_size``. No drift.

The result holds the whole path, the source-class confidence along it, along the straight interpolation
``x_src + t (x_tgt - x_src)`` and along the straight segment from ``x_src`` to the LST output (the paper's
"star-like" check: that segment keeps high confidence while the straight interpolation to the target loses it).

Batching is internal: the (source, target) pairs are traversed in chunks of ``chunk_size`` pairs and the results
concatenated. Every quantity of the algorithm (gradient, projection, drift, Newton correction, acceptance, step
size) is per sample, and the ``init_noise`` draw is made once for the whole batch before chunking, so the result
does not depend on ``chunk_size`` (up to floating-point differences of the model on different batch sizes,
provided the model treats rows independently, which eval mode is checked for).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradlab.core import (
    check_choice,
    check_int,
    check_positive,
    check_range,
    check_tensor,
    check_type,
    torch_generator,
)
from gradlab.explain._common import (
    check_chunk_size,
    check_inputs,
    check_model,
    check_pair,
    chunk_slices,
    forward,
    grad_wrt,
    normalize_target,
)

__all__ = ["LST_RULES", "LSTResult", "LevelSetTraversal", "OFFICIAL_INIT_NOISE", "orthogonal_step"]

LST_RULES: tuple[str, ...] = ("paper", "newton")
"""``paper``: the official fixed-step rule; ``newton``: our Newton back-projection variant."""

OFFICIAL_INIT_NOISE = 2.0 / 255.0
"""Half-width of the official code's uniform start perturbation, ``(4/255) (U(0, 1) - 1/2)``."""


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def orthogonal_step(direction: torch.Tensor, gradient: torch.Tensor, eps: float = 1e-20) -> torch.Tensor:
    """Per-sample projection of ``direction`` onto the orthogonal complement of ``gradient``:
    ``v - (<g, v> / <g, g>) g``. Where ``g = 0`` the direction is returned unchanged."""
    check_tensor("direction", direction, floating=True, finite=True)
    check_tensor("gradient", gradient, floating=True, finite=True)
    if direction.shape != gradient.shape or direction.ndim < 2:
        raise ValueError(f"direction and gradient must have the same batch-first shape; got "
                         f"{tuple(direction.shape)} and {tuple(gradient.shape)}")
    gg = _dot(gradient, gradient)
    coef = torch.where(gg > eps, _dot(gradient, direction) / gg.clamp_min(eps), torch.zeros_like(gg))
    return direction - _bcast(coef, gradient) * gradient


@dataclass(frozen=True)
class LSTResult:
    """Output of :meth:`LevelSetTraversal.traverse` (``N`` sources, ``T`` iterations, ``K`` interpolation points).

    Attributes:
        path: ``(T + 1, N, *image)``, the iterates, ``path[0]`` the start and ``path[-1]`` the LST output.
        confidences: ``(T + 1, N)``, source-class confidence along the path.
        source_confidence: ``(N,)``, ``p_0 = p_s(x_src)``.
        interpolation: ``(K,)``, the interpolation parameters ``t`` in [0, 1].
        straight_confidences: ``(K, N)``, confidence along ``x_src + t (x_tgt - x_src)``.
        segment_confidences: ``(K, N)``, confidence along ``x_src + t (x_LST - x_src)``.
        acceptance_rate: ``(N,)``, fraction of accepted proposals per sample.
        source, target: the inputs; source_class: ``(N,)`` the class whose confidence is kept.
    """

    path: torch.Tensor
    confidences: torch.Tensor
    source_confidence: torch.Tensor
    interpolation: torch.Tensor
    straight_confidences: torch.Tensor
    segment_confidences: torch.Tensor
    acceptance_rate: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    source_class: torch.Tensor

    @property
    def final(self) -> torch.Tensor:
        """The LST outputs ``(N, *image)``."""
        return self.path[-1]

    def distance_ratio(self, p: float = 2.0) -> torch.Tensor:
        """``||x_LST - x_tgt||_p / ||x_src - x_tgt||_p`` per sample (0 means the target was reached)."""
        if p != float("inf"):
            check_positive("p", p)
        num = (self.final - self.target).flatten(1).norm(p=p, dim=1)
        den = (self.source - self.target).flatten(1).norm(p=p, dim=1)
        return num / den.clamp_min(1e-12)


class LevelSetTraversal:
    """``LevelSetTraversal(model, ...).traverse(source, target) -> LSTResult``.

    Args:
        model: a classifier returning logits ``(batch, classes)``; must be in eval mode. It is not modified.
        step_size: ``eta``, the fraction of the orthogonal remaining displacement covered per step (official
            default 0.05; fixed under the paper's rule, the maximum under ``newton``).
        n_steps: number of iterations (official default 100).
        p_thresh: a proposal with ``p_0 - p_s(x') >= p_thresh`` is rejected (official default 0.05).
        rule: ``"paper"`` (default) or ``"newton"``, see the module docstring.
        adv_step: ``a``, the adversarial drift's per-coordinate bound (the official ``--adv_step_size``, 1/255 when
            enabled there); ``0`` (default) disables the drift, as the official default does. Paper rule only.
        correction_steps: Newton corrections per iteration under ``rule="newton"`` (0: acceptance and step halving
            only). Ignored by the paper's rule.
        clip: valid data range ``(low, high)`` or ``None``.
        n_interp: number of interpolation points for the straight-line confidences.
        init_noise: half-width of the uniform start perturbation (default 2/255, the official value; 0 disables it).
        seed: seeds ``init_noise``.
        chunk_size: internal batching. The traversal runs over chunks of at most ``chunk_size`` (source, target)
            pairs, and the interpolation confidences are evaluated at most ``chunk_size`` rows per model call.
            ``None`` processes the whole batch at once. The result does not depend on it.
    """

    def __init__(self, model: nn.Module, step_size: float = 0.05, n_steps: int = 100, p_thresh: float = 0.05,
                 rule: str = "paper", adv_step: float = 0.0, correction_steps: int = 1,
                 clip: tuple[float, float] | None = (0.0, 1.0), n_interp: int = 21,
                 init_noise: float = OFFICIAL_INIT_NOISE, seed: int = 0, chunk_size: int | None = 4096) -> None:
        check_type("model", model, nn.Module)
        self.model = model
        self.step_size = check_range("step_size", step_size, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        self.n_steps = check_int("n_steps", n_steps, minimum=1)
        self.p_thresh = check_range("p_thresh", p_thresh, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        self.rule = check_choice("rule", rule, LST_RULES)
        self.adv_step = check_positive("adv_step", adv_step, allow_zero=True)
        if self.adv_step > 0 and self.rule != "paper":
            raise ValueError(f"adv_step > 0 (the adversarial drift) belongs to rule='paper'; got rule={rule!r}")
        self.correction_steps = check_int("correction_steps", correction_steps, minimum=0)
        if clip is not None:
            try:
                clip = check_pair("clip", clip)
            except (TypeError, ValueError) as err:
                raise type(err)(f"clip must be (low, high) with low < high, or None; got {clip!r} ({err})") from None
        self.clip = clip
        self.n_interp = check_int("n_interp", n_interp, minimum=2)
        self.init_noise = check_positive("init_noise", init_noise, allow_zero=True)
        self.seed = check_int("seed", seed, minimum=0)
        self.chunk_size = check_chunk_size(chunk_size)

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.clip is None else x.clamp(*self.clip)

    def _log_conf_and_grad(self, x: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logp = torch.log_softmax(forward(self.model, x, differentiable=True), dim=1).gather(1, cls[:, None])
            g = grad_wrt(logp.squeeze(1), x, "`source`")
        return logp.detach().squeeze(1), g.detach()

    @torch.no_grad()
    def confidence(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Softmax confidence of class ``cls[i]`` at ``x[i]``, evaluated in chunks (the model's output is checked)."""
        outs = [torch.softmax(forward(self.model, x[sl]), dim=1).gather(1, cls[sl, None])
                for sl in chunk_slices(x.shape[0], self.chunk_size)]
        return torch.cat(outs).squeeze(1)

    def _line_confidences(self, start: torch.Tensor, end: torch.Tensor, cls: torch.Tensor,
                          ts: torch.Tensor) -> torch.Tensor:
        k, n = len(ts), start.shape[0]
        pts = start.unsqueeze(0) + _bcast(ts, start.unsqueeze(0)) * (end - start).unsqueeze(0)
        return self.confidence(pts.reshape(k * n, *start.shape[1:]), cls.repeat(k)).reshape(k, n)

    def traverse(self, source: torch.Tensor, target: torch.Tensor,
                 source_class: int | torch.Tensor | None = None) -> LSTResult:
        """Traverse from each ``source[i]`` toward ``target[i]`` on the level set of ``source_class`` (default:
        the model's prediction at the source).

        ``source`` and ``target`` must be finite, of the model's dtype, of the same batch-first shape, inside
        ``clip``, and differ in every pair; ``source_class`` is an int or an integer tensor of shape () or (N,) with
        values in [0, C) for a model with C >= 2 outputs; the model's output must be finite and depend
        differentiably on its input (``ValueError`` otherwise).
        """
        check_model(self.model, require_module=True)
        check_inputs(source, self.model, "source")
        check_inputs(target, self.model, "target")
        if source.shape != target.shape or source.ndim < 2:
            raise ValueError(f"source and target must have the same batch-first shape; got {tuple(source.shape)} "
                             f"and {tuple(target.shape)}")
        n = source.shape[0]
        src, tgt = source.detach(), target.detach()
        # probe on one example: output shape (N, C >= 2), finite, differentiable with respect to the source
        with torch.no_grad():
            shape = tuple(forward(self.model, src[:1]).shape)
        if len(shape) != 2 or shape[1] < 2:
            raise ValueError(f"LevelSetTraversal needs a classifier returning logits of shape (N, C) with C >= 2 "
                             f"(the softmax confidence of one class); the model returned shape {shape}")
        c = shape[1]
        self._log_conf_and_grad(src[:1], torch.zeros(1, dtype=torch.long, device=src.device))
        if source_class is None:
            with torch.no_grad():
                cls = torch.cat([forward(self.model, src[sl]).argmax(dim=1)
                                 for sl in chunk_slices(n, self.chunk_size)])
        else:
            cls = normalize_target(source_class, n, c, name="source_class")
        cls = cls.to(src.device)
        if self.clip is not None:
            lo, hi = self.clip
            for name, t in (("source", src), ("target", tgt)):
                if float(t.min()) < lo or float(t.max()) > hi:
                    raise ValueError(f"{name} must lie within clip={self.clip} (the valid data range); got values in "
                                     f"[{float(t.min()):.4g}, {float(t.max()):.4g}]. Rescale it or pass clip=None")
        same = (src == tgt).flatten(1).all(dim=1).nonzero().flatten().tolist()
        if same:
            raise ValueError(f"target[{same[0]}] equals source[{same[0]}]: there is no direction to traverse "
                             f"({len(same)} identical pair(s))")

        start = src
        if self.init_noise > 0:  # drawn once for the whole batch, so chunking does not change it
            noise = torch.rand(src.shape, generator=torch_generator(self.seed)).to(src)
            start = self._clip(src + (2 * noise - 1) * self.init_noise)
        ts = torch.linspace(0.0, 1.0, self.n_interp, dtype=src.dtype, device=src.device)
        parts = [self._traverse_chunk(src[sl], start[sl], tgt[sl], cls[sl], ts)
                 for sl in chunk_slices(n, self.chunk_size)]
        # per-chunk outputs: path (T+1, n_c, ...), confidences (T+1, n_c), p0 (n_c,), straight / segment (K, n_c),
        # acceptance rate (n_c,); concatenate along the batch dimension of each
        path, confs, p0, straight, segment, rate = (torch.cat(list(chunks), dim=dim) for chunks, dim in
                                                    zip(zip(*parts), (1, 1, 0, 1, 1, 0)))
        return LSTResult(
            path=path, confidences=confs, source_confidence=p0, interpolation=ts, straight_confidences=straight,
            segment_confidences=segment, acceptance_rate=rate, source=src, target=tgt, source_class=cls,
        )

    def _traverse_chunk(self, src: torch.Tensor, x: torch.Tensor, tgt: torch.Tensor, cls: torch.Tensor,
                        ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """LST for one chunk of pairs, starting at ``x``; everything here is per sample."""
        p0 = self.confidence(src, cls)
        logp, g = self._log_conf_and_grad(x, cls)
        accepted = torch.zeros(src.shape[0], dtype=src.dtype, device=src.device)
        path, confs = [x], [logp.exp()]
        step = self._paper_step if self.rule == "paper" else self._newton_step
        state: dict[str, torch.Tensor] = {}
        for _ in range(self.n_steps):
            x, logp, g, ok = step(x, logp, g, tgt, cls, p0, state)
            accepted += ok.to(accepted.dtype)
            path.append(x)
            confs.append(logp.exp())
        return (torch.stack(path), torch.stack(confs), p0, self._line_confidences(src, tgt, cls, ts),
                self._line_confidences(src, x, cls, ts), accepted / self.n_steps)

    def _accept(self, x: torch.Tensor, logp: torch.Tensor, g: torch.Tensor, prop: torch.Tensor, cls: torch.Tensor,
                p0: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The paper's acceptance rule: keep ``prop`` where ``p_0 - p_s(prop) < p_thresh``, else stay at ``x``."""
        lp, gp = self._log_conf_and_grad(prop, cls)
        ok = (p0 - lp.exp()) < self.p_thresh
        okb = _bcast(ok, x)
        return torch.where(okb, prop, x), torch.where(ok, lp, logp), torch.where(okb, gp, g), ok

    def _paper_step(self, x: torch.Tensor, logp: torch.Tensor, g: torch.Tensor, tgt: torch.Tensor,
                    cls: torch.Tensor, p0: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One iteration of the official rule: fixed step along v_perp, optional clipped CE-gradient drift."""
        move = self.step_size * orthogonal_step(tgt - x, g)
        if self.adv_step > 0:
            grad_ce = -g  # g is grad log p_s; the drift accumulates (a/2) grad CE and is subtracted
            delta = state.get("delta", torch.zeros_like(x)) + 0.5 * self.adv_step * grad_ce
            state["delta"] = delta = delta.clamp(-self.adv_step, self.adv_step)
            move = move - delta
        return self._accept(x, logp, g, self._clip(x + move), cls, p0)

    def _newton_step(self, x: torch.Tensor, logp: torch.Tensor, g: torch.Tensor, tgt: torch.Tensor,
                     cls: torch.Tensor, p0: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """One iteration of the Newton variant: orthogonal step, Newton corrections, per-sample step adaptation."""
        if "eta" not in state:
            state["eta"] = torch.full((x.shape[0],), self.step_size, dtype=x.dtype, device=x.device)
        eta, log_p0 = state["eta"], torch.log(p0)
        move = _bcast(eta, x) * orthogonal_step(tgt - x, g)
        prop = self._clip(x + move)
        move_norm = move.flatten(1).norm(dim=1)
        for _c in range(self.correction_steps):
            lp, gp = self._log_conf_and_grad(prop, cls)
            gap = (log_p0 - lp).clamp_min(0.0)
            corr = _bcast(gap / _dot(gp, gp).clamp_min(1e-30), gp) * gp
            norm = corr.flatten(1).norm(dim=1)
            corr = corr * _bcast(torch.clamp(move_norm / norm.clamp_min(1e-30), max=1.0), corr)
            prop = self._clip(prop + corr)
        x, logp, g, ok = self._accept(x, logp, g, prop, cls, p0)
        state["eta"] = torch.where(ok, torch.clamp(eta * 1.25, max=self.step_size), eta * 0.5)
        return x, logp, g, ok
