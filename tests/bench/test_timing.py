"""The trial clock: eval time is excluded, steps-to-target is deterministic, budgets stop trials."""

import math
import time

import pytest
import torch

from gradlab.bench.submission import builtin_submissions, warmup_cosine
from gradlab.bench.timing import TrialResult, run_trial
from gradlab.bench.workloads import DigitsMLP
from tests.bench.helpers import LinearRegressionWorkload, SlowStepSubmission, sgd_submission


def test_sleeping_eval_leaves_clock_and_steps_unchanged():
    wl, sub = LinearRegressionWorkload(), SlowStepSubmission(delay=0.002)

    def sleepy(workload, model):
        time.sleep(0.03)
        return workload.evaluate(model)

    fast = run_trial(wl, sub, {"lr": 0.1}, seed=0)
    slow = run_trial(wl, sub, {"lr": 0.1}, seed=0, eval_fn=sleepy)
    assert fast.reached and slow.reached
    assert slow.steps_to_target == fast.steps_to_target
    assert [e["metric"] for e in slow.evals] == [e["metric"] for e in fast.evals]
    n_evals = len(slow.evals)
    assert slow.eval_s >= 0.03 * n_evals
    # the clock holds only the steps (>= 2 ms each), not the 30 ms per eval
    assert slow.steps * 0.002 <= slow.time_to_target < slow.steps * 0.002 + 0.5 * 0.03 * n_evals
    assert slow.time_to_target < fast.time_to_target + 0.03 * n_evals / 2


def test_steps_to_target_deterministic_on_digits():
    torch.set_num_threads(1)
    sub = builtin_submissions()["sgd_nesterov"]()
    a = run_trial(DigitsMLP(), sub, sub.default_hyperparameters(), seed=3)
    b = run_trial(DigitsMLP(), sub, sub.default_hyperparameters(), seed=3)
    assert a.reached and a.steps_to_target == b.steps_to_target
    assert a.steps_to_target % DigitsMLP.eval_period_steps == 0
    assert a.evals[-1]["metric"] >= DigitsMLP.validation_target > a.evals[0]["metric"]
    assert a.time_to_target == a.evals[-1]["clock_s"]


def test_runtime_budget_stops_without_logging_past_it():
    wl = LinearRegressionWorkload()
    wl.max_runtime_s = 0.01
    r = run_trial(wl, SlowStepSubmission(delay=0.004), {"lr": 1e-4}, seed=0)
    assert not r.reached and math.isinf(r.time_to_target)
    assert all(e["clock_s"] <= 0.01 for e in r.evals)
    assert r.steps < 10


def test_step_budget_and_budget_factor():
    wl = LinearRegressionWorkload()
    r = run_trial(wl, sgd_submission(), {"lr": 1e-6}, seed=0)  # far too small: never reaches
    assert r.steps == wl.max_steps and not r.reached
    r2 = run_trial(wl, sgd_submission(), {"lr": 1e-6}, seed=0, budget_factor=1.5)
    assert r2.steps == int(1.5 * wl.max_steps)


def test_divergence_stops_the_trial():
    r = run_trial(LinearRegressionWorkload(), sgd_submission(), {"lr": 1e3}, seed=0)
    assert r.diverged and not r.reached and r.steps < LinearRegressionWorkload().max_steps


def test_json_round_trip_keeps_inf():
    r = run_trial(LinearRegressionWorkload(), sgd_submission(), {"lr": 1e-6}, seed=0)
    back = TrialResult.from_json(r.to_json())
    assert back == r and math.isinf(back.time_to_target)


def test_warmup_cosine_by_hand():
    assert warmup_cosine(0, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 0.1) == pytest.approx(0.5)
    last = 0.5 * (1 + math.cos(math.pi * 89 / 90))
    assert warmup_cosine(99, 100, 0.1) == pytest.approx(last) and last > 0
    assert warmup_cosine(100, 100, 0.1) == warmup_cosine(500, 100, 0.1) == pytest.approx(last)


def test_bad_trial_inputs():
    wl, sub = LinearRegressionWorkload(), sgd_submission()
    with pytest.raises(TypeError, match="workload"):
        run_trial("digits", sub, {}, seed=0)
    with pytest.raises(TypeError, match="lacks"):
        run_trial(wl, object(), {}, seed=0)
    with pytest.raises(ValueError, match="seed"):
        run_trial(wl, sub, {}, seed=-1)
    with pytest.raises(ValueError, match="budget_factor"):
        run_trial(wl, sub, {}, seed=0, budget_factor=0.0)
    with pytest.raises(TypeError, match="hyperparameters"):
        run_trial(wl, sub, [0.1], seed=0)
    with pytest.raises(ValueError, match="batch_size"):
        wl.input_queue(10_000, 0)


def test_process_clock_excludes_a_busy_eval_and_counts_busy_steps():
    wl = LinearRegressionWorkload()

    def busy_eval(workload, model):
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:
            pass
        return workload.evaluate(model)

    r = run_trial(wl, sgd_submission(), {"lr": 0.1}, seed=0, eval_fn=busy_eval, clock="process")
    fast = run_trial(wl, sgd_submission(), {"lr": 0.1}, seed=0, clock="process")
    assert r.reached and r.clock == "process" and r.steps_to_target == fast.steps_to_target
    assert r.eval_s >= 0.02 * len(r.evals)
    assert r.time_to_target < 0.5 * 0.02 * len(r.evals)  # the ~20 ms of CPU per eval is not on the clock


def test_bad_clock():
    with pytest.raises(ValueError, match="clock"):
        run_trial(LinearRegressionWorkload(), sgd_submission(), {}, seed=0, clock="gpu")
