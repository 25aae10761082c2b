import numpy as np
import pytest
import torch

from gradlab.core import load_digits_split
from gradlab.explain.data import anatomy_template, make_anatomy_images, make_block_digits, null_block_pattern


def test_block_digits_shapes_masks_and_blocks():
    d = make_block_digits(0, classes=(3, 7), noise=0.0)
    assert d.x_train.shape[1:] == (1, 16, 8) and d.mask_train.shape == d.x_train.shape
    assert d.mask_train.dtype == torch.bool and d.num_classes == 2
    # every mask is exactly one of the two 8x8 blocks
    top = d.mask_train[:, 0, :8].all(dim=(1, 2))
    bottom = d.mask_train[:, 0, 8:].all(dim=(1, 2))
    assert bool((top ^ bottom).all()) and d.mask_train.float().mean().item() == pytest.approx(0.5)
    assert 0.3 < top.float().mean().item() < 0.7  # random position
    # without noise the null block is the fixed pattern and the signal block is a bundled digit of the label
    null = null_block_pattern(8)
    digits = load_digits_split(images=True)
    pool = {c: digits.x_train[digits.y_train == c, 0] for c in (3, 7)}
    for i in range(20):
        img = d.x_train[i, 0]
        sig, nul = (img[:8], img[8:]) if top[i] else (img[8:], img[:8])
        assert torch.equal(nul, null)
        cands = pool[(3, 7)[int(d.y_train[i])]]
        assert bool((cands - sig).abs().amax(dim=(1, 2)).min() < 1e-6)
    # each training digit of the two classes is used once
    assert len(d.y_train) == sum(len(v) for v in pool.values())


def test_block_digits_seeded_fixed_top_and_resampling():
    a = make_block_digits(1, n_train=50, n_test=20)
    b = make_block_digits(1, n_train=50, n_test=20)
    c = make_block_digits(2, n_train=50, n_test=20)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape[0] == 50 and a.x_test.shape[0] == 20
    assert float(a.x_train.min()) >= 0.0 and float(a.x_train.max()) <= 1.0
    t = make_block_digits(0, fixed_top=True)
    assert bool(t.mask_test[:, 0, :8].all()) and not bool(t.mask_test[:, 0, 8:].any())


@pytest.mark.parametrize("kwargs", [dict(classes=(1, 1)), dict(classes=(1,)), dict(classes=(0, 10)),
                                    dict(noise=-0.1), dict(n_train=0)])
def test_block_digits_bad_input(kwargs):
    with pytest.raises((ValueError, TypeError)):
        make_block_digits(0, **kwargs)


def _hand_labels(x, size, texture, center, radius):
    """Recompute the labels from the images (noise=0): field = (x - template) / texture inside the head."""
    template = anatomy_template(size).numpy()
    rr, cc = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    disk = (rr - center[0] * size) ** 2 + (cc - center[1] * size) ** 2 <= (radius * size) ** 2
    w = np.zeros((size, size))
    w[disk & (cc < center[1] * size)] = 1.0
    w[disk & (cc >= center[1] * size)] = -1.0
    w[disk] -= w[disk].mean()
    field = (x[:, 0].numpy() - template) / texture
    return (np.einsum("nij,ij->n", field, w) > 0).astype(np.int64), disk


def test_anatomy_labels_depend_on_region_only_and_are_not_brighter():
    d = make_anatomy_images(3, n_train=400, n_test=100, noise=0.0)
    labels, disk = _hand_labels(d.x_train, 32, 0.15, (0.68, 0.35), 0.15)
    np.testing.assert_array_equal(labels, d.y_train.numpy())
    assert bool((d.mask_train[:, 0] == torch.as_tensor(disk)).all())
    assert 0.35 < d.y_train.float().mean().item() < 0.65
    # no class is brighter inside R: mean intensity differs by far less than its spread
    inside = d.x_train[:, 0][:, torch.as_tensor(disk)].mean(dim=1)
    gap = (inside[d.y_train == 1].mean() - inside[d.y_train == 0].mean()).abs()
    assert gap < 0.25 * inside.std()
    # outside R the texture carries no label information: a far-away pixel is uncorrelated with y
    far = d.x_train[:, 0, 10, 22]
    corr = np.corrcoef(far.numpy(), d.y_train.numpy())[0, 1]
    assert abs(corr) < 0.2


def test_anatomy_seeded_and_bad_input():
    a = make_anatomy_images(0, n_train=10, n_test=5)
    b = make_anatomy_images(0, n_train=10, n_test=5)
    assert torch.equal(a.x_test, b.x_test) and a.x_train.shape == (10, 1, 32, 32)
    with pytest.raises(ValueError, match="inside the head"):
        make_anatomy_images(0, n_train=4, n_test=2, region_center=(0.05, 0.05))
    with pytest.raises(ValueError):
        make_anatomy_images(0, n_train=4, n_test=2, region_radius=0.7)
    with pytest.raises(TypeError):
        make_anatomy_images(0, n_train=4.5, n_test=2)
