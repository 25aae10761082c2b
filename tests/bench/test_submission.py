"""Built-in submissions, the OptimizerSubmission wrapper and the warmup-cosine base schedule."""


import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.bench.submission import BASELINES, OptimizerSubmission, builtin_submissions, check_submission, warmup_cosine
from gradlab.bench.timing import run_trial
from gradlab.bench.tuning import Param
from gradlab.bench.workloads import DigitsMLP
from tests.bench.helpers import LinearRegressionWorkload

DIGITS = DigitsMLP()


@pytest.mark.parametrize("name", list(builtin_submissions()))
def test_builtin_submission_trains(name):
    torch.set_num_threads(1)
    sub = check_submission(builtin_submissions()[name]())
    assert sub.name == name and "lr" in sub.tuning_search_space()
    r = run_trial(DIGITS, sub, sub.default_hyperparameters(), seed=0)
    assert not r.diverged and not r.error
    assert min(e["loss"] for e in r.evals) < 0.5 * r.evals[0]["loss"]


def test_baselines_are_algoperfs_four():
    assert set(BASELINES) == {"adamw", "nadamw", "sgd_momentum", "sgd_nesterov"}


def test_optimizer_state_and_schedule():
    wl = LinearRegressionWorkload()
    sub = builtin_submissions()["nadamw"]()
    model = wl.init_model(0)
    hp = {**sub.default_hyperparameters(), "lr": 0.01, "warmup_factor": 0.1}
    state = sub.init_optimizer_state(wl, model, hp, torch.Generator())
    opt = state["optimizer"]
    assert isinstance(opt, torch.optim.NAdam) and opt.param_groups[0]["decoupled_weight_decay"]
    # step 0 of a 12-step warmup (0.1 * 120): lr = 0.01 / 12; after 12 updates the peak 0.01
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 / 12)
    q = wl.input_queue(32, 0)
    for step in range(12):
        sub.update_params(wl, model, hp, next(q), state, step, torch.Generator())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    sgd = builtin_submissions()["sgd_nesterov"]().init_optimizer_state(wl, wl.init_model(0), {}, None)["optimizer"]
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["momentum"] == pytest.approx(0.9)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2000), st.integers(1, 1000), st.floats(0.0, 0.5))
def test_warmup_cosine_in_unit_interval_and_decreasing_after_warmup(step, hint, frac):
    m = warmup_cosine(step, hint, frac)
    assert 0.0 < m <= 1.0
    w = max(1, int(frac * hint))
    if step >= w:
        assert warmup_cosine(step + 1, hint, frac) <= m + 1e-12


def test_bad_submission_inputs():
    with pytest.raises(ValueError, match="name"):
        OptimizerSubmission("", lambda p, hp: None, {}, {})
    with pytest.raises(TypeError, match="factory"):
        OptimizerSubmission("x", 3, {}, {})
    with pytest.raises(TypeError, match="Param"):
        OptimizerSubmission("x", lambda p, hp: None, {"lr": 0.1}, {})
    with pytest.raises(ValueError, match="batch_size"):
        OptimizerSubmission("x", lambda p, hp: None, {}, {}, batch_size=0)
    bad = OptimizerSubmission("x", lambda p, hp: "not an optimizer", {"lr": Param(0.1, 1.0)}, {"lr": 0.1})
    wl = LinearRegressionWorkload()
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        bad.init_optimizer_state(wl, wl.init_model(0), {}, None)
    with pytest.raises(TypeError, match="name"):
        class NoName(OptimizerSubmission):
            pass
        s = NoName("y", lambda p, hp: None, {}, {})
        s.name = ""
        check_submission(s)
