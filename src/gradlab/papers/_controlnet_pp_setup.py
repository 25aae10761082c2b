"""Training and evaluation helpers of the ControlNet++ claims (a separate module so that editing the claim code
does not invalidate the cached stage-A ControlNet; the registry skips names starting with ``_``).

Task: the shared tiny pixel-space text-to-image model (:func:`gradlab.generative.tiny.load_tiny_t2i`, frozen),
ControlNets from ``ControlNetModel.from_unet`` (``conditioning_embedding_out_channels=(16,)``, one conditioning
channel) conditioned on the Sobel edge map of the image (:class:`SobelEdgeReward` with ``channel_reduce="max"``,
colour-independent for saturated shapes on black), caption ``"a {colour} {shape}"``.

* Stage A (cached with :func:`gradlab.generative.cache.cached_artifact`): plain ControlNet training (lambda = 0).
* Stage B: forks of stage A trained with the same data, timesteps and noise for lambda > 0 and lambda = 0 (cached
  per seed too, so both claims share them).
* Evaluation: held-out one-step reward loss at fixed (t <= 200, noise) draws; 20-step DDIM samples scored by
  edge F1 of morphological boundaries (a different operator than the reward's Sobel magnitude).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from gradlab.generative.cache import cached_artifact
from gradlab.generative.controlnet_pp import ControlNetRewardTrainer, controlnet_sample
from gradlab.generative.rewards import SobelEdgeReward
from gradlab.generative.tiny import make_shapes

T_THRESHOLD = 200
EDGE_REWARD = dict(channel_reduce="max")

STAGE_A_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": {"t2i": "smoke", "steps": 6, "batch": 8, "lr": 1e-3, "seed": 0},
    "quick": {"t2i": "quick", "steps": 2000, "batch": 16, "lr": 1e-3, "seed": 0},
}
STAGE_A_RECIPES["full"] = dict(STAGE_A_RECIPES["quick"])


def stage_a_recipe(scale: str) -> dict[str, Any]:
    """The stage-A recipe with the cache key of the T2I model it is trained on (retrained when that changes)."""
    from gradlab.generative.cache import artifact_key
    from gradlab.generative.tiny import TINY_T2I_RECIPES, _build_tiny_t2i_artifact

    recipe = dict(STAGE_A_RECIPES[scale])
    t2i = dict(TINY_T2I_RECIPES[recipe["t2i"]])
    recipe["t2i_key"] = artifact_key(t2i, _build_tiny_t2i_artifact(t2i))
    return recipe


def edge_reward() -> SobelEdgeReward:
    return SobelEdgeReward(**EDGE_REWARD)


def make_pairs(model: Any, n: int, seed: int) -> dict[str, Any]:
    """Shapes, their edge conditions and caption embeddings (no grad)."""
    data = make_shapes(n, seed)
    with torch.no_grad():
        emb = model.encode_prompt(data.captions)
        cond = edge_reward().edge_map(data.images)
    return {"latents": data.images, "condition": cond, "encoder_hidden_states": emb, "masks": data.masks,
            "captions": data.captions}


def new_controlnet(unet: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    from diffusers import ControlNetModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cn = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16,), conditioning_channels=1)
    return cn


def train_controlnet(model: Any, controlnet: torch.nn.Module, *, lam: float, steps: int, batch: int, lr: float,
                     seed: int, progress: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """AdamW on the ControlNet with :class:`ControlNetRewardTrainer` (lambda ``lam``); data stream, timesteps and
    noise depend on ``seed`` only (so lambda = 0 and lambda > 0 forks see identical batches)."""
    model.unet.requires_grad_(False)
    controlnet.requires_grad_(True).train()
    trainer = ControlNetRewardTrainer(model.unet, controlnet, model.scheduler, edge_reward(), lam=lam,
                                      t_threshold=T_THRESHOLD)
    opt = torch.optim.AdamW(trainer.trainable_parameters(), lr=lr, weight_decay=1e-2, foreach=True)
    g = torch.Generator().manual_seed(seed)
    log = []
    for step in range(steps):
        b = make_pairs(model, batch, seed=seed * 1_000_003 + step)
        out = trainer.loss(b, generator=g)
        opt.zero_grad(set_to_none=True)
        out.total.backward()
        opt.step()
        log.append({"total": float(out.total.detach()), "diffusion": float(out.diffusion.detach()),
                    "reward": float(out.reward.detach()), "n_rewarded": out.n_rewarded})
        if progress is not None:
            progress(step + 1)
    controlnet.eval()
    return log


def _load_controlnet(path: Path) -> torch.nn.Module:
    from diffusers import ControlNetModel

    return ControlNetModel.from_pretrained(path, local_files_only=True).eval()


class _BuildStageA:
    """``build(tmp)`` for the cached stage-A ControlNet (a class: this module's source keys the cache)."""

    def __init__(self, recipe: dict[str, Any], cache_dir: Any) -> None:
        self.recipe, self.cache_dir = recipe, cache_dir

    def __call__(self, tmp: Path) -> None:
        from gradlab.generative.tiny import load_tiny_t2i

        r = self.recipe
        model = load_tiny_t2i(r["t2i"], cache_dir=self.cache_dir)
        cn = new_controlnet(model.unet, seed=r["seed"])
        t0 = time.perf_counter()
        log = train_controlnet(model, cn, lam=0.0, steps=r["steps"], batch=r["batch"], lr=r["lr"], seed=r["seed"])
        seconds = time.perf_counter() - t0
        cn.save_pretrained(tmp / "controlnet")
        (tmp / "train_log.json").write_text(json.dumps({"log": log, "train_seconds": seconds,
                                                        "threads": torch.get_num_threads()}))


def load_stage_a(scale: str, cache_dir: Any = None) -> tuple[Any, torch.nn.Module, dict[str, Any]]:
    """(tiny T2I model, stage-A ControlNet, its training log) for ``scale``, trained once and cached."""
    from gradlab.generative.tiny import load_tiny_t2i

    recipe = stage_a_recipe(scale)
    t0 = time.perf_counter()
    model = load_tiny_t2i(recipe["t2i"], cache_dir=cache_dir)
    path = cached_artifact(f"controlnet-pp-stage-a-{scale}", recipe, _BuildStageA(recipe, cache_dir),
                           cache_dir=cache_dir)
    info = json.loads((path / "train_log.json").read_text())
    info["load_or_build_seconds"] = time.perf_counter() - t0
    return model, _load_controlnet(path / "controlnet"), info


class _BuildStageB:
    def __init__(self, recipe: dict[str, Any], stage_a: torch.nn.Module, model: Any) -> None:
        self.recipe, self.stage_a, self.model = recipe, stage_a, model

    def __call__(self, tmp: Path) -> None:
        import copy

        r = self.recipe
        cn = copy.deepcopy(self.stage_a)
        t0 = time.perf_counter()
        log = train_controlnet(self.model, cn, lam=r["lam"], steps=r["steps"], batch=r["batch"], lr=r["lr"],
                               seed=r["seed"])
        seconds = time.perf_counter() - t0
        cn.save_pretrained(tmp / "controlnet")
        (tmp / "train_log.json").write_text(json.dumps({"log": log, "train_seconds": seconds}))


def stage_b(model: Any, stage_a: torch.nn.Module, scale: str, *, lam: float, steps: int, batch: int, lr: float,
            seed: int, cache_dir: Any = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A stage-B fork of ``stage_a`` (cached by recipe, stage-A recipe and this module's source)."""
    recipe = {"stage_a": stage_a_recipe(scale), "lam": float(lam), "steps": steps, "batch": batch, "lr": lr,
              "seed": seed}
    path = cached_artifact(f"controlnet-pp-stage-b-{scale}", recipe, _BuildStageB(recipe, stage_a, model),
                           cache_dir=cache_dir)
    return _load_controlnet(path / "controlnet"), json.loads((path / "train_log.json").read_text())


def calibrate_lambda(model: Any, controlnet: torch.nn.Module, n: int, seed: int) -> dict[str, float]:
    """lambda = L_train / L_reward of ``controlnet`` on ``n`` pairs at its start (the rule "lambda * L_reward ~
    L_train at start"): diffusion loss over uniform t, reward over t uniform in [0, T_THRESHOLD]."""
    trainer = ControlNetRewardTrainer(model.unet.requires_grad_(False), controlnet.requires_grad_(True),
                                      model.scheduler, edge_reward(), lam=1.0, t_threshold=T_THRESHOLD)
    b = make_pairs(model, n, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        diff = trainer.loss({**b, "timesteps": torch.randint(0, 1000, (n,), generator=g)}).diffusion
        rew = trainer.loss({**b, "timesteps": torch.randint(0, T_THRESHOLD + 1, (n,), generator=g)}).reward
    return {"lam": float(diff / rew), "L_train": float(diff), "L_reward": float(rew)}


def one_step_reward(model: Any, controlnet: torch.nn.Module, pairs: dict[str, Any], draws: int,
                    seed: int) -> torch.Tensor:
    """Per-pair held-out one-step reward loss at t <= T_THRESHOLD: mean over ``draws`` fixed (t, noise) draws
    (t uniform in [0, T_THRESHOLD]); ``(n,)``."""
    n = pairs["latents"].shape[0]
    g = torch.Generator().manual_seed(seed)
    trainer = ControlNetRewardTrainer(model.unet.requires_grad_(False), controlnet.requires_grad_(True),
                                      model.scheduler, edge_reward(), lam=1.0, t_threshold=T_THRESHOLD)
    reward = edge_reward()
    per = torch.zeros(n)
    with torch.no_grad():
        for _ in range(draws):
            t = torch.randint(0, T_THRESHOLD + 1, (n,), generator=g)
            noise = torch.randn(pairs["latents"].shape, generator=g)
            out = trainer.loss({**pairs, "timesteps": t, "noise": noise})
            per += reward(out.pred_original_sample, pairs["condition"])
    controlnet.requires_grad_(False)
    return per / draws


def held_out_diffusion_loss(model: Any, controlnet: torch.nn.Module, pairs: dict[str, Any], seed: int) -> float:
    """Plain epsilon-MSE on held-out pairs at fixed uniform (t, noise) (a check that the reward does not wreck it)."""
    n = pairs["latents"].shape[0]
    g = torch.Generator().manual_seed(seed)
    trainer = ControlNetRewardTrainer(model.unet.requires_grad_(False), controlnet.requires_grad_(True),
                                      model.scheduler, edge_reward(), lam=0.0, t_threshold=T_THRESHOLD)
    with torch.no_grad():
        out = trainer.loss({**pairs, "timesteps": torch.randint(0, 1000, (n,), generator=g),
                            "noise": torch.randn(pairs["latents"].shape, generator=g)})
    controlnet.requires_grad_(False)
    return float(out.diffusion)


def sample_images(model: Any, controlnet: torch.nn.Module, pairs: dict[str, Any], *, steps: int,
                  guidance_scale: float, seed: int) -> torch.Tensor:
    """``steps``-step DDIM samples (classifier-free guidance against the empty prompt), clamped to [-1, 1]."""
    n = pairs["latents"].shape[0]
    lat = torch.randn(pairs["latents"].shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        neg = model.null_embedding(n)
        x = controlnet_sample(model.unet, controlnet, model.scheduler, pairs["encoder_hidden_states"],
                              pairs["condition"], num_steps=steps, guidance_scale=guidance_scale,
                              negative_embeds=neg, latents=lat)
    return x.clamp(-1, 1)


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """Inner 4-neighbourhood boundary of a binary mask ``(B, 1, H, W)``: ``mask & ~erode(mask)``."""
    m = mask.float()
    padded = F.pad(m, (1, 1, 1, 1), value=0.0)
    er = torch.minimum(torch.minimum(padded[..., :-2, 1:-1], padded[..., 2:, 1:-1]),
                       torch.minimum(padded[..., 1:-1, :-2], padded[..., 1:-1, 2:]))
    return (m * (1 - torch.minimum(er, m))) > 0.5


def edge_f1(images: torch.Tensor, masks: torch.Tensor, tolerance: int = 1) -> torch.Tensor:
    """Per-image F1 of morphological boundaries: generated foreground = brightest channel > 0.5 in [0, 1] (the
    background is black), boundaries by :func:`boundary`, a boundary pixel matches when the other boundary has a
    pixel within ``tolerance`` (Chebyshev). ``(B,)``; 1.0 when both boundaries are empty."""
    fg = ((images + 1) / 2).amax(dim=1, keepdim=True) > 0.5
    pred, gt = boundary(fg).float(), boundary(masks.bool()).float()
    k = 2 * tolerance + 1
    near_gt = F.max_pool2d(gt, k, stride=1, padding=tolerance)
    near_pred = F.max_pool2d(pred, k, stride=1, padding=tolerance)
    tp_p = (pred * near_gt).flatten(1).sum(1)
    tp_r = (gt * near_pred).flatten(1).sum(1)
    n_p, n_g = pred.flatten(1).sum(1), gt.flatten(1).sum(1)
    precision = torch.where(n_p > 0, tp_p / n_p.clamp_min(1), (n_g == 0).float())
    recall = torch.where(n_g > 0, tp_r / n_g.clamp_min(1), (n_p == 0).float())
    return torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                       torch.zeros_like(precision))


def saved_tensor_bytes(fn: Callable[[], torch.Tensor], exclude: tuple[torch.nn.Module, ...] = ()
                       ) -> tuple[torch.Tensor, dict[str, int]]:
    """Run ``fn()`` recording every tensor autograd saves for backward (``saved_tensors_hooks``); returns the
    output and ``{"bytes_unique": bytes of the distinct storages, "bytes_total": bytes summed over saves}``,
    leaving out the parameter storages of the ``exclude`` modules (held whether or not a graph is built)."""
    skip = {p.untyped_storage().data_ptr() for m in exclude for p in m.parameters()}
    seen: dict[int, int] = {}
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if st.data_ptr() in skip:
            return t
        total[0] += t.numel() * t.element_size()
        seen[st.data_ptr()] = max(seen.get(st.data_ptr(), 0), st.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, {"bytes_unique": int(sum(seen.values())), "bytes_total": int(total[0])}
