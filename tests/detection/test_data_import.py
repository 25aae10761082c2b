"""Synthetic rectangle scenes; the import guard for the vision extra."""

import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st

from gradlab.detection import make_rectangle_scenes


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 20), st.integers(0, 10**6), st.sampled_from([32, 64]), st.integers(1, 4), st.integers(1, 3))
def test_scenes_properties(n, seed, size, max_objects, nc):
    x, t = make_rectangle_scenes(n, seed, size=size, max_objects=max_objects, num_classes=nc, min_side=4,
                                 max_side=size // 2)
    assert x.shape == (n, 3, size, size) and float(x.min()) >= 0 and float(x.max()) <= 1
    x2, t2 = make_rectangle_scenes(n, seed, size=size, max_objects=max_objects, num_classes=nc, min_side=4,
                                   max_side=size // 2)
    assert torch.equal(x, x2) and all(torch.equal(a["boxes"], b["boxes"]) for a, b in zip(t, t2))
    for img, tt in zip(x, t):
        b, lab = tt["boxes"], tt["labels"]
        assert 1 <= len(b) <= max_objects and len(lab) == len(b)
        assert bool((b[:, :2] >= 0).all() and (b[:, 2:] <= size).all() and (b[:, 2:] > b[:, :2]).all())
        assert bool(((lab >= 0) & (lab < nc)).all())
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                sep = b[i, 0] >= b[j, 2] or b[j, 0] >= b[i, 2] or b[i, 1] >= b[j, 3] or b[j, 1] >= b[i, 3]
                assert sep
        for bb, lb in zip(b.long().tolist(), lab.tolist()):
            patch = img[:, bb[1]:bb[3], bb[0]:bb[2]]
            assert patch.std(dim=(1, 2)).max() < 1e-6  # a flat colour
            if lb == 0:
                assert patch[0, 0, 0] > patch[2, 0, 0]
            if lb == 1:
                assert patch[2, 0, 0] > patch[0, 0, 0]


def test_scenes_validation():
    with pytest.raises(ValueError, match="n"):
        make_rectangle_scenes(0, 0)
    with pytest.raises(ValueError, match="num_classes"):
        make_rectangle_scenes(2, 0, num_classes=9)
    with pytest.raises(TypeError, match="seed"):
        make_rectangle_scenes(2, 0.5)


def test_import_without_torchvision_names_the_vision_extra():
    code = ("import sys; sys.modules['torchvision'] = None\n"
            "try:\n    import gradlab.detection\nexcept ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ERR" in out.stdout and "vision" in out.stdout and "extra" in out.stdout
