r"""``T2IModel``: a text-to-image latent (or pixel) diffusion model held as its diffusers/transformers parts, with
the few operations the generative components share, and ``load_t2i`` for a local Stable Diffusion 1.x directory.

Conventions follow ``diffusers.StableDiffusionPipeline`` (Rombach et al. 2022), so that a model saved here loads
there and vice versa:

* prompts are padded to ``tokenizer.model_max_length`` and encoded by the CLIP text encoder; the conditioning is
  its final-layer-normed last hidden state (``text_encoder(ids)[0]``);
* DDIM sampling (Song et al. 2021) with classifier-free guidance (Ho & Salimans 2022)
  :math:`\tilde\epsilon = \epsilon_\theta(z_t, t, \varnothing) + w\,(\epsilon_\theta(z_t, t, c) -
  \epsilon_\theta(z_t, t, \varnothing))`, the unconditional embedding being that of ``""``, and
  :math:`z_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat z_0 + \sqrt{1-\bar\alpha_{t'} - \sigma_t^2}\,\tilde\epsilon +
  \sigma_t \xi` with the one-step estimate :math:`\hat z_0 = (z_t - \sqrt{1-\bar\alpha_t}\,\tilde\epsilon)/
  \sqrt{\bar\alpha_t}` (``DDIMScheduler``, configured from the training ``DDPMScheduler``);
* with a VAE, latents are ``scaling_factor · E(x).mean`` and images ``D(z / scaling_factor)``; without one the
  model works in pixel space and both maps are the identity.

Only public, version-stable APIs are used (``get_input_embeddings()``, ``output_hidden_states=True``, never
``text_encoder.text_model`` or ``clip_skip``), so the code runs on transformers 4 and 5.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from gradlab.core.validation import check_int, check_positive, check_range, check_tensor, check_type

__all__ = ["T2IModel", "load_t2i", "final_layer_norm", "SD_LAYOUT", "require_generative"]

SD_LAYOUT: tuple[str, ...] = ("model_index.json", "scheduler/", "text_encoder/", "tokenizer/", "unet/", "vae/ (optional)")
"""The Stable Diffusion 1.x directory layout that :func:`load_t2i` reads and :meth:`T2IModel.save_pretrained` writes."""


_PIPELINE_DEFAULTS: dict[str, Any] = {"steps_offset": 1, "clip_sample": False}


def require_generative() -> None:
    """Raise ``ImportError`` naming the ``generative`` extra when diffusers/transformers are missing."""
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("gradlab.generative needs diffusers and transformers: pip install 'gradlab[generative]' "
                          f"({exc})") from exc


def final_layer_norm(text_encoder: nn.Module) -> nn.LayerNorm:
    """The final ``LayerNorm`` of a ``CLIPTextModel`` (at ``text_model.final_layer_norm`` in transformers 4, at
    ``final_layer_norm`` in 5), found by module name so that no version-specific attribute is touched."""
    check_type("text_encoder", text_encoder, nn.Module)
    found = [m for name, m in text_encoder.named_modules() if name.split(".")[-1] == "final_layer_norm"]
    if len(found) != 1 or not isinstance(found[0], nn.LayerNorm):
        raise ValueError(f"text_encoder must be a CLIP text model with one final_layer_norm; found {len(found)}")
    return found[0]


class T2IModel:
    """A text-to-image diffusion model: ``tokenizer``, ``text_encoder``, ``unet``, ``scheduler`` (the training
    ``DDPMScheduler``) and an optional ``vae`` (``None``: pixel space).

    Args:
        tokenizer: a ``CLIPTokenizer`` (padding to ``model_max_length``).
        text_encoder: a ``CLIPTextModel``.
        unet: a ``UNet2DConditionModel`` whose ``cross_attention_dim`` equals the text encoder's hidden size.
        scheduler: the noise schedule; any diffusers scheduler config is converted to a ``DDPMScheduler``.
        vae: an ``AutoencoderKL`` or ``None``.
    """

    def __init__(self, tokenizer: Any, text_encoder: nn.Module, unet: nn.Module, scheduler: Any,
                 vae: nn.Module | None = None) -> None:
        require_generative()
        from diffusers import DDPMScheduler

        check_type("text_encoder", text_encoder, nn.Module)
        check_type("unet", unet, nn.Module)
        if vae is not None:
            check_type("vae", vae, nn.Module)
        if not hasattr(scheduler, "config"):
            raise TypeError(f"scheduler must be a diffusers scheduler; got {type(scheduler).__name__}")
        if not callable(tokenizer):
            raise TypeError(f"tokenizer must be a transformers tokenizer; got {type(tokenizer).__name__}")
        hidden = text_encoder.config.hidden_size
        if unet.config.cross_attention_dim != hidden:
            raise ValueError(f"unet.config.cross_attention_dim ({unet.config.cross_attention_dim}) must equal the "
                             f"text encoder's hidden_size ({hidden})")
        if not isinstance(scheduler, DDPMScheduler):
            scheduler = DDPMScheduler.from_config(scheduler.config,
                                                  clip_sample=scheduler.config.get("clip_sample", False))
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.unet = unet
        self.scheduler = scheduler
        self.vae = vae

    # ------------------------------------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def modules(self) -> dict[str, nn.Module]:
        """The ``nn.Module`` parts by name (``vae`` only when present)."""
        parts = {"text_encoder": self.text_encoder, "unet": self.unet}
        if self.vae is not None:
            parts["vae"] = self.vae
        return parts

    def to(self, *args: Any, **kwargs: Any) -> "T2IModel":
        """Move/cast every module in place (``nn.Module.to`` arguments); returns ``self``."""
        for m in self.modules().values():
            m.to(*args, **kwargs)
        return self

    def eval(self) -> "T2IModel":
        for m in self.modules().values():
            m.eval()
        return self

    def requires_grad_(self, flag: bool = True) -> "T2IModel":
        for m in self.modules().values():
            m.requires_grad_(flag)
        return self

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)`` of the UNet's input (latents, or pixels without a VAE)."""
        s = self.unet.config.sample_size
        h, w = (s, s) if isinstance(s, int) else tuple(s)
        return int(self.unet.config.in_channels), int(h), int(w)

    # ------------------------------------------------------------------------------------------------ text
    def tokenize(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Token ids ``(B, model_max_length)``, padded and truncated like ``StableDiffusionPipeline``."""
        prompts = _as_prompt_list(prompts)
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return ids.to(self.text_encoder.device)

    def encode_prompt(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """``(B, L, D)`` final-layer-normed last hidden states of the padded prompts (differentiable)."""
        ids = self.tokenize(prompts)
        out = self.text_encoder(ids, output_hidden_states=True)
        return out.last_hidden_state

    def null_embedding(self, batch: int = 1) -> torch.Tensor:
        """The embedding of ``""`` repeated ``batch`` times, ``(batch, L, D)``."""
        batch = check_int("batch", batch, minimum=1)
        return self.encode_prompt("").expand(batch, -1, -1).contiguous()

    # ------------------------------------------------------------------------------------------------ images
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [-1, 1] to latents (the identity without a VAE; ``scaling_factor·E(x).mean``)."""
        check_tensor("images", images, ndim=4, floating=True, finite=True)
        if self.vae is None:
            return images
        return self.vae.encode(images).latent_dist.mean * self.vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents to images (the identity without a VAE; ``D(z / scaling_factor)``), not clamped."""
        check_tensor("latents", latents, ndim=4, floating=True)
        if self.vae is None:
            return latents
        return self.vae.decode(latents / self.vae.config.scaling_factor).sample

    # ------------------------------------------------------------------------------------------------ schedules
    def ddim_scheduler(self, num_steps: int, **overrides: Any):
        """A ``DDIMScheduler`` from the training schedule's config with ``num_steps`` timesteps set.

        Like ``StableDiffusionPipeline`` (which rewrites these two config entries on construction), it uses
        ``steps_offset=1`` and ``clip_sample=False`` unless ``overrides`` say otherwise (e.g. ``clip_sample=True``):
        with 20 steps the timesteps are 951, 901, ..., 1."""
        from diffusers import DDIMScheduler

        num_steps = check_int("num_steps", num_steps, minimum=1, maximum=self.scheduler.config.num_train_timesteps)
        s = DDIMScheduler.from_config(self.scheduler.config, **{**_PIPELINE_DEFAULTS, **overrides})
        s.set_timesteps(num_steps, device=self.device)
        return s

    def inverse_scheduler(self, num_steps: int, **overrides: Any):
        """A ``DDIMInverseScheduler`` from the training schedule's config, ``num_steps`` timesteps set; its step at
        ``t`` moves noise level ``t - T/num_steps`` to ``t``, so the states it visits are the sampling states of
        :meth:`ddim_scheduler` ``(num_steps)`` in reverse order (same ``steps_offset=1``/``clip_sample=False``
        defaults)."""
        from diffusers import DDIMInverseScheduler

        num_steps = check_int("num_steps", num_steps, minimum=1, maximum=self.scheduler.config.num_train_timesteps)
        s = DDIMInverseScheduler.from_config(self.scheduler.config, **{**_PIPELINE_DEFAULTS, **overrides})
        s.set_timesteps(num_steps, device=self.device)
        return s

    def predict_x0(self, latents: torch.Tensor, eps: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        r"""One-step estimate :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon)/\sqrt{\bar\alpha_t}`,
        vectorised over a per-sample ``t`` (``(B,)`` long tensor) or one ``int``; differentiable in both inputs."""
        check_tensor("latents", latents, floating=True)
        check_tensor("eps", eps, floating=True)
        if eps.shape != latents.shape:
            raise ValueError(f"eps must have the shape of latents {tuple(latents.shape)}; got {tuple(eps.shape)}")
        T = self.scheduler.config.num_train_timesteps
        t = torch.as_tensor(t, device=latents.device)
        if t.is_floating_point() or t.ndim > 1 or (t.ndim == 1 and t.shape[0] != latents.shape[0]):
            raise ValueError(f"t must be an int or a (batch,) integer tensor; got {tuple(t.shape)} {t.dtype}")
        if bool((t < 0).any()) or bool((t >= T).any()):
            raise ValueError(f"t must lie in [0, {T - 1}]")
        abar = self.scheduler.alphas_cumprod.to(device=latents.device, dtype=latents.dtype)[t.long()]
        abar = abar.reshape(-1, *([1] * (latents.ndim - 1)))
        return (latents - (1 - abar).sqrt() * eps) / abar.sqrt()

    def guided_eps(self, latents: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor, uncond: torch.Tensor | None,
                   guidance_scale: float) -> torch.Tensor:
        r"""Classifier-free-guided noise :math:`\epsilon_u + w(\epsilon_c - \epsilon_u)` with one batched UNet call
        (``[uncond, cond]``, the pipeline's order); plain :math:`\epsilon_c` when ``guidance_scale <= 1`` or
        ``uncond`` is ``None``."""
        if uncond is None or guidance_scale <= 1.0:
            return self.unet(latents, t, encoder_hidden_states=cond).sample
        out = self.unet(torch.cat([latents, latents]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
        e_u, e_c = out.chunk(2)
        return e_u + guidance_scale * (e_c - e_u)

    # ------------------------------------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_latents(self, prompt_embeds: torch.Tensor, *, num_steps: int = 20, guidance_scale: float = 7.5,
                       negative_embeds: torch.Tensor | None = None, generator: torch.Generator | None = None,
                       latents: torch.Tensor | None = None, eta: float = 0.0, **scheduler_overrides: Any) -> torch.Tensor:
        """DDIM + classifier-free guidance from ``latents`` (drawn from ``generator`` when ``None``); the final
        latents, equal to ``StableDiffusionPipeline(..., output_type="latent")`` with a ``DDIMScheduler`` of the
        same config. ``negative_embeds`` defaults to :meth:`null_embedding`."""
        from diffusers.utils.torch_utils import randn_tensor

        check_tensor("prompt_embeds", prompt_embeds, ndim=3, floating=True, finite=True)
        guidance_scale = check_positive("guidance_scale", guidance_scale)
        eta = check_range("eta", eta, 0.0, 1.0, high_inclusive=True)
        b = prompt_embeds.shape[0]
        do_cfg = guidance_scale > 1.0
        if negative_embeds is None and do_cfg:
            negative_embeds = self.null_embedding(b).to(prompt_embeds)
        if negative_embeds is not None:
            check_tensor("negative_embeds", negative_embeds, ndim=3, floating=True, finite=True)
            if negative_embeds.shape != prompt_embeds.shape:
                raise ValueError(f"negative_embeds must have the shape of prompt_embeds {tuple(prompt_embeds.shape)};"
                                 f" got {tuple(negative_embeds.shape)}")
        sched = self.ddim_scheduler(num_steps, **scheduler_overrides)
        shape = (b, *self.sample_shape)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=self.device, dtype=prompt_embeds.dtype)
        else:
            check_tensor("latents", latents, ndim=4, floating=True, finite=True)
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must have shape {shape}; got {tuple(latents.shape)}")
        z = latents * sched.init_noise_sigma
        for t in sched.timesteps:
            eps = self.guided_eps(z, t, prompt_embeds, negative_embeds if do_cfg else None, guidance_scale)
            z = sched.step(eps, t, z, eta=eta, generator=generator).prev_sample
        return z

    @torch.no_grad()
    def sample(self, prompt_embeds: torch.Tensor, *, num_steps: int = 20, guidance_scale: float = 7.5,
               negative_embeds: torch.Tensor | None = None, generator: torch.Generator | None = None,
               latents: torch.Tensor | None = None, eta: float = 0.0, **scheduler_overrides: Any) -> torch.Tensor:
        """Images in [-1, 1] (decoded :meth:`sample_latents`, clamped)."""
        z = self.sample_latents(prompt_embeds, num_steps=num_steps, guidance_scale=guidance_scale,
                                negative_embeds=negative_embeds, generator=generator, latents=latents, eta=eta,
                                **scheduler_overrides)
        return self.decode_latents(z).clamp(-1, 1)

    # ------------------------------------------------------------------------------------------------ storage
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write the Stable Diffusion layout (``model_index.json``, ``tokenizer/``, ``text_encoder/``, ``unet/``,
        ``scheduler/``, ``vae/`` when present) to ``directory`` (absent or empty), atomically: everything is written
        to a temporary sibling that is renamed into place."""
        import diffusers

        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise FileExistsError(f"directory must not exist or be empty; {directory} is not")
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
        try:
            self.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            self.text_encoder.save_pretrained(str(tmp / "text_encoder"))
            self.unet.save_pretrained(str(tmp / "unet"))
            self.scheduler.save_pretrained(str(tmp / "scheduler"))
            if self.vae is not None:
                self.vae.save_pretrained(str(tmp / "vae"))
            index = {
                "_class_name": "StableDiffusionPipeline", "_diffusers_version": diffusers.__version__,
                "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False,
                "safety_checker": [None, None],
                "scheduler": ["diffusers", type(self.scheduler).__name__],
                "text_encoder": ["transformers", type(self.text_encoder).__name__],
                "tokenizer": ["transformers", type(self.tokenizer).__name__],
                "unet": ["diffusers", type(self.unet).__name__],
                "vae": ["diffusers", type(self.vae).__name__] if self.vae is not None else [None, None],
            }
            (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
            if directory.exists():
                directory.rmdir()
            os.rename(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return directory


def _as_prompt_list(prompts: str | Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        return [prompts]
    if not isinstance(prompts, Sequence) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError("prompts must be a string or a non-empty sequence of strings")
    return list(prompts)


def load_t2i(path: str | os.PathLike, *, torch_dtype: torch.dtype | None = None) -> T2IModel:
    """Load a local Stable Diffusion 1.x directory (:data:`SD_LAYOUT`, e.g. written by
    ``StableDiffusionPipeline.save_pretrained`` or :meth:`T2IModel.save_pretrained`) with ``local_files_only=True``.

    The ``scheduler/`` config (PNDM, DDIM, DDPM ...) becomes the training ``DDPMScheduler``; ``vae/`` is loaded when
    present (and required when ``model_index.json`` names a VAE). Returned in eval mode.

    Raises:
        FileNotFoundError: ``path`` or a required subfolder is missing (the message lists the layout); nothing
            is ever requested from the Hub.
    """
    require_generative()
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = Path(path)
    layout = ", ".join(SD_LAYOUT)
    if not root.is_dir():
        raise FileNotFoundError(f"path must be a local Stable Diffusion directory ({layout}); {root} is not a directory")
    wants_vae = (root / "vae").is_dir()
    index_file = root / "model_index.json"
    if index_file.is_file():
        try:
            vae_entry = json.loads(index_file.read_text()).get("vae", [None, None])
        except json.JSONDecodeError as exc:
            raise ValueError(f"{index_file} is not valid JSON: {exc}") from exc
        wants_vae = wants_vae or bool(vae_entry and vae_entry[0])
    required = ["tokenizer", "text_encoder", "unet", "scheduler"] + (["vae"] if wants_vae else [])
    missing = [sub for sub in required if not (root / sub).is_dir()]
    if missing:
        raise FileNotFoundError(f"{root} lacks {', '.join(s + '/' for s in missing)}; a Stable Diffusion directory "
                                f"holds {layout}")
    kw: dict[str, Any] = {"local_files_only": True}
    if torch_dtype is not None:
        kw["torch_dtype"] = torch_dtype
    tokenizer = CLIPTokenizer.from_pretrained(str(root / "tokenizer"), local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(str(root / "text_encoder"), **kw)
    unet = UNet2DConditionModel.from_pretrained(str(root / "unet"), **kw)
    config = DDPMScheduler.load_config(str(root / "scheduler"), local_files_only=True)
    scheduler = DDPMScheduler.from_config(config, clip_sample=config.get("clip_sample", False))
    vae = AutoencoderKL.from_pretrained(str(root / "vae"), **kw) if wants_vae else None
    model = T2IModel(tokenizer, text_encoder, unet, scheduler, vae)
    return model.eval()
