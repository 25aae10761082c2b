"""ControlNet++ reward fine-tuning: references are diffusers' DDPMScheduler/DDIMScheduler and an independent
plain ControlNet loss; tiny UNet/ControlNet built from configs (no download)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

diffusers = pytest.importorskip("diffusers")

from gradlab.generative.controlnet_pp import (ControlNetRewardTrainer, controlnet_sample,  # noqa: E402
                                              naive_sampling_reward_loss, predict_original_sample)
from gradlab.generative.rewards import SobelEdgeReward  # noqa: E402

torch.set_num_threads(1)
S = 8


def tiny_models(seed: int = 0):
    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel(
        sample_size=S, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8)
    controlnet = diffusers.ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8,),
                                                     conditioning_channels=1)
    # from_unet zero-initialises the residual convs; perturb them so the ControlNet actually acts
    with torch.no_grad():
        for mod in list(controlnet.controlnet_down_blocks) + [controlnet.controlnet_mid_block]:
            mod.weight.normal_(0, 0.05)
    unet.requires_grad_(False)
    return unet, controlnet


def make_batch(n: int = 4, seed: int = 0, t=None):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(n, 3, S, S, generator=g) * 2 - 1
    edges = SobelEdgeReward(channel_reduce="max").edge_map(x0)
    batch = {"latents": x0, "condition": edges, "encoder_hidden_states": torch.randn(n, 5, 16, generator=g),
             "noise": torch.randn(n, 3, S, S, generator=g)}
    if t is not None:
        batch["timesteps"] = torch.as_tensor(t, dtype=torch.long)
    return batch


def scheduler(**kw):
    return diffusers.DDPMScheduler(num_train_timesteps=1000, clip_sample=kw.pop("clip_sample", False), **kw)


@pytest.fixture(scope="module")
def models():
    return tiny_models()


# --- x0 prediction vs diffusers ------------------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(ts=st.lists(st.integers(0, 999), min_size=1, max_size=5),
       kind=st.sampled_from(["epsilon", "v_prediction", "sample"]), clip=st.booleans())
def test_x0_matches_ddpm_scheduler_step(ts, kind, clip):
    sch = scheduler(prediction_type=kind, clip_sample=clip)
    g = torch.Generator().manual_seed(len(ts))
    x = torch.randn(len(ts), 3, 4, 4, generator=g) * 2
    out = torch.randn(len(ts), 3, 4, 4, generator=g)
    t = torch.tensor(ts)
    ours = predict_original_sample(sch, out, x, t)
    for i, ti in enumerate(ts):
        ref = sch.step(out[i:i + 1], ti, x[i:i + 1]).pred_original_sample
        torch.testing.assert_close(ours[i:i + 1], ref, rtol=1e-5, atol=1e-5)


def test_x0_rejects_bad_timesteps():
    sch = scheduler()
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="timesteps"):
        predict_original_sample(sch, x, x, torch.tensor([0, 1000]))
    with pytest.raises(TypeError, match="timesteps"):
        predict_original_sample(sch, x, x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="timesteps"):
        predict_original_sample(sch, x, x, torch.tensor([1, 2, 3]))


# --- trainer -------------------------------------------------------------------------------------------------------

def plain_controlnet_loss(unet, controlnet, sch, batch):
    """Independent reference: the diffusers training-example ControlNet loss, written out."""
    x0, noise, t = batch["latents"], batch["noise"], batch["timesteps"]
    a = sch.alphas_cumprod[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    down, mid = controlnet(xt, t, encoder_hidden_states=batch["encoder_hidden_states"],
                           controlnet_cond=batch["condition"], return_dict=False)
    eps = unet(xt, t, encoder_hidden_states=batch["encoder_hidden_states"], down_block_additional_residuals=down,
               mid_block_additional_residual=mid).sample
    return ((eps - noise) ** 2).mean()


def grads(module):
    return [None if p.grad is None else p.grad.clone() for p in module.parameters()]


def test_only_controlnet_gets_grad_and_reward_flows_through_unet(models):
    unet, controlnet = models
    trainer = ControlNetRewardTrainer(unet, controlnet, scheduler(), SobelEdgeReward(channel_reduce="max"), lam=50.0)
    batch = make_batch(t=[10, 50, 150, 700])
    controlnet.zero_grad(set_to_none=True)
    out = trainer.loss(batch)
    assert out.n_rewarded == 3 and float(out.reward.detach()) > 0
    out.total.backward()
    assert all(p.grad is None for p in unet.parameters())
    g_total = grads(controlnet)
    assert all(g is not None for g in g_total) and sum(float(g.abs().sum()) for g in g_total) > 0
    # the reward term alone reaches the ControlNet, i.e. its gradient passed through the frozen UNet
    controlnet.zero_grad(set_to_none=True)
    trainer.loss(batch).reward.backward()
    g_reward = grads(controlnet)
    assert sum(float(g.abs().sum()) for g in g_reward if g is not None) > 0
    assert all(p.grad is None for p in unet.parameters())
    controlnet.zero_grad(set_to_none=True)


def test_lambda_zero_equals_plain_controlnet_loss(models):
    unet, controlnet = models
    sch = scheduler()
    batch = make_batch(t=[3, 100, 400, 999])
    trainer = ControlNetRewardTrainer(unet, controlnet, sch, SobelEdgeReward(), lam=0.0)
    controlnet.zero_grad(set_to_none=True)
    out = trainer.loss(batch)
    out.total.backward()
    ours = grads(controlnet)
    controlnet.zero_grad(set_to_none=True)
    ref = plain_controlnet_loss(unet, controlnet, sch, batch)
    ref.backward()
    theirs = grads(controlnet)
    controlnet.zero_grad(set_to_none=True)
    torch.testing.assert_close(out.total, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.diffusion, ref, rtol=1e-6, atol=1e-7)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert float(out.reward) > 0 and not out.reward.requires_grad  # monitored, not trained


def test_timesteps_above_threshold_give_zero_reward(models):
    unet, controlnet = models
    trainer = ControlNetRewardTrainer(unet, controlnet, scheduler(), SobelEdgeReward(), lam=10.0, t_threshold=200)
    out = trainer.loss(make_batch(t=[201, 500, 800, 999]))
    assert out.n_rewarded == 0 and float(out.reward) == 0.0
    assert torch.equal(out.total, out.diffusion)
    out2 = trainer.loss(make_batch(t=[200, 500, 800, 999]))  # the threshold itself is rewarded
    assert out2.n_rewarded == 1 and float(out2.reward.detach()) > 0


@settings(max_examples=6, deadline=None)
@given(ts=st.lists(st.integers(0, 999), min_size=4, max_size=4), lam=st.floats(0.1, 100.0), thr=st.integers(0, 1000))
def test_loss_is_diffusion_plus_lambda_times_masked_mean_reward(models, ts, lam, thr):
    unet, controlnet = models
    sch = scheduler()
    reward = SobelEdgeReward()
    trainer = ControlNetRewardTrainer(unet, controlnet, sch, reward, lam=lam, t_threshold=thr)
    batch = make_batch(t=ts, seed=sum(ts))
    with torch.no_grad():
        out = trainer.loss(batch)
        ref_diff = plain_controlnet_loss(unet, controlnet, sch, batch)
        t = batch["timesteps"]
        a = sch.alphas_cumprod[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * batch["latents"] + (1 - a).sqrt() * batch["noise"]
        down, mid = controlnet(xt, t, encoder_hidden_states=batch["encoder_hidden_states"],
                               controlnet_cond=batch["condition"], return_dict=False)
        eps = unet(xt, t, encoder_hidden_states=batch["encoder_hidden_states"], down_block_additional_residuals=down,
                   mid_block_additional_residual=mid).sample
        per = []
        for i, ti in enumerate(ts):  # per-sample scheduler.step, the official code's way
            if ti <= thr:
                x0 = sch.step(eps[i:i + 1], ti, xt[i:i + 1]).pred_original_sample
                per.append(float(reward(x0, batch["condition"][i:i + 1])[0]))
    expected_reward = float(np.mean(per)) if per else 0.0
    assert out.n_rewarded == len(per)
    assert float(out.reward) == pytest.approx(expected_reward, rel=1e-4, abs=1e-9)
    assert float(out.total) == pytest.approx(float(ref_diff) + lam * expected_reward, rel=1e-4, abs=1e-8)


def test_random_timesteps_are_seeded_and_in_range(models):
    unet, controlnet = models
    trainer = ControlNetRewardTrainer(unet, controlnet, scheduler(), SobelEdgeReward())
    batch = make_batch()
    del batch["noise"]
    with torch.no_grad():
        a = trainer.loss(batch, generator=torch.Generator().manual_seed(3))
        b = trainer.loss(batch, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.timesteps, b.timesteps) and torch.equal(a.total, b.total)
    assert int(a.timesteps.min()) >= 0 and int(a.timesteps.max()) < 1000


def test_trainable_checks():
    unet, controlnet = tiny_models()
    sch = scheduler()
    unet.requires_grad_(True)
    with pytest.raises(ValueError, match="unet parameter"):
        ControlNetRewardTrainer(unet, controlnet, sch, SobelEdgeReward())
    unet.requires_grad_(False)
    trainer = ControlNetRewardTrainer(unet, controlnet, sch, SobelEdgeReward())
    unet.conv_in.weight.requires_grad_(True)  # unfrozen after construction: caught at the next call
    with pytest.raises(ValueError, match="conv_in"):
        trainer.loss(make_batch(t=[1, 2, 3, 4]))
    unet.requires_grad_(False)
    controlnet.requires_grad_(False)
    with pytest.raises(ValueError, match="controlnet has no parameter"):
        ControlNetRewardTrainer(unet, controlnet, sch, SobelEdgeReward())
    controlnet.requires_grad_(True)
    decoder = nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="decode_fn"):
        ControlNetRewardTrainer(unet, controlnet, sch, SobelEdgeReward(), decode_fn=decoder)
    trainer = ControlNetRewardTrainer(unet, controlnet, sch, SobelEdgeReward(), decode_fn=decoder.requires_grad_(False))
    assert len(trainer.trainable_parameters()) == len(list(controlnet.parameters()))


def test_bad_arguments(models):
    unet, controlnet = models
    sch = scheduler()
    with pytest.raises(ValueError, match="lam"):
        ControlNetRewardTrainer(unet, controlnet, sch, SobelEdgeReward(), lam=-1.0)
    with pytest.raises(ValueError, match="t_threshold"):
        ControlNetRewardTrainer(unet, controlnet, sch, SobelEdgeReward(), t_threshold=1001)
    with pytest.raises(TypeError, match="reward"):
        ControlNetRewardTrainer(unet, controlnet, sch, "sobel")
    with pytest.raises(TypeError, match="noise_scheduler"):
        ControlNetRewardTrainer(unet, controlnet, object(), SobelEdgeReward())
    with pytest.raises(ValueError, match="thresholding"):
        ControlNetRewardTrainer(unet, controlnet, scheduler(thresholding=True), SobelEdgeReward())
    trainer = ControlNetRewardTrainer(unet, controlnet, sch, SobelEdgeReward())
    batch = make_batch(t=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="condition"):
        trainer.loss({k: v for k, v in batch.items() if k != "condition"})
    with pytest.raises(ValueError, match="batch size"):
        trainer.loss({**batch, "encoder_hidden_states": batch["encoder_hidden_states"][:2]})
    with pytest.raises(ValueError, match="NaN"):
        trainer.loss({**batch, "latents": batch["latents"].clone().fill_(float("nan"))})
    with pytest.raises(ValueError, match="noise"):
        trainer.loss({**batch, "noise": batch["noise"][:, :1]})
    with pytest.raises(ValueError, match="timesteps"):
        trainer.loss({**batch, "timesteps": torch.tensor([1, 2, 3, 1000])})
    with pytest.raises(TypeError, match="mapping"):
        trainer.loss([batch["latents"]])
    bad_reward = ControlNetRewardTrainer(unet, controlnet, sch, lambda x, c: x.mean())
    with pytest.raises(ValueError, match="one loss per sample"):
        bad_reward.loss(batch)


# --- sampler and the naive reward ----------------------------------------------------------------------------------

def double_models(models):
    return copy.deepcopy(models[0]).double(), copy.deepcopy(models[1]).double()


def double_batch(b):
    return {k: v.double() if v.is_floating_point() else v for k, v in b.items()}


def test_sampler_matches_manual_ddim_loop_with_cfg(models):
    unet, controlnet = double_models(models)
    sch = scheduler()
    b = double_batch(make_batch(n=2))
    neg = torch.zeros_like(b["encoder_hidden_states"])
    lat = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ours = controlnet_sample(unet, controlnet, sch, b["encoder_hidden_states"], b["condition"], num_steps=4,
                                 guidance_scale=3.0, negative_embeds=neg, latents=lat)
        ddim = diffusers.DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
        ddim.set_timesteps(4)
        x = lat.clone()
        for t in ddim.timesteps:
            outs = []
            for e in (neg, b["encoder_hidden_states"]):
                down, mid = controlnet(x, t, encoder_hidden_states=e, controlnet_cond=b["condition"], return_dict=False)
                outs.append(unet(x, t, encoder_hidden_states=e, down_block_additional_residuals=down,
                                 mid_block_additional_residual=mid).sample)
            x = ddim.step(outs[0] + 3.0 * (outs[1] - outs[0]), t, x).prev_sample
    torch.testing.assert_close(ours, x, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="negative_embeds"):
        controlnet_sample(unet, controlnet, sch, b["encoder_hidden_states"], b["condition"], guidance_scale=2.0)


def test_naive_reward_backpropagates_through_the_sampler(models):
    unet, controlnet = double_models(models)
    sch = scheduler()
    reward = SobelEdgeReward()
    b = double_batch(make_batch(n=2))
    lat = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    controlnet.zero_grad(set_to_none=True)
    loss = naive_sampling_reward_loss(unet, controlnet, sch, reward, b["encoder_hidden_states"], b["condition"],
                                      steps=3, latents=lat)
    loss.backward()
    g = grads(controlnet)
    controlnet.zero_grad(set_to_none=True)
    assert all(p.grad is None for p in unet.parameters())
    assert sum(float(x.abs().sum()) for x in g if x is not None) > 0
    with torch.no_grad():
        x0 = controlnet_sample(unet, controlnet, sch, b["encoder_hidden_states"], b["condition"], num_steps=3,
                               latents=lat)
    assert float(loss.detach()) == pytest.approx(float(reward(x0, b["condition"]).mean()), rel=1e-5)
    # finite-difference check of the gradient through 3 sampler steps along one ControlNet weight direction
    w = controlnet.controlnet_mid_block.weight
    idx = int(torch.argmax(g[[n for n, _ in controlnet.named_parameters()].index("controlnet_mid_block.weight")].abs()))
    gval = float(g[[n for n, _ in controlnet.named_parameters()].index("controlnet_mid_block.weight")].flatten()[idx])
    h = 1e-5
    vals = []
    with torch.no_grad():
        for sign in (1, -1):
            w.view(-1)[idx] += sign * h
            x0 = controlnet_sample(unet, controlnet, sch, b["encoder_hidden_states"], b["condition"], num_steps=3,
                                   latents=lat)
            vals.append(float(reward(x0, b["condition"]).mean()))
            w.view(-1)[idx] -= sign * h
    assert (vals[0] - vals[1]) / (2 * h) == pytest.approx(gval, rel=1e-4, abs=1e-10)
    with pytest.raises(ValueError, match="steps"):
        naive_sampling_reward_loss(unet, controlnet, sch, reward, b["encoder_hidden_states"], b["condition"], steps=0)


@settings(max_examples=5, deadline=None)
@given(steps=st.integers(1, 4), w=st.floats(0.0, 8.0))
def test_guidance_with_identical_branches_is_unguided(models, steps, w):
    """CFG u + w (c - u) with u == c must give the unguided sample whatever w."""
    unet, controlnet = double_models(models)
    b = double_batch(make_batch(n=2))
    lat = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(steps), dtype=torch.float64)
    e = b["encoder_hidden_states"]
    with torch.no_grad():
        plain = controlnet_sample(unet, controlnet, scheduler(), e, b["condition"], num_steps=steps, latents=lat)
        guided = controlnet_sample(unet, controlnet, scheduler(), e, b["condition"], num_steps=steps, latents=lat,
                                   guidance_scale=w, negative_embeds=e.clone())
    torch.testing.assert_close(guided, plain, rtol=1e-9, atol=1e-10)


@settings(max_examples=4, deadline=None)
@given(steps=st.integers(1, 3), seed=st.integers(0, 100))
def test_naive_reward_equals_reward_of_the_sample(models, steps, seed):
    unet, controlnet = models
    b = make_batch(n=2, seed=seed)
    reward = SobelEdgeReward()
    g = lambda: torch.Generator().manual_seed(seed)  # noqa: E731
    with torch.no_grad():
        loss = naive_sampling_reward_loss(unet, controlnet, scheduler(), reward, b["encoder_hidden_states"],
                                          b["condition"], steps=steps, generator=g())
        x0 = controlnet_sample(unet, controlnet, scheduler(), b["encoder_hidden_states"], b["condition"],
                               num_steps=steps, generator=g())
    assert float(loss) == pytest.approx(float(reward(x0, b["condition"]).mean()), rel=1e-6)


def test_vae_decoder_and_latent_space_training():
    from gradlab.generative.controlnet_pp import VAEDecoder

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8),
                                  latent_channels=3, norm_num_groups=4, sample_size=16)
    dec = VAEDecoder(vae)
    z = torch.randn(2, 3, S, S)
    with torch.no_grad():
        torch.testing.assert_close(dec(z), vae.decode(z / vae.config.scaling_factor).sample)
    unet, controlnet = tiny_models()
    with pytest.raises(ValueError, match="decode_fn parameter"):
        ControlNetRewardTrainer(unet, controlnet, scheduler(), SobelEdgeReward(), decode_fn=dec)
    vae.requires_grad_(False)
    trainer = ControlNetRewardTrainer(unet, controlnet, scheduler(), SobelEdgeReward(), decode_fn=dec, lam=1.0)
    batch = make_batch(t=[5, 10, 600, 900])
    batch["condition"] = torch.rand(4, 1, S, S)
    batch["reward_target"] = torch.rand(4, 1, 2 * S, 2 * S)  # decoded images are twice the latent size
    out = trainer.loss(batch)
    out.total.backward()
    assert out.n_rewarded == 2 and all(p.grad is None for p in vae.parameters())
    assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in controlnet.parameters())
    with pytest.raises(TypeError, match="decode"):
        VAEDecoder(nn.Linear(2, 2))
