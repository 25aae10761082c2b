import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from gradlab.explain.evaluation import attribution_mass_in_mask, mask_fraction, pixel_auroc, pointing_game


def test_mass_in_mask_hand_computed():
    a = torch.tensor([[[[1.0, -2.0], [3.0, 0.0]]], [[[0.0, 0.0], [0.0, 4.0]]]])
    m = torch.tensor([[[[True, True], [False, False]]], [[[True, False], [False, False]]]])
    np.testing.assert_allclose(attribution_mass_in_mask(a, m).numpy(), [3 / 6, 0.0])
    np.testing.assert_allclose(attribution_mass_in_mask(a, m, absolute=False).numpy(), [-1 / 2, 0.0])
    # mask without channel dim broadcasts; uniform attribution gives the mask fraction (chance level)
    np.testing.assert_allclose(attribution_mass_in_mask(torch.ones(2, 1, 2, 2), m[:, 0]).numpy(),
                               mask_fraction(m).numpy())
    assert torch.isnan(attribution_mass_in_mask(torch.zeros(1, 1, 2, 2), m[:1]))[0]


def test_mass_in_mask_channels():
    a = torch.rand(3, 3, 4, 4)
    m = torch.rand(3, 1, 4, 4) > 0.5
    per_value = attribution_mass_in_mask(a, m)
    expected = (a * m).sum(dim=(1, 2, 3)) / a.sum(dim=(1, 2, 3))
    torch.testing.assert_close(per_value, expected)
    torch.testing.assert_close(attribution_mass_in_mask(a, m, reduce_channels="sum"), expected)


def test_pixel_auroc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-3, 4, (6, 1, 5, 5), generator=g).float()  # many ties, signed
    m = torch.rand(6, 1, 5, 5, generator=g) > 0.6
    ours = pixel_auroc(a, m)
    for i in range(6):
        ref = roc_auc_score(m[i].flatten().numpy(), a[i].abs().flatten().numpy())
        assert ours[i].item() == pytest.approx(ref, abs=1e-6)
    signed = pixel_auroc(a, m, absolute=False)
    ref0 = roc_auc_score(m[0].flatten().numpy(), a[0].flatten().numpy())
    assert signed[0].item() == pytest.approx(ref0, abs=1e-6)


