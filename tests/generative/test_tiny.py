"""The tiny shapes data, tokenizer and model builder (gradlab.generative.tiny)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.generative.tiny import (BASE_WORDS, COLOUR_RGB, COLOURS, HELD_OUT_COLOURS, IMAGE_SIZE, SHAPES,
                                     TRAIN_COLOURS, build_tiny_t2i, build_tiny_tokenizer, make_shapes)

torch.set_num_threads(1)


def test_make_shapes_layout_and_labels():
    b = make_shapes(48, seed=3)
    assert b.images.shape == (48, 3, IMAGE_SIZE, IMAGE_SIZE) and b.images.dtype == torch.float32
    assert b.masks.shape == (48, 1, IMAGE_SIZE, IMAGE_SIZE) and b.masks.dtype == torch.bool
    assert len(b) == 48 and set(b.colours) <= set(TRAIN_COLOURS) and set(b.shapes) <= set(SHAPES)
    assert b.captions == [f"a {c} {s}" for c, s in zip(b.colours, b.shapes)]
    for i in range(48):  # object pixels carry the colour, the rest is black (-1)
        rgb = torch.tensor(COLOUR_RGB[b.colours[i]]) * 2 - 1
        m = b.masks[i, 0]
        assert torch.equal(b.images[i][:, m], rgb[:, None].expand(3, int(m.sum())))
        assert bool((b.images[i][:, ~m] == -1).all())
    assert torch.equal(make_shapes(48, seed=3).images, b.images)
    assert not torch.equal(make_shapes(48, seed=4).images, b.images)


def test_make_shapes_geometry_matches_closed_form():
    # square: a filled axis-aligned block; circle: symmetric and rounder (fewer pixels than its bounding box)
    b = make_shapes(200, seed=0, shapes=("square",))
    for m in b.masks[:, 0]:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        block = m[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert bool(block.all()) and int(m.sum()) == block.numel()
    c = make_shapes(200, seed=0, shapes=("circle",))
    for m in c.masks[:, 0]:
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        assert int(m.sum()) < box
    t = make_shapes(200, seed=0, shapes=("triangle",))
    for m in t.masks[:, 0]:  # apex at the top: row widths never shrink going down
        widths = m.sum(1)[m.any(1)]
        assert bool((widths[1:] >= widths[:-1]).all())


def test_make_shapes_held_out_colours_and_errors():
    b = make_shapes(64, seed=1, colours=HELD_OUT_COLOURS)
    assert set(b.colours) == set(HELD_OUT_COLOURS)
    with pytest.raises(ValueError, match="colours"):
        make_shapes(4, seed=0, colours=("pink",))
    with pytest.raises(ValueError, match="shapes"):
        make_shapes(4, seed=0, shapes=())
    with pytest.raises(ValueError, match="n"):
        make_shapes(0, seed=0)
    with pytest.raises(TypeError, match="seed"):
        make_shapes(4, seed=1.5)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 6), seed=st.integers(0, 10_000), size=st.integers(8, 32))
def test_make_shapes_property_object_inside_and_visible(n, seed, size):
    b = make_shapes(n, seed=seed, size=size, colours=COLOURS)
    assert b.images.shape == (n, 3, size, size)
    area = b.masks.flatten(1).sum(1)
    assert bool((area >= 4).all())  # every object is visible
    assert bool((b.images >= -1).all() and (b.images <= 1).all())


def test_tokenizer_words_are_single_tokens_and_prompt_is_more_than_bos_eos():
    tok = build_tiny_tokenizer()
    assert tok.model_max_length == 16
    for w in BASE_WORDS:
        ids = tok(w).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        assert len(ids) == 3, (w, tok.convert_ids_to_tokens(ids))
        assert tok.convert_ids_to_tokens(ids)[1] == w + "</w>"
    # the transformers-5 trap: a constructor that ignores the vocabulary encodes everything as BOS/EOS only
    ids = tok("a photo of a red circle").input_ids
    assert len(ids) == 8 and len(set(ids[1:-1])) == 5
    assert tok.decode(ids, skip_special_tokens=True).strip() == "a photo of a red circle"
    # unknown words still tokenise (byte fallback), into several tokens
    assert len(tok("magenta").input_ids) > 3
    padded = tok(["a red circle", ""], padding="max_length", max_length=16).input_ids
    assert all(len(p) == 16 for p in padded) and padded[1][:2] == [tok.bos_token_id, tok.eos_token_id]


def test_tokenizer_extra_words_and_directory(tmp_path):
    from transformers import CLIPTokenizer

    tok = build_tiny_tokenizer(tmp_path / "tok", extra_words=("sks", "dog"))
    assert len(tok("a sks dog").input_ids) == 5
    again = CLIPTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert again("a sks dog").input_ids == tok("a sks dog").input_ids
    assert tok.add_tokens("<v*>") == 1 and len(tok("a <v*> square").input_ids) == 5
    with pytest.raises(ValueError, match="extra_words"):
        build_tiny_tokenizer(extra_words=("Bad word",))
    with pytest.raises(ValueError, match="model_max_length"):
        build_tiny_tokenizer(model_max_length=4)


def test_build_tiny_t2i_architecture():
    m = build_tiny_t2i(seed=0)
    n_unet = sum(p.numel() for p in m.unet.parameters())
    assert abs(n_unet - 985_000) / 985_000 < 0.01
    cross = [n for n, _ in m.unet.named_modules() if n.endswith("attn2")]
    assert len(cross) == 4
    assert m.vae is None and m.sample_shape == (3, 16, 16)
    assert m.scheduler.config.clip_sample is False and m.scheduler.config.num_train_timesteps == 1000
    assert m.scheduler.config.beta_schedule == "linear" and m.scheduler.config.prediction_type == "epsilon"
    assert m.text_encoder.config.hidden_size == 32 == m.unet.config.cross_attention_dim
    a, b = build_tiny_t2i(seed=0), build_tiny_t2i(seed=1)
    pa, pb = next(a.unet.parameters()), next(b.unet.parameters())
    assert torch.equal(pa, next(m.unet.parameters())) and not torch.equal(pa, pb)
    state = torch.random.get_rng_state()
    build_tiny_t2i(seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
