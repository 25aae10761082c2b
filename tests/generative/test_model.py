"""T2IModel: schedules vs diffusers' schedulers, the sampler vs StableDiffusionPipeline, storage round trips."""

from __future__ import annotations

import json
import math

import pytest
import torch
from diffusers import (AutoencoderKL, DDIMInverseScheduler, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline)
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.generative.model import SD_LAYOUT, T2IModel, final_layer_norm, load_t2i
from gradlab.generative.tiny import build_tiny_t2i

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_t2i(seed=0)


def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(32, 32),
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=32, sample_size=32).eval()


@pytest.fixture(scope="module")
def with_vae(tiny):
    return T2IModel(tiny.tokenizer, tiny.text_encoder, tiny.unet, tiny.scheduler, tiny_vae())


def test_predict_x0_equals_ddpm_scheduler_step(tiny):
    ref = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(5, 3, 16, 16, generator=g), torch.randn(5, 3, 16, 16, generator=g)
    ts = torch.tensor([0, 1, 250, 777, 999])
    ours = tiny.predict_x0(x, eps, ts)
    for i, t in enumerate(ts.tolist()):
        r = ref.step(eps[i:i + 1], t, x[i:i + 1], generator=g).pred_original_sample
        torch.testing.assert_close(ours[i:i + 1], r, rtol=1e-5, atol=1e-5)
    # closed form with the linear betas, and an int t broadcast over the batch
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[250]
    torch.testing.assert_close(tiny.predict_x0(x, eps, 250), ((x - math.sqrt(1 - abar) * eps) / math.sqrt(abar)).float())
    with pytest.raises(ValueError, match="t must"):
        tiny.predict_x0(x, eps, 1000)
    with pytest.raises(ValueError, match="eps"):
        tiny.predict_x0(x, eps[:2], 3)


@settings(max_examples=20, deadline=None)
@given(t=st.integers(0, 999), scale=st.floats(0.1, 3.0))
def test_predict_x0_inverts_add_noise(tiny, t, scale):
    g = torch.Generator().manual_seed(t)
    x0, eps = scale * torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    xt = tiny.scheduler.add_noise(x0, eps, torch.tensor([t, t]))
    torch.testing.assert_close(tiny.predict_x0(xt, eps, torch.tensor([t, t])), x0, rtol=2e-3, atol=2e-3 * scale * 30)


def _abar(t: int) -> float:
    return float(torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t]) if t >= 0 else 1.0


def test_ddim_and_inverse_steps_equal_hand_computed(tiny):
    ddim, inv = tiny.ddim_scheduler(20), tiny.inverse_scheduler(20)
    assert isinstance(ddim, DDIMScheduler) and isinstance(inv, DDIMInverseScheduler)
    assert ddim.timesteps.tolist() == list(range(951, 0, -50))
    assert inv.timesteps.tolist() == list(range(1, 1000, 50))
    g = torch.Generator().manual_seed(1)
    z, eps = torch.randn(1, 3, 16, 16, generator=g), torch.randn(1, 3, 16, 16, generator=g)
    for t in (951, 501, 1):  # DDIM (eta = 0): t -> t - 50, with alpha_bar(-49) = 1
        a, ap = _abar(t), _abar(t - 50)
        x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        want = math.sqrt(ap) * x0 + math.sqrt(1 - ap) * eps
        torch.testing.assert_close(ddim.step(eps, t, z).prev_sample, want.float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ddim.step(eps, t, z).pred_original_sample, tiny.predict_x0(z, eps, t), rtol=1e-5, atol=1e-5)
    for t in (1, 501, 951):  # inverse: t - 50 -> t
        a, an = _abar(t - 50), _abar(t)
        x0 = (z - math.sqrt(1 - a) * eps) / math.sqrt(a)
        want = math.sqrt(an) * x0 + math.sqrt(1 - an) * eps
        torch.testing.assert_close(inv.step(eps, t, z).prev_sample, want.float(), rtol=1e-5, atol=1e-5)
    # overrides reach the config
    assert tiny.ddim_scheduler(5, clip_sample=True).config.clip_sample is True
    with pytest.raises(ValueError, match="num_steps"):
        tiny.ddim_scheduler(0)


