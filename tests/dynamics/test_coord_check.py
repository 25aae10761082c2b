import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from gradlab.dynamics.coord_check import coord_check, fit_width_slope, lr_transfer_sweep
from gradlab.dynamics.width_models import MLP


def _mse(out, y):
    return 0.5 * (out - y).pow(2).sum(1).mean()


def test_fit_width_slope_recovers_a_power_law():
    widths = [16, 64, 256]
    assert fit_width_slope(widths, [3 * w**-0.5 for w in widths]) == pytest.approx(-0.5)
    assert math.isnan(fit_width_slope(widths, [1.0, 0.0, 1.0]))
    with pytest.raises(ValueError):
        fit_width_slope([16], [1.0])


def test_coord_check_separates_parametrizations():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 8, generator=g), torch.randn(32, 4, generator=g)
    widths = [64, 256, 1024]
    res = {p: coord_check(lambda w: MLP(8, w, 4), widths, x, y, _mse, p, lr=0.05, steps=1, seeds=(0,))
           for p in ("mup", "ntk", "sp")}
    assert res["mup"].layers == ["layers.0", "layers.1", "readout", "<output>"]
    assert res["mup"].deltas.shape == (4, 3, 1)
    s = {p: r.slopes() for p, r in res.items()}
    assert max(abs(v) for v in s["mup"].values()) < 0.2
    assert s["ntk"]["layers.1"] < -0.3
    assert s["sp"]["<output>"] > 0.6
    fig = res["mup"].plot()
    assert fig is not None and fig.axes[0].get_xscale() == "log"


def test_coord_check_with_base_width_and_watched_modules():
    x, y = torch.randn(16, 8), torch.randn(16, 4)
    r = coord_check(lambda w: MLP(8, w, 4), [32, 64], x, y, _mse, "mup", lr=0.01, steps=2, base_width=32,
                    modules=["layers.1"], optimizer="adam")
    assert r.layers == ["layers.1"] and r.deltas.shape == (1, 2, 2) and np.all(r.deltas > 0)
    with pytest.raises(ValueError, match="two widths"):
        coord_check(lambda w: MLP(8, w, 4), [32], x, y, _mse, "mup", lr=0.01)


def test_lr_transfer_sweep_marks_divergence_and_picks_best():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=g)
    y = (x[:, 0] > 0).long()
    res = lr_transfer_sweep(lambda w: MLP(8, w, 2), [16, 32], [1e-3, 0.1, 1e6], x, y, F.cross_entropy, "sp",
                            steps=20, batch_size=32, base_width=16)
    assert res.losses.shape == (2, 3)
    assert np.all(np.isinf(res.losses[:, 2]))  # lr = 1e6 diverges
    assert res.best_lrs() == [0.1, 0.1] and res.best_lr_shift() == 0.0
    assert res.plot() is not None


def test_transformer_coord_check_under_adam():
    from gradlab.dynamics.width_models import TinyTransformer

    g = torch.Generator().manual_seed(0)
    tok, tgt = torch.randint(0, 13, (8, 16), generator=g), torch.randint(0, 13, (8, 16), generator=g)

    def ce(out, t):
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), t.reshape(-1))

    watched = ["blocks.0.fc2", "blocks.0.proj", "readout"]
    slopes = {}
    for p in ("sp", "mup"):
        make = lambda w, p=p: TinyTransformer(13, w, depth=1, heads=2, max_len=16, attn_scale=p)
        r = coord_check(make, [32, 64, 128, 256], tok, tgt, ce, p, lr=3e-3, steps=3, optimizer="adam",
                        base_width=32, modules=watched)
        slopes[p] = r.slopes()
    assert slopes["sp"]["readout"] > 0.3  # SP + Adam: logit updates grow with width
    assert all(abs(v) < 0.3 for v in slopes["mup"].values())  # muP: Theta(1)


def test_best_lr_is_nan_where_every_run_diverged():
    import math

    import numpy as np

    from gradlab.dynamics.coord_check import LrSweepResult

    res = LrSweepResult(widths=[4, 8], lrs=[0.1, 0.2], losses=np.array([[1.0, 0.5], [np.inf, np.nan]]),
                        parametrization="sp")
    best = res.best_lrs()
    assert best[0] == 0.2 and math.isnan(best[1]) and math.isnan(res.best_lr_shift())
