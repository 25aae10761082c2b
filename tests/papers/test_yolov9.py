"""Smoke tests of the YOLOv9 claims (scale "smoke": tiny recipe, cache in a temporary directory)."""

import pytest

from gradlab.claims.inline import check_evidence, run_claim_inline
from gradlab.papers import _yolov9_training as yt


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADLAB_CACHE", str(tmp_path / "cache"))


def test_pgi_mechanics_smoke():
    ev = run_claim_inline("yolov9/pgi_mechanics", scale="smoke")
    check_evidence(ev, required_metrics=("gelan-t_backbone_aux_max", "gelan-t_neck_head_aux_max",
                                         "gelan-t_bit_identical", "gelan-t_aux_module_calls_in_eval"))
    assert ev.verdict == "passed"  # the mechanics hold at any scale
    assert ev.metrics["gelan-t_neck_head_aux_max"] == 0.0 and ev.metrics["gelan-t_backbone_aux_max"] > 0


def test_detects_and_pgi_gain_smoke_share_one_training():
    ev = run_claim_inline("yolov9/detects", scale="smoke")
    check_evidence(ev, required_metrics=("map50", "map50_95", "map50_ci95", "params_deployed"), min_figures=2)
    assert ev.metrics["from_cache"] is False and ev.verdict in ("passed", "failed", "inconclusive")
    ev2 = run_claim_inline("yolov9/pgi_gain", scale="smoke")
    check_evidence(ev2, required_metrics=("pgi_minus_plain_map50_95", "pgi_minus_plain_ci"), min_figures=2)
    assert "the seeds resolve the paper's gain" in ev2.preconditions
    ci = ev2.metrics["pgi_minus_plain_ci"]
    diffs = ev2.metrics["pgi_minus_plain_map50_95"]
    assert ci["n"] == len(diffs) == 2 and ci["mean"] == pytest.approx(sum(diffs) / 2)
    # the verdict follows the interval: passed iff its lower end > 0, inconclusive when it holds 0 and the paper's gain
    resolved = ci["low"] > 0 or ci["high"] < ev2.metrics["paper_smallest_gain"]
    resolved = resolved and min(ev2.metrics[f"plain_seed{s}_map50"] for s in ev2.metrics["seeds"]) >= 0.5
    assert ev2.verdict == ("inconclusive" if not resolved else "passed" if ci["low"] > 0 else "failed")
    assert ev2.metrics["pgi_seed0_from_cache"] is True and ev2.metrics["plain_seed0_from_cache"] is False
    assert ev2.metrics["pgi_seed0_map50_95"] == pytest.approx(ev.metrics["map50_95"])
    assert ev2.headline and ev2.criterion


def test_cache_key_depends_on_recipe_kind_and_seed():
    r = yt.recipe_for("smoke")
    k = yt.cache_key("pgi", r, 0)
    assert k != yt.cache_key("plain", r, 0) and k != yt.cache_key("pgi", r, 1)
    assert k != yt.cache_key("pgi", dict(r, steps=r["steps"] + 1), 0) and k == yt.cache_key("pgi", dict(r), 0)
