"""AlgoPerf's target-setting procedure (gradlab.bench.targets) and ``--set-targets`` / ``--targets``."""

import json
import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.bench.targets import apply_targets, best_validation, load_targets, set_targets, write_targets
from gradlab.bench.timing import TrialResult, run_trial
from gradlab.cli import main
from tests.bench.helpers import LinearRegressionWorkload, sgd_submission

LIN = "tests.bench.helpers:LinearRegressionWorkload"


def test_best_validation_by_direction():
    r = TrialResult("w", "s", {}, 0, 1.0, evals=[{"metric": 0.3}, {"metric": math.nan}, {"metric": 0.1},
                                                 {"metric": 0.2}])
    assert best_validation(r, True) == 0.3 and best_validation(r, False) == 0.1
    assert math.isnan(best_validation(TrialResult("w", "s", {}, 0, 1.0), True))


def test_set_targets_is_the_median_of_the_best_configurations_reruns():
    wl, sub = LinearRegressionWorkload(), sgd_submission()
    rec = set_targets([wl], [sub], n_trials=3, n_reruns=3, seed=1)["linreg"]
    assert rec["steps"] == wl.step_hint and len(rec["trials"]) == 3
    best = min(rec["trials"], key=lambda t: t["best_validation"])  # MSE: minimised
    assert rec["hyperparameters"] == best["hyperparameters"] and rec["submission"] == "plain_sgd"
    assert rec["target"] == statistics.median(rec["rerun_best_validation"])
    # a rerun is an ordinary trial of the best point without a target, stopped at step_hint
    free = LinearRegressionWorkload()
    free.validation_target = -math.inf
    r = run_trial(free, sub, best["hyperparameters"], 0, budget_factor=wl.step_hint / wl.max_steps)
    assert r.steps == wl.step_hint and not r.reached
    assert wl.validation_target == 0.05  # the workload itself is untouched


def test_set_targets_bad_input():
    with pytest.raises(ValueError, match="n_trials"):
        set_targets([LinearRegressionWorkload()], [sgd_submission()], n_trials=0)
    with pytest.raises(ValueError, match="non-empty"):
        set_targets([], [sgd_submission()])
    with pytest.raises(TypeError, match="Workload"):
        set_targets(["linreg"], [sgd_submission()])


@settings(max_examples=25, deadline=None)
@given(st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=8),
                       st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False), max_size=4))
def test_write_load_apply_roundtrip(tmp_path_factory, targets):
    path = tmp_path_factory.mktemp("t") / "targets.json"
    write_targets(path, {k: {"target": v, "trials": []} for k, v in targets.items()})
    assert load_targets(path) == targets
    wl = LinearRegressionWorkload()
    assert apply_targets([wl], targets) == (["linreg"] if "linreg" in targets else [])
    assert wl.validation_target == targets.get("linreg", 0.05)


def test_load_targets_rejects_malformed_files(tmp_path):
    p = tmp_path / "t.json"
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        load_targets(p)
    p.write_text(json.dumps({"linreg": {"target": "inf"}}))
    with pytest.raises(ValueError, match="finite 'target'"):
        load_targets(p)
    with pytest.raises(ValueError, match="cannot read"):
        load_targets(tmp_path / "missing.json")


def test_cli_set_targets_then_targets(tmp_path, capsys):
    assert main(["bench", "--set-targets", "--workloads", LIN, "--trials", "1", "--reruns", "1",
                 "--out", str(tmp_path)]) == 0
    target = load_targets(tmp_path / "targets.json")["linreg"]
    assert 0 < target < 0.05  # SGD on a noisy linear model gets below the built-in target within step_hint
    out = tmp_path / "bench"
    assert main(["bench", "--workloads", LIN, "--submissions", "tests.bench.helpers:sgd_submission", "--trials", "1",
                 "--studies", "1", "--targets", str(tmp_path / "targets.json"), "--out", str(out)]) == 0
    trial = json.loads((out / "results.json").read_text())["trials"][0]
    assert not trial["evals"] or trial["evals"][-1]["metric"] <= target or trial["time_to_target"] == "inf"
    assert main(["bench", "--workloads", LIN, "--targets", str(tmp_path / "nosuch.json"), "--out", str(out)]) == 2
    assert main(["bench", "--set-targets", "--workloads", LIN, "--submissions", "adamw", "--out", str(out)]) == 2
