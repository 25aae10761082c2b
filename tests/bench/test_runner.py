"""Planning, resuming and aggregating a benchmark."""

import json
import math

import numpy as np
import pytest

import gradlab.bench.runner as runner
from gradlab.bench.runner import TrialStore, plan_trials, run_bench, write_outputs
from tests.bench.helpers import BrokenSubmission, LinearRegressionWorkload, sgd_submission


class Stop(Exception):
    pass


def test_resume_after_interruption_loses_no_finished_trial(tmp_path, monkeypatch):
    wl, sub = LinearRegressionWorkload(), sgd_submission()

    def stop_after_3(done, total, key):
        if done == 3:
            raise Stop

    with pytest.raises(Stop):
        run_bench([wl], [sub], n_trials=3, n_studies=2, seed=1, out_dir=tmp_path, progress=stop_after_3)
    stored = sorted(p.name for p in (tmp_path / "trials").glob("*.json"))
    assert len(stored) == 3
    before = {p: (tmp_path / "trials" / p).read_text() for p in stored}
    calls = []
    real = runner.run_trial
    monkeypatch.setattr(runner, "run_trial", lambda *a, **k: calls.append(a) or real(*a, **k))
    res = run_bench([wl], [sub], n_trials=3, n_studies=2, seed=1, out_dir=tmp_path)
    assert res.resumed == 3 and len(calls) == 3 and len(res.trials) == 6
    assert all((tmp_path / "trials" / p).read_text() == t for p, t in before.items())
    # nothing left to run; a different seed (a changed plan) reruns everything; --force reruns too
    calls.clear()
    assert run_bench([wl], [sub], n_trials=3, n_studies=2, seed=1, out_dir=tmp_path).resumed == 6 and not calls
    run_bench([wl], [sub], n_trials=3, n_studies=2, seed=2, out_dir=tmp_path)
    assert len(calls) == 6
    calls.clear()
    run_bench([wl], [sub], n_trials=3, n_studies=2, seed=2, out_dir=tmp_path, force=True)
    assert len(calls) == 6


def test_corrupt_trial_file_is_rerun(tmp_path):
    wl, sub = LinearRegressionWorkload(), sgd_submission()
    run_bench([wl], [sub], n_trials=1, n_studies=1, out_dir=tmp_path)
    (f,) = (tmp_path / "trials").glob("*.json")
    f.write_text("{not json")
    assert run_bench([wl], [sub], n_trials=1, n_studies=1, out_dir=tmp_path).resumed == 0
    assert json.loads(f.read_text())["result"]["workload"] == "linreg"


def test_aggregation_matches_trials():
    wl, sub = LinearRegressionWorkload(), sgd_submission()
    res = run_bench([wl], [sub], n_trials=3, n_studies=3, seed=0)
    t = np.full((3, 3), math.inf)
    for spec, r in res.trials:
        t[spec.study, spec.trial] = r.time_to_target
    per_study = np.sort(t.min(axis=1))
    assert res.times[0, 0] == per_study[1]
    assert res.scores[0] == pytest.approx(1.0) if math.isfinite(res.times[0, 0]) else res.scores[0] == 0.0


def test_plan_external_and_self():
    wl, sub = LinearRegressionWorkload(), sgd_submission()
    ext = plan_trials([wl], [sub], n_trials=4, n_studies=2, seed=0)
    assert len(ext) == 8 and len({tuple(s.hyperparameters.items()) for s in ext}) == 8
    assert len({s.seed for s in ext}) == 8 and all(s.budget_factor == 1.0 for s in ext)
    slf = plan_trials([wl], [sub], ruleset="self", n_trials=4, n_studies=3, seed=0)
    assert len(slf) == 3 and all(s.hyperparameters == sub.default_hyperparameters() for s in slf)
    assert all(s.budget_factor == 1.5 for s in slf)


def test_trial_error_is_recorded_not_stored(tmp_path):
    res = run_bench([LinearRegressionWorkload()], [BrokenSubmission(), sgd_submission()], n_trials=1, n_studies=1,
                    out_dir=tmp_path)
    assert len(res.errors) == 1 and "deliberately broken" in res.errors[0]
    assert math.isinf(res.times[0, 0])
    assert len(list((tmp_path / "trials").glob("*.json"))) == 1
    paths = write_outputs(res, tmp_path)
    assert paths["figure"].stat().st_size > 1000 and "Trial errors" in paths["markdown"].read_text()
    assert json.loads(paths["json"].read_text())["times_s"][0] == ["inf"]


def test_bad_bench_inputs(tmp_path):
    wl, sub = LinearRegressionWorkload(), sgd_submission()
    with pytest.raises(ValueError, match="non-empty"):
        run_bench([], [sub])
    with pytest.raises(ValueError, match="unique"):
        run_bench([wl], [sub, sgd_submission()])
    with pytest.raises(ValueError, match="ruleset"):
        run_bench([wl], [sub], ruleset="internal")
    with pytest.raises(TypeError, match="Workload"):
        run_bench(["linreg"], [sub])
    with pytest.raises(ValueError, match="n_trials"):
        run_bench([wl], [sub], n_trials=0)
    assert TrialStore(tmp_path / "x").get(plan_trials([wl], [sub], n_trials=1, n_studies=1)[0]) is None


def test_written_files_get_the_mode_a_normal_write_would_give(tmp_path):
    import os
    import stat

    from gradlab.bench.runner import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.json", "{}")
        assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
        (tmp_path / "b.json").write_text("x")
        os.chmod(tmp_path / "b.json", 0o600)
        write_atomic(tmp_path / "b.json", b"{}")
        assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o600 and (tmp_path / "b.json").read_text() == "{}"
    finally:
        os.umask(old)
