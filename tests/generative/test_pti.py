"""PromptTuningInversion (arXiv 2305.04441) against hand-computed DDIM inversion, Adam steps and the sampler."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.generative.pti import PromptTuningInversion, PTIResult, interpolate_embeddings
from gradlab.generative.tiny import build_tiny_t2i, make_shapes

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_t2i(seed=0)


@pytest.fixture(scope="module")
def image():
    return make_shapes(1, seed=11).images


def abar(t: int) -> float:
    return float(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t]) if t >= 0 else 1.0


def ddim_move(z, eps, a_from, a_to):
    x0 = (z - math.sqrt(1 - a_from) * eps) / math.sqrt(a_from)
    return math.sqrt(a_to) * x0 + math.sqrt(1 - a_to) * eps


def test_ddim_inversion_equals_hand_computed(tiny, image):
    pti = PromptTuningInversion(tiny, num_steps=4, inner_steps=0)
    src = tiny.encode_prompt("a red circle").detach()
    traj = pti.ddim_invert(image, src)
    assert traj.shape == (5, 1, 3, 16, 16)
    z = image
    with torch.no_grad():
        for k, t in enumerate((1, 251, 501, 751)):
            eps = tiny.unet(z, t, encoder_hidden_states=src).sample
            z = ddim_move(z, eps, abar(t - 250), abar(t))
            torch.testing.assert_close(traj[k + 1], z, rtol=1e-4, atol=1e-4)


def test_stage1_adam_steps_equal_hand_computed(tiny, image):
    w, lr = 3.0, 5e-2
    pti = PromptTuningInversion(tiny, num_steps=2, guidance_scale=w, inner_steps=1, lr=lr, early_stop=0.0)
    res = pti.invert(image, "a red circle")
    src, null = tiny.encode_prompt("a red circle").detach(), tiny.null_embedding(1).detach()
    traj = pti.ddim_invert(image, src)
    torch.testing.assert_close(res.trajectory, traj)
    z, c = traj[-1], src
    for i, (t, t_next) in enumerate(((501, 1), (1, -499))):
        cc = c.clone().requires_grad_(True)
        with torch.no_grad():
            e_u = tiny.unet(z, t, encoder_hidden_states=null).sample
        e = e_u + w * (tiny.unet(z, t, encoder_hidden_states=cc).sample - e_u)
        loss = F.mse_loss(ddim_move(z, e, abar(t), abar(t_next)), traj[-2 - i])
        (g,) = torch.autograd.grad(loss, cc)
        c = (c - lr * g / (g.abs() + 1e-8)).detach()  # Adam's first step: lr * m_hat / (sqrt(v_hat) + eps)
        torch.testing.assert_close(res.loss_before[i, 0], loss.detach(), rtol=1e-4, atol=1e-7)
        # the first Adam step is lr * sign(g) wherever |g| >> eps; where |g| is near eps (or 0) it is ill-conditioned
        # (a rounding difference in g moves it by up to lr), so those entries are only checked to be within the step
        clear = g.abs() > 1e-4 * g.abs().max()
        assert clear.float().mean() > 0.5
        torch.testing.assert_close(res.cond_embeds[i][clear], c[clear], rtol=1e-4, atol=1e-5)
        assert float((res.cond_embeds[i] - c).abs().max()) <= 2 * lr + 1e-6
        c = res.cond_embeds[i].detach()  # continue from the implementation's state: each step is checked on its own
        with torch.no_grad():
            e = e_u + w * (tiny.unet(z, t, encoder_hidden_states=c).sample - e_u)
            z = ddim_move(z, e, abar(t), abar(t_next))
            torch.testing.assert_close(res.loss_after[i, 0], F.mse_loss(z, traj[-2 - i]), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(res.recon_latents, z, rtol=1e-4, atol=1e-4)


def test_without_tuning_reconstruction_is_plain_cfg_sampling(tiny, image):
    pti = PromptTuningInversion(tiny, num_steps=3, guidance_scale=4.0, inner_steps=0)
    res = pti.invert(image, "a red circle")
    for k in range(3):
        assert torch.equal(res.cond_embeds[k], res.source_embeds)
    want = tiny.sample(res.source_embeds, num_steps=3, guidance_scale=4.0, latents=res.latents_T)
    torch.testing.assert_close(pti.reconstruct(res), want, rtol=1e-5, atol=1e-5)
    # stage 1 runs the two CFG branches as separate UNet calls, the sampler as one batch: float-level differences
    torch.testing.assert_close(tiny.decode_latents(res.recon_latents).clamp(-1, 1), want, rtol=1e-4, atol=1e-4)


def test_edit_endpoints_and_eta_validation(tiny, image):
    pti = PromptTuningInversion(tiny, num_steps=3, guidance_scale=3.0, inner_steps=2)
    res = pti.invert(image, "a red circle")
    target = tiny.encode_prompt("a blue circle")
    torch.testing.assert_close(pti.edit(res, "a blue circle", 1.0),
                               tiny.sample(target, num_steps=3, guidance_scale=3.0, latents=res.latents_T))
    torch.testing.assert_close(pti.edit(res, "a blue circle", 0.0), pti.reconstruct(res))
    half = pti.sample_with_embeddings(res, 0.5 * (res.cond_embeds + target.unsqueeze(0)))
    torch.testing.assert_close(pti.edit(res, "a blue circle", 0.5), half.clamp(-1, 1), rtol=1e-4, atol=1e-4)
    for bad in (-0.1, 1.1, float("nan")):
        with pytest.raises(ValueError, match="eta"):
            pti.edit(res, "a blue circle", bad)
    with pytest.raises(ValueError, match="target_prompt"):
        pti.edit(res, ["a", "b"], 0.5)
    clipped = pti.edit(res, "a blue circle", 0.5, clip_sample=True)
    assert clipped.shape == (1, 3, 16, 16)


def test_clip_sample_is_used_in_both_stages(tiny, image):
    pti = PromptTuningInversion(tiny, num_steps=3, guidance_scale=3.0, inner_steps=0, clip_sample=True)
    res = pti.invert(image, "a red circle")
    assert res.clip_sample is True
    want = tiny.sample(res.source_embeds, num_steps=3, guidance_scale=3.0, latents=res.latents_T, clip_sample=True)
    torch.testing.assert_close(pti.reconstruct(res), want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(tiny.decode_latents(res.recon_latents).clamp(-1, 1), want, rtol=1e-4, atol=1e-4)
    unclipped = tiny.sample(res.source_embeds, num_steps=3, guidance_scale=3.0, latents=res.latents_T)
    torch.testing.assert_close(pti.edit(res, "a red circle", 0.0, clip_sample=False), unclipped, rtol=1e-4, atol=1e-4)


def test_stored_embeddings_are_distinct_clones(tiny, image):
    pti = PromptTuningInversion(tiny, num_steps=4, inner_steps=3, lr=5e-2)
    res = pti.invert(image, "a green square")
    c = res.cond_embeds
    assert c.shape == (4, 1, 16, 32)
    for i in range(3):  # every step moved on from the previous one (aliased storage would make them equal)
        assert not torch.equal(c[i], c[i + 1])
    assert not torch.equal(c[0], res.source_embeds)
    assert float(res.loss_after.mean()) < float(res.loss_before.mean())


def test_batch_is_inverted_independently(tiny):
    imgs = make_shapes(2, seed=5).images
    pti = PromptTuningInversion(tiny, num_steps=2, inner_steps=2, lr=2e-2)
    both = pti.invert(imgs, ["a red circle", "a blue square"])
    one = pti.invert(imgs[1:], "a blue square")
    # Adam normalises each entry's step, so entries with a near-zero gradient can differ by float noise: compare norms
    diff = (both.cond_embeds[:, 1:] - one.cond_embeds).norm() / one.cond_embeds.norm()
    assert float(diff) < 1e-4
    torch.testing.assert_close(both.recon_latents[1:], one.recon_latents, rtol=1e-3, atol=1e-4)


def test_warm_start_and_init_embeds(tiny, image):
    init = torch.zeros(1, 16, 32)
    cold = PromptTuningInversion(tiny, num_steps=2, inner_steps=0, warm_start=False).invert(image, "a red circle",
                                                                                            init_embeds=init)
    assert torch.equal(cold.cond_embeds, torch.zeros(2, 1, 16, 32))
    with pytest.raises(ValueError, match="init_embeds"):
        PromptTuningInversion(tiny, num_steps=2).invert(image, "a red circle", init_embeds=torch.zeros(1, 4, 32))


def test_result_save_load_round_trip(tiny, image, tmp_path):
    pti = PromptTuningInversion(tiny, num_steps=2, inner_steps=1)
    res = pti.invert(image, "a red circle")
    path = res.save(tmp_path / "r" / "pti.pt")
    back = PTIResult.load(path)
    for k in PTIResult._TENSORS:
        assert torch.equal(getattr(back, k), getattr(res, k)), k
    assert back.prompts == ["a red circle"] and back.guidance_scale == res.guidance_scale
    assert back.clip_sample is res.clip_sample is False
    assert [p.name for p in path.parent.iterdir()] == ["pti.pt"]
    torch.testing.assert_close(pti.edit(back, "a blue circle", 0.3), pti.edit(res, "a blue circle", 0.3))
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="PTIResult"):
        PTIResult.load(tmp_path / "other.pt")


def test_validation(tiny, image):
    with pytest.raises(TypeError, match="model"):
        PromptTuningInversion(object())
    with pytest.raises(ValueError, match="num_steps"):
        PromptTuningInversion(tiny, num_steps=0)
    with pytest.raises(ValueError, match="lr"):
        PromptTuningInversion(tiny, lr=-1.0)
    pti = PromptTuningInversion(tiny, num_steps=2, inner_steps=0)
    with pytest.raises(ValueError, match="image"):
        pti.invert(torch.full_like(image, float("nan")), "a red circle")
    with pytest.raises(ValueError, match="channels"):
        pti.invert(torch.zeros(1, 1, 16, 16), "a red circle")
    with pytest.raises(ValueError, match="prompt"):
        pti.invert(image, ["a", "b"])
    res = pti.invert(image[0], "a red circle")  # (3, H, W) accepted
    assert res.latents_T.shape == (1, 3, 16, 16)
    # the result fixes the schedule: another step count in the editor does not matter, a foreign schedule raises
    torch.testing.assert_close(PromptTuningInversion(tiny, num_steps=3, inner_steps=0).edit(res, "a red circle", 0.5),
                               pti.edit(res, "a red circle", 0.5))
    res.timesteps = res.timesteps + 1
    with pytest.raises(ValueError, match="schedule"):
        pti.edit(res, "a red circle", 0.5)


@settings(max_examples=30, deadline=None)
@given(eta=st.floats(0.0, 1.0), seed=st.integers(0, 1000))
def test_interpolation_is_the_convex_combination(eta, seed):
    g = torch.Generator().manual_seed(seed)
    c, tgt = torch.randn(3, 2, 4, 5, generator=g), torch.randn(2, 4, 5, generator=g)
    out = interpolate_embeddings(c, tgt, eta)
    torch.testing.assert_close(out, eta * tgt.unsqueeze(0) + (1 - eta) * c, rtol=1e-5, atol=1e-5)
    lo, hi = torch.minimum(c, tgt.expand_as(c)), torch.maximum(c, tgt.expand_as(c))
    assert bool((out >= lo - 1e-5).all() and (out <= hi + 1e-5).all())
