"""Level Set Traversal (LST): walking along a classifier's level sets to find its blind spots.

Balasubramanian, Sriramanan, Sadasivan & Feizi, "Exploring Geometry of Blind Spots in Vision Models"
(NeurIPS 2023, arXiv 2310.19889). The level set ``{x : p_s(x) = p_0}`` of the source-class confidence
``p_s(x) = softmax(f(x))_s`` is locally orthogonal to ``g = grad_x log p_s(x)``. LST moves a source image
``x_src`` toward a target image ``x_tgt`` of another class using only the part of the step that does not
change the confidence to first order:

    v = x_tgt - x,      v_perp = v - (<g, v> / <g, g>) g,      x' = x + eta * v_perp,

followed by a *correction back onto the level set*: first-order Newton steps along the gradient,

    x' <- x' + ((log p_0 - log p_s(x')) / ||g'||^2) g'      (only when p_s(x') < p_0),

each no longer than the traversal step it corrects, then clipping to the data range. A proposal is accepted
only if ``p_0 - p_s(x') < p_thresh`` (the paper's acceptance rule); a rejected sample stays put and halves
its own step size (the official code keeps the step, so rejected samples can freeze for good).

Deviation from the official code: it pushes confidence back with an accumulated, coordinate-wise clipped
gradient drift ``delta`` of size ``eps_adv`` instead of the Newton correction used here; the Newton step
targets the level set itself rather than a drift toward higher confidence. ``grad log p_s`` is used instead
of ``grad p_s`` (same direction) because ``grad p_s`` vanishes faster at saturated confidence.

The result holds the whole path, the source-class confidence along it, along the straight interpolation
``x_src + t (x_tgt - x_src)`` and along the straight segment from ``x_src`` to the LST output (the paper's
"star-like" check: that segment keeps high confidence while the straight interpolation to the target loses it).

Batching is internal: the (source, target) pairs are traversed in chunks of ``chunk_size`` pairs and the results
concatenated. Every quantity of the algorithm (gradient, projection, Newton correction, acceptance, step size
``eta``) is per sample, and the ``init_noise`` draw is made once for the whole batch before chunking, so the result
does not depend on ``chunk_size`` (up to floating-point differences of the model on different batch sizes,
provided the model treats rows independently, which eval mode is checked for).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradlab.core import check_int, check_positive, check_range, check_tensor, check_type, torch_generator
from gradlab.explain._common import check_chunk_size, check_inputs, check_model, chunk_slices

__all__ = ["LSTResult", "LevelSetTraversal", "orthogonal_step"]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.flatten(1) * b.flatten(1)).sum(dim=1)


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.ndim - 1)))


def orthogonal_step(direction: torch.Tensor, gradient: torch.Tensor, eps: float = 1e-20) -> torch.Tensor:
    """Per-sample projection of ``direction`` onto the orthogonal complement of ``gradient``:
    ``v - (<g, v> / <g, g>) g``. Where ``g = 0`` the direction is returned unchanged."""
    check_tensor("direction", direction, floating=True)
    check_tensor("gradient", gradient, floating=True)
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
        num = (self.final - self.target).flatten(1).norm(p=p, dim=1)
        den = (self.source - self.target).flatten(1).norm(p=p, dim=1)
        return num / den.clamp_min(1e-12)


class LevelSetTraversal:
    """``LevelSetTraversal(model, ...).traverse(source, target) -> LSTResult``.

    Args:
        model: a classifier returning logits ``(batch, classes)``; must be in eval mode. It is not modified.
        step_size: ``eta``, the fraction of the orthogonal remaining displacement covered per step.
        n_steps: number of iterations.
        p_thresh: a proposal with ``p_0 - p_s(x') >= p_thresh`` is rejected.
        correction_steps: Newton corrections back onto the level set per iteration (0 disables them).
        clip: valid data range ``(low, high)`` or ``None``.
        n_interp: number of interpolation points for the straight-line confidences.
        init_noise: half-width of a uniform perturbation of the start (the official code uses 2/255).
        seed: seeds ``init_noise``.
        chunk_size: internal batching. The traversal runs over chunks of at most ``chunk_size`` (source, target)
            pairs, and the interpolation confidences are evaluated at most ``chunk_size`` rows per model call.
            ``None`` processes the whole batch at once. The result does not depend on it.
    """

    def __init__(self, model: nn.Module, step_size: float = 0.05, n_steps: int = 200, p_thresh: float = 0.05,
                 correction_steps: int = 1, clip: tuple[float, float] | None = (0.0, 1.0), n_interp: int = 21,
                 init_noise: float = 0.0, seed: int = 0, chunk_size: int | None = 4096) -> None:
        check_type("model", model, nn.Module)
        self.model = model
        self.step_size = check_range("step_size", step_size, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        self.n_steps = check_int("n_steps", n_steps, minimum=1)
        self.p_thresh = check_range("p_thresh", p_thresh, 0.0, 1.0, low_inclusive=False, high_inclusive=True)
        self.correction_steps = check_int("correction_steps", correction_steps, minimum=0)
        if clip is not None and (len(clip) != 2 or not clip[0] < clip[1]):
            raise ValueError(f"clip must be (low, high) with low < high, or None; got {clip!r}")
        self.clip = clip
        self.n_interp = check_int("n_interp", n_interp, minimum=2)
        self.init_noise = check_positive("init_noise", init_noise, allow_zero=True)
        self.seed = check_int("seed", seed, minimum=0)
        self.chunk_size = check_chunk_size(chunk_size)

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.clip is None else x.clamp(*self.clip)

    def _log_conf_and_grad(self, x: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.detach().requires_grad_(True)
        logp = torch.log_softmax(self.model(x), dim=1).gather(1, cls[:, None]).squeeze(1)
        (g,) = torch.autograd.grad(logp.sum(), x)
        return logp.detach(), g.detach()

    @torch.no_grad()
    def confidence(self, x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """Softmax confidence of class ``cls[i]`` at ``x[i]``, evaluated in chunks."""
        outs = [torch.softmax(self.model(x[sl]), dim=1).gather(1, cls[sl, None])
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
        the model's prediction at the source)."""
        check_model(self.model, require_module=True)
        check_inputs(source, self.model, "source")
        check_inputs(target, self.model, "target")
        if source.shape != target.shape or source.ndim < 2:
            raise ValueError(f"source and target must have the same batch-first shape; got {tuple(source.shape)} "
                             f"and {tuple(target.shape)}")
        n = source.shape[0]
        src, tgt = source.detach(), target.detach()
        if source_class is None:
            with torch.no_grad():
                cls = torch.cat([self.model(src[sl]).argmax(dim=1) for sl in chunk_slices(n, self.chunk_size)])
        elif isinstance(source_class, torch.Tensor):
            cls = source_class.long().expand(n).clone() if source_class.ndim == 0 else source_class.long()
            if cls.shape != (n,):
                raise ValueError(f"source_class must be an int or a tensor of shape ({n},); got {tuple(cls.shape)}")
        else:
            cls = torch.full((n,), check_int("source_class", source_class, minimum=0), dtype=torch.long)
        cls = cls.to(src.device)

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
        n = src.shape[0]
        log_p0 = torch.log(self.confidence(src, cls))
        p0 = log_p0.exp()
        logp, g = self._log_conf_and_grad(x, cls)
        eta = torch.full((n,), self.step_size, dtype=src.dtype, device=src.device)
        accepted = torch.zeros(n, dtype=src.dtype, device=src.device)
        path, confs = [x], [logp.exp()]
        for _ in range(self.n_steps):
            move = _bcast(eta, x) * orthogonal_step(tgt - x, g)
            prop = self._clip(x + move)
            move_norm = move.flatten(1).norm(dim=1)
            for _c in range(self.correction_steps):
                lp, gp = self._log_conf_and_grad(prop, cls)
                gap = (log_p0 - lp).clamp_min(0.0)
                step = _bcast(gap / _dot(gp, gp).clamp_min(1e-30), gp) * gp
                norm = step.flatten(1).norm(dim=1)
                step = step * _bcast(torch.clamp(move_norm / norm.clamp_min(1e-30), max=1.0), step)
                prop = self._clip(prop + step)
            lp, gp = self._log_conf_and_grad(prop, cls)
            ok = (p0 - lp.exp()) < self.p_thresh
            okb = _bcast(ok, x)
            x = torch.where(okb, prop, x)
            g = torch.where(okb, gp, g)
            logp = torch.where(ok, lp, logp)
            eta = torch.where(ok, torch.clamp(eta * 1.25, max=self.step_size), eta * 0.5)
            accepted += ok.to(accepted.dtype)
            path.append(x)
            confs.append(logp.exp())
        return (torch.stack(path), torch.stack(confs), p0, self._line_confidences(src, tgt, cls, ts),
                self._line_confidences(src, x, cls, ts), accepted / self.n_steps)
