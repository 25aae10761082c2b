r"""Prompt Tuning Inversion (Dong, Xue, Duan & Han, "Prompt Tuning Inversion for Text-Driven Image Editing Using
Diffusion Models", ICCV 2023, arXiv 2305.04441) on any :class:`~gradlab.generative.model.T2IModel`.

**Stage 1 (reconstruction).** DDIM inversion (guidance 1, conditioned on the prompt :math:`c_0`) of the latent
:math:`z_0 = E(x)` gives the trajectory :math:`z^*_0, z^*_{t_1}, \dots, z^*_{t_N}`. Starting from
:math:`\bar z_{t_N} = z^*_{t_N}`, for each sampling step :math:`t` (from :math:`t_N` down) a conditional embedding
:math:`c_t` (the whole ``(L, D)`` token-embedding tensor, padding included), warm-started from the previous step's
(the first from :math:`c_0`), is fitted with ``inner_steps`` Adam iterations so that one classifier-free-guided DDIM
step reproduces the inversion trajectory:

.. math::
    \min_{c_t}\ \big\| z^*_{t'} - \mathrm{DDIM}\big(\bar z_t,\ \epsilon_\theta(\bar z_t, t, \varnothing)
    + w\,(\epsilon_\theta(\bar z_t, t, c_t) - \epsilon_\theta(\bar z_t, t, \varnothing))\big)\big\|^2,
    \qquad \bar z_{t'} = \mathrm{DDIM}(\bar z_t, \tilde\epsilon(c_t)),

with :math:`t'` the next (lower) timestep, :math:`\varnothing` the embedding of ``""`` and the UNet frozen
(gradients only reach :math:`c_t`). This is Null-Text Inversion's scheme (Mokady et al. 2023) with the
*conditional* instead of the unconditional embedding tuned.

**Stage 2 (editing).** Sampling again from :math:`z^*_{t_N}` with guidance :math:`w` and the per-step embedding
:math:`\tilde c_t = \eta\, c_{\text{target}} + (1-\eta)\, c_t`: :math:`\eta = 0` reconstructs, :math:`\eta = 1` is
plain text-to-image sampling of the target prompt from the inverted noise.

The paper leaves some details open; they are arguments here, defaulting to the unofficial implementation
(``wmchen/diffusion-inversion``, whose settings are followed, not its code): stage-1 guidance = the sampling
guidance 7.5, initialisation from the source prompt's embedding, 10 Adam iterations at lr 1e-2 per step, 50 DDIM
steps. Stored :math:`c_t` are cloned (a ``detach()`` alone would share storage between steps, and Adam's in-place
updates would overwrite all of them).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from gradlab.core.validation import check_int, check_positive, check_range, check_tensor, check_type
from gradlab.generative.model import T2IModel

__all__ = ["PTIResult", "PromptTuningInversion", "interpolate_embeddings"]


@dataclass
class PTIResult:
    """What :meth:`PromptTuningInversion.invert` returns; everything needed to reconstruct and edit.

    Attributes:
        latents_T: ``(B, C, h, w)`` the inverted noise :math:`z^*_{t_N}`.
        trajectory: ``(N + 1, B, C, h, w)`` the DDIM-inversion states :math:`z^*_0, \\dots, z^*_{t_N}`.
        cond_embeds: ``(N, B, L, D)`` the tuned :math:`c_t` in sampling order (first entry: the noisiest step).
        null_embeds: ``(B, L, D)`` the unconditional embedding used in both stages.
        source_embeds: ``(B, L, D)`` the prompt's embedding (the inversion condition and default init).
        timesteps: ``(N,)`` the sampling timesteps (descending).
        loss_before, loss_after: ``(N, B)`` the stage-1 loss per step with the initial and the final :math:`c_t`.
        recon_latents: ``(B, C, h, w)`` the stage-1 end state :math:`\\bar z_0`.
        prompts: the source prompt per image.
        guidance_scale: the stage-1 guidance :math:`w`.
        clip_sample: whether the DDIM steps of stage 1 clipped :math:`\\hat z_0` to [-1, 1] (stage 2 reuses it).
    """

    latents_T: torch.Tensor
    trajectory: torch.Tensor
    cond_embeds: torch.Tensor
    null_embeds: torch.Tensor
    source_embeds: torch.Tensor
    timesteps: torch.Tensor
    loss_before: torch.Tensor
    loss_after: torch.Tensor
    recon_latents: torch.Tensor
    prompts: list[str] = field(default_factory=list)
    guidance_scale: float = 7.5
    clip_sample: bool = False

    _TENSORS = ("latents_T", "trajectory", "cond_embeds", "null_embeds", "source_embeds", "timesteps", "loss_before",
                "loss_after", "recon_latents")

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` (``torch.save`` of plain tensors, strings and numbers, via a temporary file renamed
        into place); load with :meth:`load`."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {k: getattr(self, k).detach().cpu() for k in self._TENSORS}
        payload.update(prompts=list(self.prompts), guidance_scale=float(self.guidance_scale),
                       clip_sample=bool(self.clip_sample), format="gradlab.pti/1")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        os.close(fd)
        try:
            torch.save(payload, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu") -> "PTIResult":
        """Read a file written by :meth:`save` (``torch.load(..., weights_only=True)``)."""
        payload = torch.load(Path(path), map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != "gradlab.pti/1":
            raise ValueError(f"{path} is not a PTIResult file (missing format tag 'gradlab.pti/1')")
        return cls(**{k: payload[k] for k in cls._TENSORS}, prompts=list(payload["prompts"]),
                   guidance_scale=float(payload["guidance_scale"]), clip_sample=bool(payload.get("clip_sample", False)))


def interpolate_embeddings(cond_embeds: torch.Tensor, target_embeds: torch.Tensor, eta: float) -> torch.Tensor:
    r""":math:`\tilde c_t = \eta\, c_{\text{target}} + (1-\eta)\, c_t` for every step: ``cond_embeds`` ``(N, B, L, D)``,
    ``target_embeds`` ``(B, L, D)``; ``eta`` in [0, 1] (else ``ValueError``)."""
    eta = check_range("eta", eta, 0.0, 1.0, high_inclusive=True)
    check_tensor("cond_embeds", cond_embeds, ndim=4, floating=True)
    check_tensor("target_embeds", target_embeds, ndim=3, floating=True, finite=True)
    if cond_embeds.shape[1:] != target_embeds.shape:
        raise ValueError(f"target_embeds must have shape {tuple(cond_embeds.shape[1:])}; got {tuple(target_embeds.shape)}")
    return torch.lerp(cond_embeds, target_embeds.unsqueeze(0).expand_as(cond_embeds), eta)


class PromptTuningInversion:
    """Two-stage Prompt Tuning Inversion on a text-to-image diffusion model (see the module docstring).

    Args:
        model: the :class:`~gradlab.generative.model.T2IModel` (frozen: only the embeddings are optimised).
        num_steps: DDIM steps :math:`N` of inversion, tuning and editing.
        guidance_scale: the classifier-free guidance :math:`w` of editing (and of stage 1 unless
            ``stage1_guidance_scale`` is given).
        inner_steps: Adam iterations per step in stage 1 (0 keeps the initial embedding).
        lr: Adam's learning rate.
        stage1_guidance_scale: the guidance of the stage-1 objective (``None``: ``guidance_scale``).
        inversion_guidance_scale: the guidance of the DDIM inversion (1: conditional only, the paper's choice).
        warm_start: initialise each step's :math:`c_t` from the previous step's (the paper); ``False`` restarts every
            step from the initial embedding.
        early_stop: stop a step's iterations once its loss is below this (``0`` never stops early).
        clip_sample: clip the DDIM steps' :math:`\\hat z_0` to [-1, 1] (``DDIMScheduler(clip_sample=True)``; for pixel
            space) in stage 1 and, by default, in stage 2, so that the tuned :math:`c_t` retrace the trajectory with
            the sampler that edits (the inversion itself stays unclipped).
    """

    def __init__(self, model: T2IModel, num_steps: int = 50, guidance_scale: float = 7.5, inner_steps: int = 10,
                 lr: float = 1e-2, *, stage1_guidance_scale: float | None = None,
                 inversion_guidance_scale: float = 1.0, warm_start: bool = True, early_stop: float = 1e-5,
                 clip_sample: bool = False) -> None:
        check_type("model", model, T2IModel)
        self.model = model
        self.num_steps = check_int("num_steps", num_steps, minimum=1,
                                   maximum=model.scheduler.config.num_train_timesteps)
        self.guidance_scale = check_positive("guidance_scale", guidance_scale)
        self.inner_steps = check_int("inner_steps", inner_steps, minimum=0)
        self.lr = check_positive("lr", lr)
        self.stage1_guidance_scale = (self.guidance_scale if stage1_guidance_scale is None
                                      else check_positive("stage1_guidance_scale", stage1_guidance_scale))
        self.inversion_guidance_scale = check_positive("inversion_guidance_scale", inversion_guidance_scale)
        self.warm_start = bool(check_type("warm_start", warm_start, bool))
        self.early_stop = check_positive("early_stop", early_stop, allow_zero=True)
        self.clip_sample = bool(check_type("clip_sample", clip_sample, bool))

    # ------------------------------------------------------------------------------------------------ helpers
    def _prompts(self, prompt: str | Sequence[str], batch: int, name: str) -> list[str]:
        prompts = [prompt] * batch if isinstance(prompt, str) else list(prompt)
        if len(prompts) != batch or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"{name} must be a string or {batch} strings (one per image); got {prompt!r}")
        return prompts

    def _eps(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, null: torch.Tensor, w: float) -> torch.Tensor:
        return self.model.guided_eps(z, t, cond, null, w)

    # ------------------------------------------------------------------------------------------------ stage 0
    @torch.no_grad()
    def ddim_invert(self, latents: torch.Tensor, cond: torch.Tensor, null: torch.Tensor | None = None) -> torch.Tensor:
        """DDIM inversion ``(N + 1, B, C, h, w)`` of ``latents`` (:math:`z_0`) with ``DDIMInverseScheduler``: each
        step evaluates the UNet on the current state at the next timestep (guidance ``inversion_guidance_scale``)."""
        inv = self.model.inverse_scheduler(self.num_steps)
        z, traj = latents, [latents]
        for t in inv.timesteps:
            eps = self._eps(z, t, cond, null, self.inversion_guidance_scale)
            z = inv.step(eps, t, z).prev_sample
            traj.append(z)
        return torch.stack(traj)

    # ------------------------------------------------------------------------------------------------ stage 1
    def invert(self, image: torch.Tensor, prompt: str | Sequence[str], *,
               init_embeds: torch.Tensor | None = None) -> PTIResult:
        """Invert ``image`` (``(B, 3, H, W)`` or ``(3, H, W)`` in [-1, 1]) under ``prompt``; returns the
        :class:`PTIResult` with the per-step tuned embeddings.

        ``init_embeds`` (``(B, L, D)``) replaces the prompt's embedding as the initialisation of the first
        :math:`c_t` (the paper leaves the choice open). Images are processed together (the objective is a sum of
        per-image terms, so each image's embeddings are fitted independently)."""
        m = self.model
        check_tensor("image", image, ndim=(3, 4), floating=True, finite=True)
        if image.ndim == 3:
            image = image.unsqueeze(0)
        if image.shape[1] != 3:
            raise ValueError(f"image must have 3 channels; got shape {tuple(image.shape)}")
        b = image.shape[0]
        prompts = self._prompts(prompt, b, "prompt")
        image = image.to(device=m.device, dtype=m.dtype)
        with torch.no_grad():
            z0 = m.encode_images(image)
            source = m.encode_prompt(prompts).detach().clone()
            null = m.null_embedding(b).detach().clone()
        if init_embeds is not None:
            check_tensor("init_embeds", init_embeds, ndim=3, floating=True, finite=True)
            if init_embeds.shape != source.shape:
                raise ValueError(f"init_embeds must have shape {tuple(source.shape)}; got {tuple(init_embeds.shape)}")
            init = init_embeds.detach().to(source).clone()
        else:
            init = source.clone()
        traj = self.ddim_invert(z0, source, null)
        ddim = m.ddim_scheduler(self.num_steps, clip_sample=self.clip_sample)
        w = self.stage1_guidance_scale
        z_bar = traj[-1].clone()
        c_prev = init
        stored, before, after = [], [], []
        for i, t in enumerate(ddim.timesteps):
            target = traj[-2 - i]
            c = (c_prev if self.warm_start else init).detach().clone().requires_grad_(True)
            with torch.no_grad():
                eps_null = m.unet(z_bar, t, encoder_hidden_states=null).sample if w > 1.0 else None
            opt = torch.optim.Adam([c], lr=self.lr)

            def step_loss(cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                eps_c = m.unet(z_bar, t, encoder_hidden_states=cond).sample
                eps = eps_c if eps_null is None else eps_null + w * (eps_c - eps_null)
                z_next = ddim.step(eps, t, z_bar).prev_sample
                per_image = F.mse_loss(z_next, target, reduction="none").flatten(1).mean(1)
                return per_image, z_next

            with torch.enable_grad():
                per_image, _ = step_loss(c)
                before.append(per_image.detach().clone())
                for k in range(self.inner_steps):
                    if float(per_image.detach().max()) < self.early_stop:
                        break
                    (grad,) = torch.autograd.grad(per_image.sum(), [c])
                    c.grad = grad
                    opt.step()
                    c.grad = None
                    if k < self.inner_steps - 1:
                        per_image, _ = step_loss(c)
            with torch.no_grad():
                per_image, z_bar = step_loss(c.detach())
            after.append(per_image.detach().clone())
            c_prev = c.detach().clone()
            stored.append(c_prev.clone())
        return PTIResult(latents_T=traj[-1].detach().clone(), trajectory=traj.detach(), cond_embeds=torch.stack(stored),
                         null_embeds=null, source_embeds=source, timesteps=ddim.timesteps.detach().cpu().clone(),
                         loss_before=torch.stack(before), loss_after=torch.stack(after),
                         recon_latents=z_bar.detach().clone(), prompts=prompts, guidance_scale=w,
                         clip_sample=self.clip_sample)

    # ------------------------------------------------------------------------------------------------ stage 2
    @torch.no_grad()
    def sample_with_embeddings(self, result: PTIResult, step_embeds: torch.Tensor, *,
                               guidance_scale: float | None = None, **scheduler_overrides: Any) -> torch.Tensor:
        """DDIM + CFG latents from ``result.latents_T`` with conditional embedding ``step_embeds[i]`` at step ``i``
        (``(N, B, L, D)``) and ``result.null_embeds`` as the unconditional branch; ``clip_sample`` defaults to the
        result's."""
        check_type("result", result, PTIResult)
        m = self.model
        w = self.guidance_scale if guidance_scale is None else check_positive("guidance_scale", guidance_scale)
        ddim = m.ddim_scheduler(result.num_steps, **{"clip_sample": result.clip_sample, **scheduler_overrides})
        if not torch.equal(ddim.timesteps.cpu(), result.timesteps.cpu()):
            raise ValueError("result was inverted with another schedule than this model's DDIM schedule")
        check_tensor("step_embeds", step_embeds, ndim=4, floating=True, finite=True)
        if step_embeds.shape[:2] != (result.num_steps, result.latents_T.shape[0]):
            raise ValueError(f"step_embeds must be (num_steps={result.num_steps}, batch, L, D); got "
                             f"{tuple(step_embeds.shape)}")
        z = result.latents_T.to(device=m.device, dtype=m.dtype)
        null = result.null_embeds.to(z)
        for i, t in enumerate(ddim.timesteps):
            eps = m.guided_eps(z, t, step_embeds[i].to(z), null, w)
            z = ddim.step(eps, t, z).prev_sample
        return z

    @torch.no_grad()
    def reconstruct(self, result: PTIResult, *, guidance_scale: float | None = None) -> torch.Tensor:
        """Images (clamped to [-1, 1]) sampled with the tuned :math:`c_t` (``edit`` at :math:`\\eta = 0`);
        guidance defaults to the stage-1 guidance."""
        w = result.guidance_scale if guidance_scale is None else guidance_scale
        z = self.sample_with_embeddings(result, result.cond_embeds, guidance_scale=w)
        return self.model.decode_latents(z).clamp(-1, 1)

    @torch.no_grad()
    def edit(self, result: PTIResult, target_prompt: str | Sequence[str], eta: float, *,
             guidance_scale: float | None = None, **scheduler_overrides: Any) -> torch.Tensor:
        """Edited images (clamped to [-1, 1]): sampling from the inverted noise with
        :math:`\\tilde c_t = \\eta\\, c_{\\text{target}} + (1-\\eta)\\, c_t`.

        Args:
            result: from :meth:`invert`.
            target_prompt: the edit prompt (one, or one per image).
            eta: interpolation weight in [0, 1] (``ValueError`` otherwise).
            guidance_scale: defaults to this object's ``guidance_scale``.
            scheduler_overrides: ``DDIMScheduler`` config overrides (``clip_sample`` defaults to the result's).
        """
        check_type("result", result, PTIResult)
        eta = check_range("eta", eta, 0.0, 1.0, high_inclusive=True)
        prompts = self._prompts(target_prompt, result.latents_T.shape[0], "target_prompt")
        target = self.model.encode_prompt(prompts)
        embeds = interpolate_embeddings(result.cond_embeds.to(target), target, eta)
        z = self.sample_with_embeddings(result, embeds, guidance_scale=guidance_scale, **scheduler_overrides)
        return self.model.decode_latents(z).clamp(-1, 1)
