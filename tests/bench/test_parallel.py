"""Trials in worker processes (``gradlab.core.parallel.make_unordered_map``): same results, stored as they finish."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.bench.runner import run_bench
from gradlab.cli import main
from gradlab.core.parallel import make_unordered_map
from tests.bench.helpers import LinearRegressionWorkload, sgd_submission

LIN = "tests.bench.helpers:LinearRegressionWorkload"


def _square(x):
    return x * x


@pytest.mark.parametrize("backend,workers", [("sequential", 1), ("local", 2)])
def test_unordered_map_yields_every_index_once(backend, workers):
    pairs = list(make_unordered_map(backend, workers)(_square, range(7)))
    assert sorted(pairs) == [(i, i * i) for i in range(7)]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-1000, 1000), max_size=12))
def test_unordered_map_is_a_permutation_of_map(items):
    pairs = list(make_unordered_map("sequential")(_square, items))
    assert sorted(i for i, _ in pairs) == list(range(len(items)))
    assert all(items[i] ** 2 == v for i, v in pairs)


def test_unordered_map_bad_input():
    with pytest.raises(ValueError, match="backend"):
        make_unordered_map("threads")
    with pytest.raises(ValueError, match="workers"):
        make_unordered_map("local", 0)


def test_local_workers_give_the_sequential_steps_and_resume(tmp_path):
    kw = dict(n_trials=2, n_studies=2, seed=3, clock="process")
    seq = run_bench([LinearRegressionWorkload()], [sgd_submission()], **kw)
    store = tmp_path / "store.sqlite"
    par = run_bench([LinearRegressionWorkload()], [sgd_submission()], store=store, backend="local", workers=2, **kw)
    assert [r.steps_to_target for _, r in seq.trials] == [r.steps_to_target for _, r in par.trials]
    assert [s.key for s, _ in seq.trials] == [s.key for s, _ in par.trials]
    from tests.bench.test_runner import stored_rows

    assert len(stored_rows(store)) == 4
    again = run_bench([LinearRegressionWorkload()], [sgd_submission()], store=store, backend="local", workers=2, **kw)
    assert again.resumed == 4


def test_cli_workers_and_bad_backend_options(tmp_path):
    argv = ["bench", "--workloads", LIN, "--submissions", "tests.bench.helpers:sgd_submission", "--trials", "2",
            "--studies", "1", "--out", str(tmp_path)]
    assert main([*argv, "--backend", "local", "--workers", "2"]) == 0
    assert len(json.loads((tmp_path / "results.json").read_text())["trials"]) == 2
    assert main([*argv, "--address", "127.0.0.1:6379"]) == 2  # --address without --backend ray


@pytest.mark.slow
def test_ray_backend_for_real(tmp_path):
    import ray

    argv = ["bench", "--workloads", LIN, "--submissions", "tests.bench.helpers:sgd_submission", "--trials", "2",
            "--studies", "1", "--clock", "process"]
    try:
        assert main([*argv, "--backend", "ray", "--workers", "2", "--cpus-per-trial", "2", "--out",
                     str(tmp_path / "ray"), "--store", str(tmp_path / "ray.sqlite")]) == 0
    finally:
        if ray.is_initialized():
            ray.shutdown()
    assert main([*argv, "--out", str(tmp_path / "seq"), "--store", str(tmp_path / "seq.sqlite")]) == 0
    steps = [[t["steps_to_target"] for t in json.loads((tmp_path / d / "results.json").read_text())["trials"]]
             for d in ("ray", "seq")]
    assert steps[0] == steps[1]
