"""AlignIT K/V infusion: exactness against the base and customised models, and diffusers' AttnProcessor2_0 as the
reference when nothing is customised."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.generative.alignit import AlignITAttnProcessor, AlignITController, install_alignit
from tests.generative._tiny_parts import customised, tiny_text_encoder, tiny_tokenizer, tiny_unet

torch.set_num_threads(1)

PROMPTS = ["a <v*> square", "a <v*> triangle"]


@pytest.fixture(scope="module")
def parts():
    tok = tiny_tokenizer()
    te = tiny_text_encoder(tok)
    unet = tiny_unet()
    cte, cunet = customised(te, unet)
    return tok, te, unet, cte, cunet


def _plain_eps(unet, x, t, states):
    unet.set_attn_processor(AttnProcessor2_0())
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=states).sample


def _record_linear_outputs(unet, names, attr):
    logs, handles = {n: [] for n in names}, []
    for n in names:
        mod = getattr(unet.get_submodule(n), attr)
        handles.append(mod.register_forward_hook(lambda m, i, o, n=n: logs[n].append(o.detach().clone())))
    return logs, handles


def test_customised_equal_base_matches_attn_processor_2_0(parts):
    tok, te, unet, _, _ = parts
    # dummy "a {}" gives the concept the same causal prefix as in the prompts, so nothing may change
    ctrl = AlignITController(te, te, tok, ["<v*>"], "a {}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        states = te(input_ids=ctrl.tokenize(PROMPTS)).last_hidden_state
        uncond = te(input_ids=ctrl.tokenize(["", ""])).last_hidden_state
    ref = _plain_eps(unet, x, 500, states)
    ref_cfg = _plain_eps(unet, torch.cat([x, x]), 500, torch.cat([uncond, states]))
    cond = ctrl.encode(PROMPTS)
    assert torch.equal(cond, states)
    with install_alignit(unet, ctrl), torch.no_grad():
        out = unet(x, 500, encoder_hidden_states=cond).sample
        out_cfg = unet(torch.cat([x, x]), 500, encoder_hidden_states=torch.cat([uncond, cond])).sample
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_cfg, ref_cfg, rtol=1e-5, atol=1e-6)


def test_prompt_without_concept_is_base_model_exactly(parts):
    tok, te, unet, cte, cunet = parts
    ctrl = AlignITController(te, cte, tok, ["<v*>"], "a photo of {}")
    with pytest.raises(ValueError, match="must contain the concept"):
        ctrl.encode(["a red square"])
    cond = ctrl.encode(["a red square", "a blue circle"], require_concept=False)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base_states = te(input_ids=ctrl.tokenize(["a red square", "a blue circle"])).last_hidden_state
    # the customised UNet differs from the base only in attn2.to_k/to_v, so base K/V make it the base model
    ref = _plain_eps(unet, x, 300, base_states)
    with install_alignit(cunet, ctrl, base_unet=unet), torch.no_grad():
        out = cunet(x, 300, encoder_hidden_states=cond).sample
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_kv_exact_every_layer_and_step(parts):
    tok, te, unet, cte, cunet = parts
    ctrl = AlignITController(te, cte, tok, ["<v*>"], "a photo of {}")
    cond = ctrl.encode(PROMPTS)
    names = [n for n in (k[: -len(".processor")] for k in unet.attn_processors) if n.endswith("attn2")]
    with torch.no_grad():  # independent references: the plain models' own projections, via forward hooks
        ids = ctrl.tokenize(PROMPTS)
        base_states = te(input_ids=ids).last_hidden_state
        dummy_ids = ctrl.tokenize([ctrl.dummy_prompt])
        dummy_states = cte(input_ids=dummy_ids).last_hidden_state
        uncond = cte(input_ids=ctrl.tokenize(["", ""])).last_hidden_state
        refs = {}
        for model, states, key in ((unet, base_states, "base"), (cunet, dummy_states, "custom"),
                                   (cunet, uncond, "uncond")):
            lk, hk = _record_linear_outputs(model, names, "to_k")
            lv, hv = _record_linear_outputs(model, names, "to_v")
            _plain_eps(model, torch.zeros(states.shape[0], 3, 16, 16), 10, states)
            for h in hk + hv:
                h.remove()
            refs[key] = {n: (lk[n][0], lv[n][0]) for n in names}
    mask = (ids == tok.convert_tokens_to_ids("<v*>"))
    dpos = int((dummy_ids[0] == tok.convert_tokens_to_ids("<v*>")).nonzero()[0])
    assert mask.sum() == 2
    ctrl.record = True
    steps = (900, 500, 100)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with install_alignit(cunet, ctrl, base_unet=unet), torch.no_grad():
        for t in steps:
            cunet(x, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
    assert sorted(ctrl.kv_log) == sorted(names)
    for n in names:
        assert len(ctrl.kv_log[n]) == len(steps)
        for key, value in ctrl.kv_log[n]:
            for got, ref_b, ref_c, ref_u in ((key, *(refs[k][n][0] for k in ("base", "custom", "uncond"))),
                                             (value, *(refs[k][n][1] for k in ("base", "custom", "uncond")))):
                assert torch.equal(got[:2], ref_u)  # unconditional half untouched
                c = got[2:]
                assert torch.equal(c[~mask], ref_b[~mask])
                assert torch.equal(c[mask], ref_c[0, dpos].expand(2, -1))
                assert not torch.allclose(c[mask], ref_b[mask])  # the customisation did change the concept


def test_processors_restored_after_exception(parts):
    tok, te, unet, cte, cunet = parts
    unet.set_attn_processor(AttnProcessor2_0())
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    ctrl = AlignITController(te, cte, tok, ["<v*>"])
    ctrl.encode(PROMPTS)
    with pytest.raises(RuntimeError, match="boom"):
        with install_alignit(unet, ctrl) as procs:
            assert len(procs) == 4
            kinds = {k: type(v) for k, v in unet.attn_processors.items()}
            assert all((v is AlignITAttnProcessor) == ("attn2" in k) for k, v in kinds.items())
            raise RuntimeError("boom")
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    # a batch that fits neither B nor 2B rows is refused inside the UNet, and processors are restored
    with pytest.raises(ValueError, match="UNet batch has 3 rows"):
        with install_alignit(unet, ctrl), torch.no_grad():
            unet(torch.zeros(3, 3, 16, 16), 1, encoder_hidden_states=torch.zeros(3, 16, 32))
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before


def test_multi_token_concept_position_map():
    tok = tiny_tokenizer(("<a>", "<b>"))
    te = tiny_text_encoder(tok)
    ctrl = AlignITController(te, te, tok, ["<a>", "<b>"], "a photo of {}")
    ctrl.encode(["a <a> <b> square", "<b> <a> a circle"])
    mask, gather, _ = ctrl.concept_inputs()
    # prompt ids: BOS a <a> <b> square EOS ... ; dummy: BOS a photo of <a> <b> EOS
    assert mask[0].nonzero().flatten().tolist() == [2, 3]
    assert gather[0, 2:4].tolist() == [4, 5]
    assert mask[1].nonzero().flatten().tolist() == [1, 2]
    assert gather[1, 1:3].tolist() == [5, 4]


def test_bad_arguments(parts):
    tok, te, unet, cte, _ = parts
    with pytest.raises(ValueError, match="exactly once"):
        AlignITController(te, cte, tok, ["<v*>"], "a photo of")
    with pytest.raises(ValueError, match="single token"):
        AlignITController(te, cte, tok, ["<w*>"])
    with pytest.raises(ValueError, match="base_placeholder"):
        AlignITController(te, cte, tok, ["<v*>"], base_placeholder="magenta")
    with pytest.raises(ValueError, match="non-empty"):
        AlignITController(te, cte, tok, [])
    with pytest.raises(TypeError, match="base_text_encoder"):
        AlignITController("te", cte, tok, ["<v*>"])
    small = tiny_text_encoder(tiny_tokenizer(()))
    with pytest.raises(ValueError, match="embedding rows"):
        AlignITController(small, cte, tok, ["<v*>"])
    ctrl = AlignITController(te, cte, tok, ["<v*>"])
    with pytest.raises(RuntimeError, match="encode"):
        ctrl.concept_inputs()
    with pytest.raises(TypeError, match="attention processors"):
        with install_alignit(unet, ctrl, base_unet=unet.down_blocks[0]):
            pass
    other = UNet2DConditionModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=8)
    with pytest.raises(ValueError, match="to_k/to_v shapes"):
        with install_alignit(unet, ctrl, base_unet=other):
            pass
    assert all(type(p) is not AlignITAttnProcessor for p in unet.attn_processors.values())


WORDS = ["a", "red", "blue", "square", "circle", "photo", "of"]


@settings(max_examples=20, deadline=None)
@given(words=st.lists(st.sampled_from(WORDS), min_size=0, max_size=8), pos=st.integers(0, 8),
       template=st.sampled_from(["{}", "a {}", "a photo of {}", "{} of a photo"]))
def test_property_concept_positions_map_to_dummy(parts, words, pos, template):
    tok, te, _, cte, _ = parts
    ctrl = AlignITController(te, cte, tok, ["<v*>"], template, base_placeholder="photo")
    pos = min(pos, len(words))
    prompt = " ".join(words[:pos] + ["<v*>"] + words[pos:])
    ctrl.encode([prompt])
    mask, gather, dummy_states = ctrl.concept_inputs()
    ids = ctrl.tokenize([prompt])[0]
    vid = tok.convert_tokens_to_ids("<v*>")
    assert mask[0].nonzero().flatten().tolist() == [pos + 1]  # BOS shifts by one
    assert int(ctrl.dummy_ids[0, gather[0, pos + 1]]) == vid == int(ids[pos + 1])
    # the base encoder saw the placeholder, not the concept: its states equal the plain base encoding of that text
    with torch.no_grad():
        ref = te(input_ids=ctrl.tokenize([" ".join(words[:pos] + ["photo"] + words[pos:])])).last_hidden_state
        assert torch.equal(ctrl.encode([prompt]), ref)
        assert torch.equal(dummy_states, cte(input_ids=ctrl.dummy_ids).last_hidden_state)


def test_concept_kv_cache_is_per_encode_and_off_under_autograd(parts):
    tok, te, unet, cte, cunet = parts
    cunet = copy.deepcopy(cunet)
    ctrl = AlignITController(te, cte, tok, ["<v*>"], "a photo of {}")
    name = _attn_names(cunet)[0]
    attn = cunet.get_submodule(name)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))

    def run(grad=False):
        ctrl.record = True
        cond = ctrl.encode(PROMPTS)
        with install_alignit(cunet, ctrl, base_unet=unet), torch.set_grad_enabled(grad):
            cunet(x, 10, encoder_hidden_states=cond)
        return ctrl.kv_log[name][0][0]

    mask = ctrl.concept_mask(ctrl.tokenize(PROMPTS))
    k1 = run()
    with torch.no_grad():
        attn.to_k.weight.mul_(2.0)
        dummy = cte(input_ids=ctrl.tokenize([ctrl.dummy_prompt])).last_hidden_state
        expected = attn.to_k(dummy)[0, 4]
    k2 = run()  # a new encode() recomputes the concept keys with the new weights
    assert torch.equal(k2[mask], expected.expand(2, -1)) and not torch.allclose(k1[mask], k2[mask])
    k3 = run(grad=True)
    assert k3.requires_grad is False  # the log is detached, but the computation ran with autograd
    assert torch.equal(k3[mask], k2[mask])
    cond = ctrl.encode(PROMPTS)
    with install_alignit(cunet, ctrl, base_unet=unet):
        out = cunet(x, 10, encoder_hidden_states=cond).sample
    out.sum().backward()
    assert attn.to_k.weight.grad is not None and attn.to_k.weight.grad.abs().sum() > 0
    cunet.zero_grad(set_to_none=True)
    unet.zero_grad(set_to_none=True)


def _attn_names(unet):
    from gradlab.generative._attention import cross_attention_names

    return cross_attention_names(unet)


@settings(max_examples=8, deadline=None)
@given(suffix=st.lists(st.sampled_from(["red", "square", "circle", "of"]), max_size=4), cfg=st.booleans(),
       seed=st.integers(0, 10_000))
def test_property_nothing_customised_equals_plain_unet(parts, suffix, cfg, seed):
    tok, te, unet, _, _ = parts
    ctrl = AlignITController(te, te, tok, ["<v*>"], "a {}")
    prompt = " ".join(["a", "<v*>"] + suffix)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, 16, 16, generator=g)
    with torch.no_grad():
        states = te(input_ids=ctrl.tokenize([prompt])).last_hidden_state
        uncond = te(input_ids=ctrl.tokenize([""])).last_hidden_state
    xs, ehs = (torch.cat([x, x]), torch.cat([uncond, states])) if cfg else (x, states)
    ref = _plain_eps(unet, xs, 700, ehs)
    cond = ctrl.encode([prompt])
    with install_alignit(unet, ctrl), torch.no_grad():
        out = unet(xs, 700, encoder_hidden_states=torch.cat([uncond, cond]) if cfg else cond).sample
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
