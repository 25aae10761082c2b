"""NeTI mapper, text encoder and processors, with diffusers' textual-inversion loader and AttnProcessor2_0 as the
reference when the mapper is constant and the bypass is off."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
from diffusers.models.attention_processor import AttnProcessor2_0
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.generative.neti import (NeTIAttnProcessor, NeTIContext, NeTIMapper, NeTIStore, NeTITextEncoder,
                                     install_neti, load_mapper, neti_layer_names, save_mapper, token_embedding_norm)
from tests.generative._tiny_parts import tiny_text_encoder, tiny_tokenizer, tiny_unet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def parts():
    tok = tiny_tokenizer(("<c>",))
    te = tiny_text_encoder(tok)
    return tok, te, tiny_unet()


def test_mapper_shapes_parameter_count_and_norm():
    m = NeTIMapper(32, 16, output_norm=0.7).eval()
    # research note §4(d): 373,728 parameters at D = 32 with 16 layers (2048->160->128->128->64 with LayerNorms)
    assert sum(p.numel() for p in m.parameters()) == 373_728
    t = torch.arange(0, 1000, 20).repeat_interleave(16)
    layer = torch.arange(16).repeat(50)
    out = m(t, layer)
    assert out.embedding.shape == (800, 32) and out.bypass.shape == (800, 32)
    full = torch.cat([out.embedding, out.bypass], 1)
    torch.testing.assert_close(full.norm(dim=1), torch.full((800,), 0.7))
    assert bool((out.embedding.norm(dim=1) < 0.7).all())  # normed before the split
    nb = NeTIMapper(32, 4, use_bypass=False).eval()(5, torch.arange(4))
    assert nb.bypass is None and nb.embedding.shape == (4, 32)


def test_fourier_features_and_anchor_init_by_hand():
    m = NeTIMapper(8, 3, num_freqs=16, seed=3)
    w = m.freqs.numpy().astype(np.float64)
    assert abs(w[:, 0].std() - 0.03) < 0.03 and abs(w[:, 1].std() - 2.0) < 2.0
    x = np.array([[417.0, 2.0]])
    proj = x @ w.T
    ref = np.concatenate([np.sin(proj), np.cos(proj)], 1)
    ref /= np.linalg.norm(ref)
    np.testing.assert_allclose(m.encode(torch.tensor([417]), torch.tensor([2])).numpy(), ref, rtol=1e-4, atol=1e-5)
    # the input layer's output at an anchor is 1 at that anchor's unit (cosine similarity of unit vectors)
    anchors = [(t, lyr) for t in range(0, 1000, 100) for lyr in range(3)]
    a = m.input_layer(m.encode(torch.tensor([300]), torch.tensor([1])))
    assert a.shape == (1, 30)
    torch.testing.assert_close(a[0, anchors.index((300, 1))], torch.tensor(1.0))
    assert bool((a[0] <= 1 + 1e-5).all())


def test_nested_dropout_and_truncation():
    m = NeTIMapper(8, 4, hidden_dim=16)
    torch.manual_seed(0)
    h = m.train().hidden(torch.randint(0, 1000, (4000,)), torch.randint(0, 4, (4000,)))
    zero = h == 0
    # a dropped row is zero from some k on and nonzero before (LeakyReLU of LayerNorm output is never exactly 0)
    k = torch.where(zero.any(1), zero.int().argmax(1), torch.full((4000,), 16))
    assert torch.equal(zero, torch.arange(16) >= k[:, None])
    frac = float((k < 16).float().mean())
    assert abs(frac - 0.5 * 16 / 16) < 0.04  # p = 0.5, and k ~ U{0..15} always truncates
    m.eval()
    h1, h2 = m.hidden(10, 1), m.hidden(10, 1)
    assert torch.equal(h1, h2) and bool((h1 != 0).all())
    assert torch.equal(m.hidden(10, 1, truncation_idx=5)[0, 5:], torch.zeros(11))


@settings(max_examples=15, deadline=None)
@given(k=st.integers(0, 16), t=st.integers(0, 999), layer=st.integers(0, 3))
def test_property_truncation_ignores_units_beyond_k(k, t, layer):
    m = NeTIMapper(8, 4, hidden_dim=16, num_freqs=64, output_norm=2.0).eval()
    ref = m(t, layer, truncation_idx=k)
    with torch.no_grad():  # everything that only reaches the units >= k of h (after the last LayerNorm's statistics)
        m.mlp[4].weight[k:] += 5.0
        m.mlp[4].bias[k:] -= 3.0
        m.output_layer.weight[:, k:] *= -7.0
    out = m(t, layer, truncation_idx=k)
    torch.testing.assert_close(out.embedding, ref.embedding)
    torch.testing.assert_close(torch.cat([out.embedding, out.bypass], 1).norm(), torch.tensor(2.0))


def test_mapper_round_trip(tmp_path):
    m = NeTIMapper(16, 4, output_norm=1.3, hidden_dim=32, seed=5)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_mapper(m, tmp_path / "sub" / "mapper.pt")
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    m2 = load_mapper(path)
    assert m2.config == m.config and not m2.training
    t, lyr = torch.tensor([0, 999, 500]), torch.tensor([0, 3, 2])
    m.eval()
    assert torch.equal(m(t, lyr).embedding, m2(t, lyr).embedding)
    assert torch.equal(m(t, lyr).bypass, m2(t, lyr).bypass)
    with pytest.raises(FileNotFoundError):
        load_mapper(tmp_path / "missing.pt")
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a NeTI mapper"):
        load_mapper(tmp_path / "other.pt")


def _constant_mapper(v: torch.Tensor, num_layers: int) -> NeTIMapper:
    m = NeTIMapper(v.numel(), num_layers, output_norm=float(v.norm()), use_bypass=False, hidden_dim=16).eval()
    with torch.no_grad():
        m.output_layer.weight.zero_()
        m.output_layer.bias.copy_(v)
    return m


def test_constant_mapper_without_bypass_equals_diffusers_textual_inversion():
    tok = tiny_tokenizer(())
    te = tiny_text_encoder(tok)
    unet = tiny_unet()
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8,),
                        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                        latent_channels=3, norm_num_groups=8, sample_size=16)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler(clip_sample=False, steps_offset=1),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    v = torch.randn(32, generator=torch.Generator().manual_seed(4))
    pipe.load_textual_inversion({"<c>": v}, token="<c>")  # in-memory state dict, no download
    prompts = ["a photo of <c>", "a <c> square"]
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        ti_states = pipe.text_encoder(ids).last_hidden_state
    # NeTI on a copy whose placeholder row is garbage: only the hook may supply the vector
    nte = copy.deepcopy(pipe.text_encoder)
    with torch.no_grad():
        nte.get_input_embeddings().weight[tok.convert_tokens_to_ids("<c>")] = 100.0
    neti = NeTITextEncoder(nte, tok, "<c>", _constant_mapper(v, 4))
    with torch.no_grad():
        ctx = neti.encode(prompts, 999)
    assert ctx.keys.shape == (4, 2, tok.model_max_length, 32)
    for layer in range(4):
        torch.testing.assert_close(ctx.keys[layer], ti_states, rtol=1e-5, atol=1e-6)
        assert torch.equal(ctx.values[layer], ctx.keys[layer])
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    unet.set_attn_processor(AttnProcessor2_0())
    with torch.no_grad():
        ref = unet(x, 400, encoder_hidden_states=ti_states).sample
    store = NeTIStore()
    store.set(ctx)
    with install_neti(unet, store), torch.no_grad():
        out = unet(x, 400, encoder_hidden_states=torch.zeros_like(ti_states)).sample
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_bypass_on_values_only_at_placeholder_by_hand(parts):
    tok, te, _ = parts
    mapper = NeTIMapper(32, 4, output_norm=token_embedding_norm(te, tok, "square")).eval()
    neti = NeTITextEncoder(te, tok, "<c>", mapper)
    prompts = ["a <c> circle", "a photo of <c>"]
    t = torch.tensor([100, 700])
    with torch.no_grad():
        ctx = neti.encode(prompts, t)
        ids = neti.tokenize(prompts)
        mask = ids == neti.placeholder_id
        for layer in (0, 3):
            out = mapper(t, torch.full((2,), layer))
            ref_te = copy.deepcopy(te)
            for b in range(2):  # a plain encoder with this row's vector written into the table
                ref_te.get_input_embeddings().weight[neti.placeholder_id] = out.embedding[b]
                res = ref_te(ids[b:b + 1], output_hidden_states=True)
                torch.testing.assert_close(ctx.keys[layer, b], res.last_hidden_state[0], rtol=1e-5, atol=1e-6)
                pre = res.hidden_states[-1][0].clone()
                p = int(mask[b].nonzero()[0])
                pre[p] = pre[p] + 0.2 * pre[p].norm() * out.bypass[b] / out.bypass[b].norm()
                ln = te.text_model.final_layer_norm if hasattr(te, "text_model") else te.final_layer_norm
                torch.testing.assert_close(ctx.values[layer, b], ln(pre), rtol=1e-5, atol=1e-6)
        assert torch.equal(ctx.values[:, ~mask], ctx.keys[:, ~mask])
        assert not torch.allclose(ctx.values[:, mask], ctx.keys[:, mask])
        assert not torch.allclose(ctx.keys[0], ctx.keys[3])  # layers get their own embeddings


def test_processors_follow_execution_order_and_route_keys_values(parts):
    tok, te, unet = parts
    names = neti_layer_names(unet)
    assert [n.split(".")[0] for n in names] == ["down_blocks", "mid_block", "up_blocks", "up_blocks"]
    called, handles = [], []
    for n in names:
        handles.append(unet.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: called.append(n)))
    seen_k, seen_v = {}, {}
    for n in names:
        mod = unet.get_submodule(n)
        handles.append(mod.to_k.register_forward_pre_hook(lambda m, a, n=n: seen_k.__setitem__(n, a[0].clone())))
        handles.append(mod.to_v.register_forward_pre_hook(lambda m, a, n=n: seen_v.__setitem__(n, a[0].clone())))
    g = torch.Generator().manual_seed(0)
    ctx = NeTIContext(torch.randn(4, 2, 16, 32, generator=g), torch.randn(4, 2, 16, 32, generator=g))
    store = NeTIStore()
    store.set(ctx)
    try:
        with install_neti(unet, store), torch.no_grad():
            unet(torch.zeros(2, 3, 16, 16), 10, encoder_hidden_states=torch.zeros(2, 16, 32))
    finally:
        for h in handles:
            h.remove()
    assert called == names  # the traced call order (an independent reference for the layer index)
    for i, n in enumerate(names):
        assert torch.equal(seen_k[n], ctx.keys[i]) and torch.equal(seen_v[n], ctx.values[i])


def test_processors_restored_after_exception_and_errors(parts):
    tok, te, unet = parts
    unet.set_attn_processor(AttnProcessor2_0())
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    store = NeTIStore()
    with pytest.raises(RuntimeError, match="context is empty"):
        with install_neti(unet, store), torch.no_grad():
            assert sum(type(p) is NeTIAttnProcessor for p in unet.attn_processors.values()) == 4
            unet(torch.zeros(1, 3, 16, 16), 1, encoder_hidden_states=torch.zeros(1, 16, 32))
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    store.set(NeTIContext(torch.zeros(2, 1, 16, 32), torch.zeros(2, 1, 16, 32)))
    with pytest.raises(ValueError, match="more than 2 layers"):
        with install_neti(unet, store), torch.no_grad():
            unet(torch.zeros(1, 3, 16, 16), 1, encoder_hidden_states=torch.zeros(1, 16, 32))
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    mapper = NeTIMapper(32, 4)
    neti = NeTITextEncoder(te, tok, "<c>", mapper)
    with pytest.raises(ValueError, match="must contain the placeholder"):
        neti.encode(["a red square"], 5)
    with pytest.raises(ValueError, match="one value per prompt"):
        neti.encode(["a <c>"], torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="timesteps must lie"):
        neti.encode(["a <c>"], 1000)
    with pytest.raises(ValueError, match="embed_dim"):
        NeTITextEncoder(te, tok, "<c>", NeTIMapper(16, 4))
    with pytest.raises(ValueError, match="one token"):
        NeTITextEncoder(te, tok, "<zz>", mapper)
    with pytest.raises(ValueError, match="layers must lie"):
        mapper(1, 4)
    with pytest.raises(TypeError, match="integers"):
        mapper(1, torch.tensor([0.5]))
    with pytest.raises(ValueError, match="nested_dropout_p"):
        NeTIMapper(8, 2, nested_dropout_p=1.5)
    with pytest.raises(ValueError, match="output_norm"):
        NeTIMapper(8, 2, output_norm=-1.0)
    ctx = neti.encode(["a <c>"], 3)
    with pytest.raises(ValueError, match="negative must have shape"):
        ctx.with_negative(torch.zeros(2, 16, 32))
    assert ctx.with_negative(torch.ones(1, 16, 32)).keys.shape == (4, 2, 16, 32)


@settings(max_examples=12, deadline=None)
@given(prefix=st.lists(st.sampled_from(["a", "red", "photo", "of", "square"]), max_size=5),
       suffix=st.lists(st.sampled_from(["a", "blue", "circle"]), max_size=5), t=st.integers(0, 999))
def test_property_tokens_before_placeholder_are_plain_clip(parts, prefix, suffix, t):
    tok, te, _ = parts
    neti = NeTITextEncoder(te, tok, "<c>", NeTIMapper(32, 4, output_norm=1.0).eval())
    prompt = " ".join(prefix + ["<c>"] + suffix)
    with torch.no_grad():
        ctx = neti.encode([prompt], t)
        plain = te(neti.tokenize([prompt])).last_hidden_state
    p = len(prefix) + 1
    # CLIP is causal: BOS and the prefix do not see the placeholder, in keys and values, every layer
    for layer in range(4):
        torch.testing.assert_close(ctx.keys[layer, 0, :p], plain[0, :p], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ctx.values[layer, 0, :p], plain[0, :p], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ctx.keys[0, 0, p], plain[0, p])


@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_property_processors_equal_attn_processor_on_plain_contexts(parts, b, seed):
    _, _, unet = parts
    g = torch.Generator().manual_seed(seed)
    ehs = torch.randn(b, 16, 32, generator=g)
    x = torch.randn(b, 3, 16, 16, generator=g)
    unet.set_attn_processor(AttnProcessor2_0())
    with torch.no_grad():
        ref = unet(x, 250, encoder_hidden_states=ehs).sample
    store = NeTIStore()
    store.set(NeTIContext(ehs.expand(4, -1, -1, -1), ehs.expand(4, -1, -1, -1)))
    with install_neti(unet, store), torch.no_grad():
        out = unet(x, 250, encoder_hidden_states=torch.zeros_like(ehs)).sample
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


@settings(max_examples=8, deadline=None)
@given(hidden=st.integers(1, 24), bypass=st.booleans(), norm=st.one_of(st.none(), st.floats(0.1, 10.0)),
       seed=st.integers(0, 100))
def test_property_save_load_round_trip(tmp_path_factory, hidden, bypass, norm, seed):
    m = NeTIMapper(6, 3, hidden_dim=hidden, use_bypass=bypass, output_norm=norm, num_freqs=8, seed=seed).eval()
    path = save_mapper(m, tmp_path_factory.mktemp("m") / "m.pt")
    m2 = load_mapper(path)
    t, lyr = torch.tensor([0, 17, 999]), torch.tensor([2, 0, 1])
    a, b = m(t, lyr), m2(t, lyr)
    assert torch.equal(a.embedding, b.embedding)
    assert (a.bypass is None) == (b.bypass is None) == (not bypass)
