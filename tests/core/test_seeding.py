import random

import numpy as np
import pytest
import torch

from gradlab.core import numpy_rng, seed_everything, torch_generator


def test_seed_everything_makes_all_sources_repeat():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    gen = seed_everything(7)
    a = draw() + (float(torch.rand(1, generator=gen)),)
    gen = seed_everything(7)
    b = draw() + (float(torch.rand(1, generator=gen)),)
    assert a == b
    seed_everything(8)
    assert draw() != a[:3]


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_seeds_are_rejected(bad):
    with pytest.raises((TypeError, ValueError), match="seed"):
        seed_everything(bad)
    with pytest.raises(ValueError, match="seed"):
        numpy_rng(bad)
    with pytest.raises(ValueError, match="seed"):
        torch_generator(bad)


def test_explicit_generators_are_independent_of_global_state():
    x = numpy_rng(3).normal(size=3)
    np.random.seed(0)
    assert np.array_equal(x, numpy_rng(3).normal(size=3))
    t = torch.randn(3, generator=torch_generator(3))
    torch.manual_seed(0)
    assert torch.equal(t, torch.randn(3, generator=torch_generator(3)))
