r"""ControlNet++ reward fine-tuning (Li et al., "ControlNet++: Improving Conditional Controls with Efficient
Consistency Feedback", ECCV 2024, arXiv 2404.07987), on diffusers' ``UNet2DConditionModel`` and
``ControlNetModel``.

**Efficient reward fine-tuning** (paper §3.3). For a training pair (image latent :math:`x_0`, condition
:math:`c_v`, text :math:`c_t`): sample :math:`t \sim U\{0, \dots, T-1\}` and :math:`\epsilon \sim N(0, I)`,
add noise :math:`x_t = \sqrt{\bar\alpha_t}\, x_0 + \sqrt{1 - \bar\alpha_t}\, \epsilon`, predict once with the
frozen UNet plus the trainable ControlNet's residuals, :math:`\hat\epsilon = \epsilon_\theta(x_t, t, c_t, c_v)`,
and denoise in **one step**

.. math::
    \hat x_0 = \frac{x_t - \sqrt{1 - \bar\alpha_t}\, \hat\epsilon}{\sqrt{\bar\alpha_t}}

(``v_prediction``: :math:`\hat x_0 = \sqrt{\bar\alpha_t} x_t - \sqrt{1-\bar\alpha_t}\hat v`; ``sample``: the
output itself), the quantity ``DDPMScheduler.step(...).pred_original_sample`` returns, here vectorised over a
batch of different timesteps. The loss (paper eq. 7) is

.. math::
    \mathcal{L} = \mathcal{L}_{\text{train}} + \lambda \cdot \mathcal{L}_{\text{reward}}, \qquad
    \mathcal{L}_{\text{reward}} = \frac{\sum_b \mathbb{1}[t_b \le t_{\text{thr}}]\,
        \ell\big(\mathbb{D}(\operatorname{dec}(\hat x_{0,b})), c_{v,b}\big)}{\max(1, \sum_b \mathbb{1}[t_b \le t_{\text{thr}}])},

with :math:`\mathcal{L}_{\text{train}}` the usual MSE to the noise (or velocity / sample) target, the reward
only on samples with :math:`t \le t_{\text{thr}}` (200 in the paper: at larger t the one-step estimate is too
blurry to judge), and :math:`\ell \circ \mathbb{D}` a reward of :mod:`gradlab.generative.rewards`. Only the
ControlNet is optimised; the UNet, the decoder and the reward model are frozen, but the reward's gradient flows
*through* them (through the UNet's activations into the ControlNet residuals).

**Naive reward** (what the paper rejects as too costly, Fig. 3 and §3.3): sample :math:`x_0` from pure noise
with a multi-step sampler and backpropagate the reward through the whole chain,
:func:`naive_sampling_reward_loss`. Its memory and time grow linearly with the number of steps.

The design follows the official training script (``train/reward_control.py``, Apache-2.0) in its algorithm;
no code is copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from gradlab.core.validation import check_int, check_positive, check_tensor, check_type

__all__ = ["ControlNetRewardLoss", "ControlNetRewardTrainer", "controlnet_sample", "naive_sampling_reward_loss",
           "predict_original_sample", "VAEDecoder"]

DecodeFn = Callable[[torch.Tensor], torch.Tensor]
RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _require_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as exc:  # pragma: no cover - the generative extra is installed in CI
        raise ImportError("gradlab.generative.controlnet_pp needs diffusers: pip install 'gradlab[generative]'") from exc
    return diffusers


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Half precision -> float32 (the official code computes losses in fp32: fp16 softmax overflows)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _alphas_cumprod(scheduler: Any) -> torch.Tensor:
    ac = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(ac, torch.Tensor) or ac.ndim != 1:
        raise TypeError("noise_scheduler must be a diffusers DDPM-style scheduler with a 1-D alphas_cumprod tensor; "
                        f"got {type(scheduler).__name__}")
    return ac


def predict_original_sample(noise_scheduler: Any, model_output: torch.Tensor, sample: torch.Tensor,
                            timesteps: torch.Tensor) -> torch.Tensor:
    r"""One-step :math:`\hat x_0` for a batch with per-sample ``timesteps`` (vectorised).

    Uses the scheduler's ``alphas_cumprod`` and ``config.prediction_type`` (``epsilon``, ``v_prediction`` or
    ``sample``) and clips to ``±clip_sample_range`` when ``config.clip_sample`` is set, as
    ``DDPMScheduler.step(...).pred_original_sample`` does (SD's scheduler has ``clip_sample=False``;
    dynamic ``thresholding`` is not supported and raises ``ValueError``).
    """
    ac = _alphas_cumprod(noise_scheduler)
    cfg = noise_scheduler.config
    check_tensor("model_output", model_output, floating=True)
    check_tensor("sample", sample, floating=True)
    if model_output.shape != sample.shape:
        raise ValueError(f"model_output and sample must have equal shapes; got {tuple(model_output.shape)} and "
                         f"{tuple(sample.shape)}")
    t = _check_timesteps(timesteps, sample.shape[0], ac.numel())
    if getattr(cfg, "thresholding", False):
        raise ValueError("noise_scheduler.config.thresholding=True (dynamic thresholding) is not supported")
    a = ac.to(device=sample.device, dtype=torch.float32)[t.to(sample.device)]
    a = a.view(-1, *([1] * (sample.ndim - 1))).to(sample.dtype)
    kind = getattr(cfg, "prediction_type", "epsilon")
    if kind == "epsilon":
        x0 = (sample - (1 - a).sqrt() * model_output) / a.sqrt()
    elif kind == "v_prediction":
        x0 = a.sqrt() * sample - (1 - a).sqrt() * model_output
    elif kind == "sample":
        x0 = model_output
    else:
        raise ValueError(f"noise_scheduler.config.prediction_type must be epsilon, v_prediction or sample; got {kind!r}")
    if getattr(cfg, "clip_sample", False):
        r = float(getattr(cfg, "clip_sample_range", 1.0))
        x0 = x0.clamp(-r, r)
    return x0


def _check_timesteps(timesteps: Any, batch: int, num_train_timesteps: int) -> torch.Tensor:
    if not isinstance(timesteps, torch.Tensor):
        raise TypeError(f"timesteps must be a torch.Tensor of ints; got {type(timesteps).__name__}")
    if timesteps.is_floating_point() or timesteps.is_complex() or timesteps.dtype == torch.bool:
        raise TypeError(f"timesteps must be an integer tensor; got {timesteps.dtype}")
    if tuple(timesteps.shape) != (batch,):
        raise ValueError(f"timesteps must have shape ({batch},), one per sample; got {tuple(timesteps.shape)}")
    if batch and (int(timesteps.min()) < 0 or int(timesteps.max()) >= num_train_timesteps):
        raise ValueError(f"timesteps must lie in [0, {num_train_timesteps}); got range "
                         f"[{int(timesteps.min())}, {int(timesteps.max())}]")
    return timesteps.long()


class VAEDecoder(nn.Module):
    """``decode_fn`` for a latent model: ``z -> vae.decode(z / scaling_factor).sample`` (images in [-1, 1]).

    A module, so that :class:`ControlNetRewardTrainer` can check that the VAE is frozen."""

    def __init__(self, vae: nn.Module) -> None:
        super().__init__()
        check_type("vae", vae, nn.Module)
        if not hasattr(vae, "decode"):
            raise TypeError(f"vae must have a decode method (diffusers AutoencoderKL); got {type(vae).__name__}")
        self.vae = vae
        self.scaling_factor = float(getattr(getattr(vae, "config", None), "scaling_factor", 1.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.vae.decode(z / self.scaling_factor)
        return out.sample if hasattr(out, "sample") else out[0]


def _modules_of(fn: Any) -> list[nn.Module]:
    mods = []
    if isinstance(fn, nn.Module):
        mods.append(fn)
    owner = getattr(fn, "__self__", None)
    if isinstance(owner, nn.Module):
        mods.append(owner)
    return mods


@dataclass
class ControlNetRewardLoss:
    """The terms of one :meth:`ControlNetRewardTrainer.loss` call.

    Attributes:
        total: :math:`\\mathcal{L}_{train} + \\lambda \\mathcal{L}_{reward}` (scalar, differentiable).
        diffusion: the plain ControlNet loss :math:`\\mathcal{L}_{train}`.
        reward: :math:`\\mathcal{L}_{reward}`, the mean reward over the samples with ``t <= t_threshold``
            (0 when there are none; detached when ``lam == 0``, reported for monitoring).
        n_rewarded: how many samples entered the reward.
        timesteps: the timesteps used, ``(B,)``.
        pred_original_sample: the one-step :math:`\\hat x_0` (in latent space), ``(B, C, H, W)``.
    """

    total: torch.Tensor
    diffusion: torch.Tensor
    reward: torch.Tensor
    n_rewarded: int
    timesteps: torch.Tensor
    pred_original_sample: torch.Tensor


class ControlNetRewardTrainer:
    r"""The ControlNet++ training objective (see the module docstring): ``loss(batch)`` =
    diffusion loss + ``lam`` · reward loss at ``t <= t_threshold``.

    Args:
        unet: a frozen ``UNet2DConditionModel`` (every parameter ``requires_grad=False``; call
            ``unet.requires_grad_(False)``).
        controlnet: the trainable ``ControlNetModel`` (at least one parameter requiring grad).
        noise_scheduler: a ``DDPMScheduler`` (its ``alphas_cumprod``, ``add_noise`` and ``config``).
        reward: ``reward(images, target) -> per-sample loss (B,)`` on decoded images, e.g.
            :class:`~gradlab.generative.rewards.SobelEdgeReward`; if it is a module, frozen.
        decode_fn: latent -> image (``None``: identity, for pixel-space models; :class:`VAEDecoder` for SD).
            A decoder module must be frozen.
        lam: :math:`\lambda` >= 0 (``--grad_scale`` of the official scripts: 0.2-1.0 per task).
        t_threshold: the largest timestep that receives the reward (200 in the paper), in [0, T].
        conditioning_scale: the ControlNet residual scale (1.0 in training).

    ``loss(batch, generator=None)`` takes a mapping with ``latents`` :math:`x_0` ``(B, C, H, W)``,
    ``condition`` (the ControlNet input image ``(B, k, H', W')``), ``encoder_hidden_states`` ``(B, L, D)``, and
    optionally ``reward_target`` (default: ``condition``), ``timesteps`` ``(B,)`` and ``noise`` (default: drawn
    from ``generator``, t uniform in [0, T)). Raises ``ValueError`` when a parameter other than the ControlNet's
    requires grad (checked at construction and at every call) or on malformed batches.
    """

    def __init__(self, unet: nn.Module, controlnet: nn.Module, noise_scheduler: Any, reward: RewardFn,
                 decode_fn: DecodeFn | None = None, lam: float = 1.0, t_threshold: int = 200,
                 conditioning_scale: float = 1.0) -> None:
        check_type("unet", unet, nn.Module)
        check_type("controlnet", controlnet, nn.Module)
        if not callable(reward):
            raise TypeError(f"reward must be callable as reward(images, target); got {type(reward).__name__}")
        if decode_fn is not None and not callable(decode_fn):
            raise TypeError(f"decode_fn must be callable or None; got {type(decode_fn).__name__}")
        ac = _alphas_cumprod(noise_scheduler)
        if not hasattr(noise_scheduler, "add_noise"):
            raise TypeError("noise_scheduler must provide add_noise (a diffusers DDPMScheduler)")
        self.num_train_timesteps = int(ac.numel())
        self.unet = unet
        self.controlnet = controlnet
        self.noise_scheduler = noise_scheduler
        self.reward = reward
        self.decode_fn = decode_fn
        self.lam = check_positive("lam", lam, allow_zero=True)
        self.t_threshold = check_int("t_threshold", t_threshold, minimum=0, maximum=self.num_train_timesteps)
        self.conditioning_scale = check_positive("conditioning_scale", conditioning_scale, allow_zero=True)
        if getattr(noise_scheduler.config, "thresholding", False):
            raise ValueError("noise_scheduler.config.thresholding=True (dynamic thresholding) is not supported")
        self.check_trainable()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The ControlNet's parameters that require grad (what an optimiser should receive)."""
        return [p for p in self.controlnet.parameters() if p.requires_grad]

    def check_trainable(self) -> None:
        """Raise ``ValueError`` unless only ControlNet parameters require grad (and at least one does)."""
        if not self.trainable_parameters():
            raise ValueError("controlnet has no parameter with requires_grad=True; nothing would be trained")
        own = {id(p) for p in self.controlnet.parameters()}
        frozen: list[tuple[str, nn.Module]] = [("unet", self.unet)]
        frozen += [("reward", m) for m in _modules_of(self.reward)]
        frozen += [("decode_fn", m) for m in _modules_of(self.decode_fn)]
        for label, module in frozen:
            for name, p in module.named_parameters():
                if p.requires_grad and id(p) not in own:
                    raise ValueError(f"only the ControlNet may be trained, but {label} parameter {name!r} has "
                                     f"requires_grad=True; call {label}.requires_grad_(False)")

    def _unpack(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if not isinstance(batch, Mapping):
            raise TypeError(f"batch must be a mapping with latents, condition, encoder_hidden_states; "
                            f"got {type(batch).__name__}")
        for key in ("latents", "condition", "encoder_hidden_states"):
            if key not in batch:
                raise ValueError(f"batch lacks {key!r} (needs latents, condition, encoder_hidden_states)")
        x0 = check_tensor("batch['latents']", batch["latents"], ndim=4, floating=True, finite=True)
        cond = check_tensor("batch['condition']", batch["condition"], ndim=4, floating=True, finite=True)
        ehs = check_tensor("batch['encoder_hidden_states']", batch["encoder_hidden_states"], ndim=3, floating=True,
                           finite=True)
        target = batch.get("reward_target", cond)
        if not isinstance(target, torch.Tensor):
            raise TypeError(f"batch['reward_target'] must be a torch.Tensor; got {type(target).__name__}")
        n = x0.shape[0]
        if n == 0:
            raise ValueError("batch['latents'] must hold at least one sample")
        for key, v in (("condition", cond), ("encoder_hidden_states", ehs), ("reward_target", target)):
            if v.shape[0] != n:
                raise ValueError(f"batch[{key!r}] must have batch size {n} like latents; got shape {tuple(v.shape)}")
        return x0, cond, ehs, target

    def predict(self, noisy: torch.Tensor, timesteps: torch.Tensor, encoder_hidden_states: torch.Tensor,
                condition: torch.Tensor) -> torch.Tensor:
        """The UNet's output with the ControlNet's residuals added (one forward of each)."""
        down, mid = self.controlnet(noisy, timesteps, encoder_hidden_states=encoder_hidden_states,
                                    controlnet_cond=condition, conditioning_scale=self.conditioning_scale,
                                    return_dict=False)
        return self.unet(noisy, timesteps, encoder_hidden_states=encoder_hidden_states,
                         down_block_additional_residuals=down, mid_block_additional_residual=mid,
                         return_dict=False)[0]

    def loss(self, batch: Mapping[str, Any], generator: torch.Generator | None = None) -> ControlNetRewardLoss:
        """Diffusion loss + ``lam`` · reward loss for one batch (see the class docstring)."""
        self.check_trainable()
        x0, cond, ehs, target = self._unpack(batch)
        n = x0.shape[0]
        if batch.get("timesteps") is not None:
            t = _check_timesteps(batch["timesteps"], n, self.num_train_timesteps).to(x0.device)
        else:
            t = torch.randint(0, self.num_train_timesteps, (n,), generator=generator,
                              device=generator.device if generator is not None else "cpu").to(x0.device)
        if batch.get("noise") is not None:
            noise = check_tensor("batch['noise']", batch["noise"], floating=True, finite=True)
            if noise.shape != x0.shape:
                raise ValueError(f"batch['noise'] must have the shape of latents {tuple(x0.shape)}; "
                                 f"got {tuple(noise.shape)}")
        else:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype,
                                device=generator.device if generator is not None else "cpu").to(x0.device)
        noisy = self.noise_scheduler.add_noise(x0, noise, t)
        out = self.predict(noisy, t, ehs, cond)
        kind = getattr(self.noise_scheduler.config, "prediction_type", "epsilon")
        if kind == "epsilon":
            train_target = noise
        elif kind == "v_prediction":
            train_target = self.noise_scheduler.get_velocity(x0, noise, t)
        elif kind == "sample":
            train_target = x0
        else:
            raise ValueError(f"noise_scheduler.config.prediction_type must be epsilon, v_prediction or sample; "
                             f"got {kind!r}")
        diffusion = F.mse_loss(_upcast(out), _upcast(train_target))
        x0_hat = predict_original_sample(self.noise_scheduler, out, noisy, t)
        mask = t <= self.t_threshold
        idx = mask.nonzero(as_tuple=True)[0]
        if idx.numel() == 0:
            reward = diffusion.new_zeros(())
        elif self.lam == 0.0:
            with torch.no_grad():
                reward = self.reward_of(x0_hat[idx], target[idx])
        else:
            reward = self.reward_of(x0_hat[idx], target[idx])
        total = diffusion + self.lam * reward if self.lam != 0.0 else diffusion
        return ControlNetRewardLoss(total=total, diffusion=diffusion, reward=reward, n_rewarded=int(idx.numel()),
                                    timesteps=t, pred_original_sample=x0_hat)

    def reward_of(self, latents: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean reward loss of ``latents`` (decoded by ``decode_fn``) against ``target``."""
        images = latents if self.decode_fn is None else self.decode_fn(latents)
        per_sample = self.reward(_upcast(images), target)
        if not isinstance(per_sample, torch.Tensor) or tuple(per_sample.shape) != (latents.shape[0],):
            shape = tuple(per_sample.shape) if isinstance(per_sample, torch.Tensor) else type(per_sample).__name__
            raise ValueError(f"reward must return one loss per sample, shape ({latents.shape[0]},); got {shape}")
        return per_sample.mean()


def _ddim(noise_scheduler: Any, steps: int) -> Any:
    diffusers = _require_diffusers()
    config = getattr(noise_scheduler, "config", None)
    if config is None:
        raise TypeError(f"noise_scheduler must be a diffusers scheduler with a config; got {type(noise_scheduler).__name__}")
    ddim = diffusers.DDIMScheduler.from_config(config)
    ddim.set_timesteps(steps)
    return ddim


def controlnet_sample(unet: nn.Module, controlnet: nn.Module, noise_scheduler: Any,
                      encoder_hidden_states: torch.Tensor, condition: torch.Tensor, *, num_steps: int = 20,
                      guidance_scale: float = 1.0, negative_embeds: torch.Tensor | None = None,
                      latents: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      conditioning_scale: float = 1.0, latent_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    r"""Deterministic DDIM (:math:`\eta = 0`) sampling with ControlNet residuals and classifier-free guidance.

    A ``DDIMScheduler`` is built from ``noise_scheduler.config`` (so ``clip_sample`` etc. carry over) with
    ``num_steps`` steps. With ``guidance_scale`` :math:`w \ne 1` the prediction is
    :math:`\hat\epsilon_u + w(\hat\epsilon_c - \hat\epsilon_u)`, the unconditional branch using
    ``negative_embeds`` and the same ControlNet condition (as ``StableDiffusionControlNetPipeline`` without
    guess mode). Runs under the caller's grad mode: inside ``torch.no_grad()`` it is an evaluator, otherwise the
    graph of every step is kept (:func:`naive_sampling_reward_loss`). Returns the final latents :math:`x_0`.
    """
    steps = check_int("num_steps", num_steps, minimum=1)
    w = check_positive("guidance_scale", guidance_scale, allow_zero=True)
    ehs = check_tensor("encoder_hidden_states", encoder_hidden_states, ndim=3, floating=True, finite=True)
    cond = check_tensor("condition", condition, ndim=4, floating=True, finite=True)
    n = ehs.shape[0]
    if cond.shape[0] != n:
        raise ValueError(f"condition must have batch size {n} like encoder_hidden_states; got {tuple(cond.shape)}")
    if w != 1.0:
        if negative_embeds is None:
            raise ValueError("guidance_scale != 1 needs negative_embeds (e.g. the empty-prompt embedding)")
        check_tensor("negative_embeds", negative_embeds, ndim=3, floating=True, finite=True)
        if negative_embeds.shape != ehs.shape:
            raise ValueError(f"negative_embeds must have the shape of encoder_hidden_states {tuple(ehs.shape)}; "
                             f"got {tuple(negative_embeds.shape)}")
    if latents is None:
        cfg = unet.config
        shape = latent_shape or (n, int(cfg.in_channels), int(cfg.sample_size), int(cfg.sample_size))
        latents = torch.randn(shape, generator=generator, dtype=ehs.dtype,
                              device=generator.device if generator is not None else "cpu").to(ehs.device)
    else:
        check_tensor("latents", latents, ndim=4, floating=True, finite=True)
        if latents.shape[0] != n:
            raise ValueError(f"latents must have batch size {n}; got {tuple(latents.shape)}")
    ddim = _ddim(noise_scheduler, steps)
    x = latents * ddim.init_noise_sigma
    for t in ddim.timesteps:
        if w != 1.0:
            xin = torch.cat([x, x])
            e_in = torch.cat([negative_embeds, ehs])
            c_in = torch.cat([cond, cond])
        else:
            xin, e_in, c_in = x, ehs, cond
        tt = t.to(x.device)
        down, mid = controlnet(xin, tt, encoder_hidden_states=e_in, controlnet_cond=c_in,
                               conditioning_scale=conditioning_scale, return_dict=False)
        out = unet(xin, tt, encoder_hidden_states=e_in, down_block_additional_residuals=down,
                   mid_block_additional_residual=mid, return_dict=False)[0]
        if w != 1.0:
            u, c = out.chunk(2)
            out = u + w * (c - u)
        x = ddim.step(out, t, x, eta=0.0, return_dict=False)[0]
    return x


def naive_sampling_reward_loss(unet: nn.Module, controlnet: nn.Module, noise_scheduler: Any, reward: RewardFn,
                               encoder_hidden_states: torch.Tensor, condition: torch.Tensor,
                               reward_target: torch.Tensor | None = None, *, steps: int = 10,
                               decode_fn: DecodeFn | None = None, latents: torch.Tensor | None = None,
                               generator: torch.Generator | None = None,
                               conditioning_scale: float = 1.0) -> torch.Tensor:
    r"""The naive consistency reward the paper rejects: sample from pure noise with ``steps`` DDIM steps
    (:func:`controlnet_sample`, guidance 1) keeping the whole graph, decode, and return the mean reward loss
    :math:`\operatorname{mean}_b\, \ell(\mathbb{D}(\operatorname{dec}(x_0^{(b)})), c_v^{(b)})`. Calling
    ``.backward()`` backpropagates through every sampler step (memory and time linear in ``steps``)."""
    check_int("steps", steps, minimum=1)
    if not callable(reward):
        raise TypeError(f"reward must be callable as reward(images, target); got {type(reward).__name__}")
    target = condition if reward_target is None else reward_target
    x0 = controlnet_sample(unet, controlnet, noise_scheduler, encoder_hidden_states, condition, num_steps=steps,
                           latents=latents, generator=generator, conditioning_scale=conditioning_scale)
    images = x0 if decode_fn is None else decode_fn(x0)
    per_sample = reward(_upcast(images), target)
    if not isinstance(per_sample, torch.Tensor) or tuple(per_sample.shape) != (x0.shape[0],):
        raise ValueError(f"reward must return one loss per sample, shape ({x0.shape[0]},)")
    return per_sample.mean()