def test_inversion_then_sampling_is_exact_for_an_oracle_eps(tiny):
    # with the same eps at both ends of every step, inverse followed by forward DDIM is the identity
    ddim, inv = tiny.ddim_scheduler(10), tiny.inverse_scheduler(10)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    eps = torch.zeros_like(x)
    z = x
    for t in inv.timesteps:
        z = inv.step(eps, t, z).prev_sample
    for t in ddim.timesteps:
        z = ddim.step(eps, t, z).prev_sample
    torch.testing.assert_close(z, x, rtol=1e-4, atol=1e-4)


def _pipeline(model: T2IModel) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=DDIMScheduler.from_config(model.scheduler.config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])
def test_sampler_equals_stable_diffusion_pipeline(with_vae, guidance_scale):
    pipe = _pipeline(with_vae)
    prompts = ["a red circle", "a blue square"]
    latents = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        want = pipe(prompt=prompts, num_inference_steps=4, guidance_scale=guidance_scale, latents=latents.clone(),
                    output_type="latent").images
    ours = with_vae.sample_latents(with_vae.encode_prompt(prompts), num_steps=4, guidance_scale=guidance_scale,
                                   latents=latents.clone())
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)
    images = with_vae.sample(with_vae.encode_prompt(prompts), num_steps=4, guidance_scale=guidance_scale,
                             latents=latents.clone())
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1
    with torch.no_grad():
        torch.testing.assert_close(images, with_vae.decode_latents(ours).clamp(-1, 1), rtol=1e-5, atol=1e-5)


def test_sampler_with_eta_and_generator_equals_pipeline(with_vae):
    pipe = _pipeline(with_vae)
    latents = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = pipe(prompt="a green triangle", num_inference_steps=3, guidance_scale=3.0, eta=0.7,
                    latents=latents.clone(), generator=torch.Generator().manual_seed(9), output_type="latent").images
    ours = with_vae.sample_latents(with_vae.encode_prompt("a green triangle"), num_steps=3, guidance_scale=3.0,
                                   eta=0.7, latents=latents.clone(), generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)


def test_sampler_validates(tiny):
    emb = tiny.encode_prompt("a red circle")
    with pytest.raises(ValueError, match="eta"):
        tiny.sample(emb, num_steps=2, eta=1.5)
    with pytest.raises(ValueError, match="latents"):
        tiny.sample(emb, num_steps=2, latents=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="negative_embeds"):
        tiny.sample(emb, num_steps=2, negative_embeds=torch.zeros(2, 16, 32))
    with pytest.raises(ValueError, match="prompt_embeds"):
        tiny.sample(torch.full_like(emb, float("nan")), num_steps=2)
    with pytest.raises(TypeError, match="prompts"):
        tiny.encode_prompt([])


def test_encode_prompt_is_final_layer_normed_last_hidden_state(tiny):
    ids = tiny.tokenize(["a red circle", ""])
    assert ids.shape == (2, 16)
    with torch.no_grad():
        out = tiny.text_encoder(ids, output_hidden_states=True)
        ln = final_layer_norm(tiny.text_encoder)
        torch.testing.assert_close(ln(out.hidden_states[-1]), out.last_hidden_state)
        torch.testing.assert_close(tiny.encode_prompt(["a red circle", ""]), out.last_hidden_state)
        torch.testing.assert_close(tiny.null_embedding(3), out.last_hidden_state[1:].expand(3, -1, -1))
    with pytest.raises(ValueError, match="final_layer_norm"):
        final_layer_norm(torch.nn.Linear(2, 2))


