import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from gradlab.claims.types import ClaimRun, Evidence, Paper, check_scale


def test_evidence_accepts_numpy_and_torch_scalars_and_marks_nonfinite():
    ev = Evidence(metrics={"a": np.float32(1.5), "b": torch.tensor(2), "c": float("nan"), "d": [np.int64(3), 4.0],
                           "e": np.array([1.0, 2.0])},
                  criterion="a > 1", passed=np.bool_(True))
    assert ev.passed is True
    assert ev.metrics == {"a": 1.5, "b": 2, "c": "nan", "d": [3, 4.0], "e": [1.0, 2.0]}


@pytest.mark.parametrize("passed", [1, "yes", None, 1.0])
def test_evidence_rejects_non_bool_verdict(passed):
    with pytest.raises(TypeError, match="passed"):
        Evidence(metrics={}, criterion="x", passed=passed)


def test_evidence_requires_criterion_and_serialisable_metrics():
    with pytest.raises(ValueError, match="criterion"):
        Evidence(metrics={}, criterion="  ", passed=True)
    with pytest.raises(TypeError, match="metric 'obj'"):
        Evidence(metrics={"obj": object()}, criterion="x", passed=True)


def test_figures_render_to_png_bytes(tmp_path):
    fig = Figure()
    ax = fig.subplots()
    ax.plot([0, 1], [1, 0])
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG fake")
    ev = Evidence(metrics={}, criterion="x", passed=False, figures={"line": fig, "file": png, "raw": b"\x89PNGraw"})
    out = ev.figure_pngs()
    assert out["line"].startswith(b"\x89PNG") and len(out["line"]) > 1000
    assert out["file"] == b"\x89PNG fake" and out["raw"] == b"\x89PNGraw"
    with pytest.raises(TypeError, match="figure 'bad'"):
        Evidence(metrics={}, criterion="x", passed=True, figures={"bad": 3}).figure_pngs()


def test_claim_run_pick_progress_and_scale(tmp_path):
    seen = []
    run = ClaimRun(seed=1, scale="smoke", scratch=tmp_path, progress_fn=lambda f, m: seen.append((f, m)))
    assert run.pick(smoke=1, quick=2, full=3) == 1 and not run.is_evidence
    assert ClaimRun(1, "quick", tmp_path).pick(1, 2, 3) == 2
    assert ClaimRun(1, "full", tmp_path).pick(1, 2) == 2
    run.progress(2.0, "x")
    run.progress(float("nan"))
    assert seen == [(1.0, "x"), (0.0, "")]
    with pytest.raises(ValueError, match="scale"):
        ClaimRun(1, "huge", tmp_path)
    assert check_scale("full") == "full"


def test_paper_validation():
    with pytest.raises(ValueError, match="cluster"):
        Paper(key="x", title="t", cluster="astrology")
    with pytest.raises(ValueError, match="key"):
        Paper(key="Has Space", title="t", cluster="optim")
    p = Paper(key="lr-batch-rmt", title="Learning Rates: long", cluster="curvature")
    assert p.module_name == "gradlab.papers.lr_batch_rmt" and p.short_title == "Learning Rates"
    assert math.isfinite(len(p.components))
