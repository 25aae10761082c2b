import numpy as np
import pytest
import torch
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