def test_pixel_auroc_extremes_and_errors():
    m = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    m[..., :2, :2] = True
    assert pixel_auroc(m.float(), m).item() == pytest.approx(1.0)
    assert pixel_auroc(1 - m.float(), m).item() == pytest.approx(0.0)
    assert pixel_auroc(torch.ones(1, 1, 4, 4), m).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both signal and background"):
        pixel_auroc(torch.rand(1, 1, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="broadcast"):
        pixel_auroc(torch.rand(2, 1, 4, 4), torch.ones(2, 1, 3, 3, dtype=torch.bool))
    with pytest.raises(TypeError):
        pixel_auroc(np.ones((1, 4)), m)
    with pytest.raises(ValueError, match="NaN"):
        pixel_auroc(torch.full((1, 1, 4, 4), float("nan")), m)


def test_pointing_game_and_tolerance():
    a = torch.zeros(2, 1, 6, 6)
    a[0, 0, 1, 1] = 5.0  # inside
    a[1, 0, 4, 4] = -5.0  # outside, but |.| is the max
    m = torch.zeros(2, 1, 6, 6, dtype=torch.bool)
    m[:, :, 0:3, 0:3] = True
    np.testing.assert_array_equal(pointing_game(a, m).numpy(), [1.0, 0.0])
    np.testing.assert_array_equal(pointing_game(a, m, tolerance=1).numpy(), [1.0, 0.0])
    np.testing.assert_array_equal(pointing_game(a, m, tolerance=2).numpy(), [1.0, 1.0])
    # signed: the maximum of sample 1 is then a zero inside the mask (first in raster order)
    np.testing.assert_array_equal(pointing_game(a, m, absolute=False).numpy(), [1.0, 1.0])
    with pytest.raises(ValueError):
        pointing_game(a, m, tolerance=-1)


def _valid_case(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(-3, 4, (n, 1, 6, 6), generator=g).float()  # ties, signed
    m = torch.rand(n, 1, 6, 6, generator=g) > 0.7
    v = torch.rand(n, 1, 6, 6, generator=g) > 0.3
    m[:, :, 0, 0], v[:, :, 0, 0] = True, True  # at least one valid signal pixel
    m[:, :, 0, 1], v[:, :, 0, 1] = False, True  # and one valid background pixel
    return a, m, v


def test_valid_mask_scores_equal_the_scores_on_the_valid_pixels():
    a, m, v = _valid_case()
    auc = pixel_auroc(a, m, valid_mask=v)
    mass = attribution_mass_in_mask(a, m, valid_mask=v)
    hit = pointing_game(a, m, valid_mask=v)
    frac = mask_fraction(m, valid_mask=v)
    for i in range(a.shape[0]):
        sel = v[i].flatten()
        ai, mi = a[i].flatten()[sel].abs(), m[i].flatten()[sel]
        assert auc[i].item() == pytest.approx(roc_auc_score(mi.numpy(), ai.numpy()), abs=1e-6)
        assert mass[i].item() == pytest.approx(float(ai[mi].sum() / ai.sum()), abs=1e-6)
        assert hit[i].item() == float(mi[int(ai.argmax())])
        assert frac[i].item() == pytest.approx(float(mi.float().mean()), abs=1e-6)
    # an all-true valid mask changes nothing
    full = torch.ones_like(v)
    torch.testing.assert_close(pixel_auroc(a, m, valid_mask=full), pixel_auroc(a, m))
    torch.testing.assert_close(attribution_mass_in_mask(a, m, valid_mask=full), attribution_mass_in_mask(a, m))
    torch.testing.assert_close(mask_fraction(m, valid_mask=full), mask_fraction(m))


def test_silhouette_beats_chance_on_the_frame_but_not_within_the_head():
    # the example: an information-free map that is 1 on the head and 0 outside it
    head = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    head[..., 2:6, 1:7] = True  # 24 head pixels of 64
    region = torch.zeros_like(head)
    region[..., 3:5, 2:4] = True  # the signal, inside the head
    silhouette = head.float()
    # on the frame: every region pixel beats the 40 background pixels and ties with the 20 other head pixels
    expected = (40 + 0.5 * 20) / 60
    assert pixel_auroc(silhouette, region).item() == pytest.approx(expected)
    assert pixel_auroc(silhouette, region, valid_mask=head).item() == pytest.approx(0.5)
    assert attribution_mass_in_mask(silhouette, region, valid_mask=head).item() == pytest.approx(
        mask_fraction(region, valid_mask=head).item())


def test_valid_mask_errors():
    a, m, v = _valid_case()
    with pytest.raises(ValueError, match="valid_mask selects no pixel"):
        pixel_auroc(a, m, valid_mask=torch.zeros_like(v))
    with pytest.raises(ValueError, match="valid_mask selects no pixel"):
        mask_fraction(m, valid_mask=torch.zeros_like(v))
    with pytest.raises(ValueError, match="within valid_mask"):
        pixel_auroc(a, m, valid_mask=m)  # only signal pixels are valid
    with pytest.raises(ValueError, match="valid_mask of shape"):
        attribution_mass_in_mask(a, m, valid_mask=v[..., :3, :3])
    with pytest.raises(TypeError):
        pointing_game(a, m, valid_mask=v.numpy())


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 3), side=st.integers(2, 5), p_m=st.floats(0.05, 0.95),
       p_v=st.floats(0.05, 1.0))
def test_valid_mask_auroc_matches_sklearn_property(seed, n, side, p_m, p_v):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, 1, side, side, generator=g).round(decimals=1)
    m = torch.rand(n, 1, side, side, generator=g) < p_m
    v = torch.rand(n, 1, side, side, generator=g) < p_v
    mv = m & v
    ok = bool(((mv.flatten(1).sum(1) > 0) & ((v & ~m).flatten(1).sum(1) > 0)).all())
    if not ok:
        with pytest.raises(ValueError):
            pixel_auroc(a, m, valid_mask=v)
        return
    auc = pixel_auroc(a, m, valid_mask=v)
    assert bool(((auc >= 0) & (auc <= 1)).all())
    for i in range(n):
        sel = v[i].flatten()
        ref = roc_auc_score(m[i].flatten()[sel].numpy(), a[i].flatten()[sel].abs().numpy())
        assert auc[i].item() == pytest.approx(ref, abs=1e-6)
