"""The quick-scale tiny model generates what it is asked (slow: trains the model when not cached)."""

import pytest
import torch

from gradlab.generative.judge import generation_accuracy, load_shape_judge
from gradlab.generative.tiny import COLOURS, make_shapes, load_tiny_t2i

torch.set_num_threads(1)


@pytest.mark.slow
def test_quick_tiny_model_generates_colour_and_shape():
    model, judge = load_tiny_t2i("quick"), load_shape_judge("quick")
    acc = generation_accuracy(model, judge, n=64, seed=0)
    assert acc["colour"] >= 0.6, acc
    assert acc["shape"] >= 0.5, acc


def test_smoke_judge_reads_real_shapes(shape_judge_smoke):
    data = make_shapes(128, seed=31337, colours=COLOURS)
    colours, shapes = shape_judge_smoke.predict(data.images)
    assert sum(a == b for a, b in zip(colours, data.colours)) / 128 > 0.5
    assert shape_judge_smoke.predict(data.images[:2])[0] == colours[:2]


def test_generation_accuracy_counts_against_the_prompts(tiny_t2i_smoke, shape_judge_smoke):
    acc = generation_accuracy(tiny_t2i_smoke, shape_judge_smoke, n=6, seed=1, num_steps=2)
    assert set(acc) == {"colour", "shape"} and all(0.0 <= v <= 1.0 for v in acc.values())
    # a constant "model" that always draws a red square scores exactly its share of the prompts
    class RedSquare:
        device = torch.device("cpu")

        def encode_prompt(self, prompts):
            return torch.zeros(len(prompts), 1, 1)

        def sample(self, emb, **kw):
            return make_shapes(1, seed=0, colours=("red",), shapes=("square",)).images.expand(emb.shape[0], -1, -1, -1)
    img = make_shapes(1, seed=0, colours=("red",), shapes=("square",)).images
    (c,), (s,) = shape_judge_smoke.predict(img)
    acc = generation_accuracy(RedSquare(), shape_judge_smoke, n=24, seed=0)  # 12 (colour, shape) prompts, twice
    assert acc == {"colour": (6 / 24) if c in ("red", "green", "blue", "yellow") else 0.0, "shape": 8 / 24}
