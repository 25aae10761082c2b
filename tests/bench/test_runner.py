"""Planning, resuming and aggregating a benchmark."""

import json
import math

import numpy as np
import pytest

import gradlab.bench.runner as runner
from gradlab.bench.pages import write_outputs
from gradlab.bench.runner import plan_trials, result_from_record, run_bench, run_record
from gradlab.bench.store import BenchStore, BenchStoreError
from tests.bench.helpers import BrokenSubmission, LinearRegressionWorkload, sgd_submission


def stored_rows(path):
    """``trial_key -> (fingerprint, result JSON text)`` straight from the bench_trials table."""
    import sqlite3

    con = sqlite3.connect(path)
    try:
        return {k: (f, r) for k, f, r in con.execute("SELECT trial_key, fingerprint, result FROM bench_trials")}
    finally:
        con.close()


class Stop(Exception):
    pass


def test_resume_after_interruption_loses_no_finished_trial(tmp_path, monkeypatch):
    wl, sub = LinearRegressionWorkload(), sgd_submission()

    def stop_after_3(done, total, key):
        if done == 3:
            raise Stop

    store = tmp_path / "store.sqlite"
    with pytest.raises(Stop):
        run_bench([wl], [sub], n_trials=3, n_studies=2, seed=1, store=store, progress=stop_after_3)
    before = stored_rows(store)
    assert len(before) == 3
    calls = []
    real = runner.run_trial
    monkeypatch.setattr(runner, "run_trial", lambda *a, **k: calls.append(a) or real(*a, **k))
    res = run_bench([wl], [sub], n_trials=3, n_studies=2, seed=1, store=store)
    assert res.resumed == 3 and len(calls) == 3 and len(res.trials) == 6
    after = stored_rows(store)
    assert len(after) == 6 and all(after[k] == v for k, v in before.items())  # finished rows untouched
    # nothing left to run; a different seed (a changed plan) reruns everything; --force reruns too
    calls.clear()
    assert run_bench([wl], [sub], n_trials=3, n_studies=2, seed=1, store=store).resumed == 6 and not calls
    run_bench([wl], [sub], n_trials=3, n_studies=2, seed=2, store=BenchStore(store))
    assert len(calls) == 6
    calls.clear()
    run_bench([wl], [sub], n_trials=3, n_studies=2, seed=2, store=store, force=True)
    assert len(calls) == 6


def test_unreadable_trial_row_is_rerun(tmp_path):
    import sqlite3

    wl, sub = LinearRegressionWorkload(), sgd_submission()
    store = tmp_path / "store.sqlite"
    run_bench([wl], [sub], n_trials=1, n_studies=1, store=store)
    con = sqlite3.connect(store)
    with con:
        con.execute("UPDATE bench_trials SET result = '{not json'")
    con.close()
    assert run_bench([wl], [sub], n_trials=1, n_studies=1, store=store).resumed == 0
    ((_, text),) = stored_rows(store).values()
    assert json.loads(text)["workload"] == "linreg"


def test_record_rebuilds_the_result_from_the_store(tmp_path):
    wl, sub = LinearRegressionWorkload(), sgd_submission()
    store = BenchStore(tmp_path / "store.sqlite")
    res = run_bench([wl], [sub, BrokenSubmission()], n_trials=2, n_studies=2, seed=4, store=store)
    record = json.loads(json.dumps(run_record(res, [wl])))  # what bench_runs keeps
    store.put_run(tmp_path / "out", record)
    ((out_dir, kept, _),) = store.runs()
    assert out_dir == str(tmp_path / "out") and kept == record
    again = result_from_record(kept, store)
    assert again.submissions == res.submissions and again.workloads == res.workloads
    np.testing.assert_array_equal(again.study_times, res.study_times)
    np.testing.assert_array_equal(again.study_steps, res.study_steps)
    np.testing.assert_array_equal(again.scores, res.scores)
    assert again.errors == res.errors and len(again.errors) == 4  # the broken trials were never stored
    assert record["workload_meta"]["linreg"]["target"] == wl.validation_target


def test_store_refuses_unusable_paths(tmp_path):
    import sqlite3

    with pytest.raises(BenchStoreError, match="directory"):
        BenchStore(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BenchStoreError, match="under a file"):
        BenchStore(tmp_path / "file" / "store.sqlite")
    with pytest.raises(BenchStoreError, match="not an SQLite"):
        BenchStore(tmp_path / "file")
    with pytest.raises(BenchStoreError, match="no store"):
        BenchStore(tmp_path / "missing.sqlite", create=False)
    BenchStore(tmp_path / "s.sqlite")
    con = sqlite3.connect(tmp_path / "s.sqlite")
    with con:
        con.execute("UPDATE bench_meta SET value = '99' WHERE key = 'schema'")
    con.close()
    with pytest.raises(BenchStoreError, match="newer"):
        BenchStore(tmp_path / "s.sqlite")


def test_bench_tables_share_the_claims_store(tmp_path):
    from gradlab.claims.store import ResultStore

    path = tmp_path / "results.sqlite"
    ResultStore(path)
    run_bench([LinearRegressionWorkload()], [sgd_submission()], n_trials=1, n_studies=1, store=path)
    assert len(stored_rows(path)) == 1 and list(ResultStore(path, create=False).rows()) == []
    claims_only = tmp_path / "claims-only.sqlite"
    ResultStore(claims_only)
    with pytest.raises(BenchStoreError, match="no benchmark"):
        BenchStore(claims_only, create=False)


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
                    store=tmp_path / "store.sqlite")
    assert len(res.errors) == 1 and "deliberately broken" in res.errors[0]
    assert math.isinf(res.times[0, 0])
    assert len(stored_rows(tmp_path / "store.sqlite")) == 1
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
    with pytest.raises(ValueError, match="cpus_per_trial"):
        run_bench([wl], [sub], cpus_per_trial=0)
    with pytest.raises(ValueError, match="cpus_per_trial .*exceeds"):
        run_bench([wl], [sub], backend="ray", workers=1, cpus_per_trial=2)
    assert BenchStore(tmp_path / "x.sqlite").get(plan_trials([wl], [sub], n_trials=1, n_studies=1)[0]) is None