def test_encode_decode_images(tiny, with_vae):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert tiny.encode_images(x) is x and tiny.decode_latents(x) is x
    with torch.no_grad():
        z = with_vae.encode_images(x)
        want = with_vae.vae.encode(x).latent_dist.mean * with_vae.vae.config.scaling_factor
        torch.testing.assert_close(z, want)
        torch.testing.assert_close(with_vae.decode_latents(z), with_vae.vae.decode(z / with_vae.vae.config.scaling_factor).sample)
    assert z.shape == (2, 3, 16, 16)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_pretrained_load_t2i_round_trip(with_vae, tmp_path):
    path = with_vae.save_pretrained(tmp_path / "sd")
    assert sorted(p.name for p in path.iterdir()) == ["model_index.json", "scheduler", "text_encoder", "tokenizer",
                                                      "unet", "vae"]
    assert [p.name for p in tmp_path.iterdir()] == ["sd"]  # no temporary left
    back = load_t2i(path)
    for name in ("text_encoder", "unet", "vae"):
        assert _same_weights(getattr(back, name), getattr(with_vae, name))
    assert back.tokenizer("a red circle").input_ids == with_vae.tokenizer("a red circle").input_ids
    public = lambda c: {k: v for k, v in dict(c).items() if not k.startswith("_")}  # noqa: E731
    assert public(back.scheduler.config) == public(with_vae.scheduler.config)
    # the diffusers loader reads our directory too
    pipe = StableDiffusionPipeline.from_pretrained(str(path), local_files_only=True)
    assert _same_weights(pipe.unet, with_vae.unet)
    with pytest.raises(FileExistsError):
        with_vae.save_pretrained(path)


def test_load_t2i_reads_a_stable_diffusion_pipeline_directory(with_vae, tmp_path):
    pipe = _pipeline(with_vae)
    pipe.save_pretrained(str(tmp_path / "pipe"))
    assert json.loads((tmp_path / "pipe" / "model_index.json").read_text())["scheduler"][1] == "DDIMScheduler"
    model = load_t2i(tmp_path / "pipe")
    assert isinstance(model.scheduler, DDPMScheduler) and model.scheduler.config.clip_sample is False
    for name in ("text_encoder", "unet", "vae"):
        assert _same_weights(getattr(model, name), getattr(with_vae, name))
    latents = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    a = model.sample_latents(model.encode_prompt("a red circle"), num_steps=2, guidance_scale=2.0, latents=latents)
    b = with_vae.sample_latents(with_vae.encode_prompt("a red circle"), num_steps=2, guidance_scale=2.0, latents=latents)
    torch.testing.assert_close(a, b)


def test_load_t2i_pixel_space_and_missing_subfolder(tiny, tmp_path):
    path = tiny.save_pretrained(tmp_path / "px")
    assert load_t2i(path).vae is None
    import shutil

    shutil.rmtree(path / "unet")
    with pytest.raises(FileNotFoundError, match=r"unet/.*model_index\.json.*tokenizer/"):
        load_t2i(path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_t2i(tmp_path / "nowhere")
    vae_dir = tmp_path / "needs_vae"
    tiny.save_pretrained(vae_dir)
    index = json.loads((vae_dir / "model_index.json").read_text())
    index["vae"] = ["diffusers", "AutoencoderKL"]
    (vae_dir / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="vae/"):
        load_t2i(vae_dir)
    assert "unet/" in SD_LAYOUT


def test_t2i_model_validates(tiny):
    with pytest.raises(ValueError, match="cross_attention_dim"):
        from transformers import CLIPTextConfig, CLIPTextModel

        te = CLIPTextModel(CLIPTextConfig(vocab_size=600, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                          num_hidden_layers=1, max_position_embeddings=16))
        T2IModel(tiny.tokenizer, te, tiny.unet, tiny.scheduler)
    with pytest.raises(TypeError, match="scheduler"):
        T2IModel(tiny.tokenizer, tiny.text_encoder, tiny.unet, object())
    m = T2IModel(tiny.tokenizer, tiny.text_encoder, tiny.unet, DDIMScheduler.from_config(tiny.scheduler.config))
    assert isinstance(m.scheduler, DDPMScheduler)
