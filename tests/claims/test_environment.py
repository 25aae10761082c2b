import json

import torch

from gradlab.claims.environment import cpu_model, distinct_environments, environment_label, run_environment


def test_run_environment_records_the_facts_that_change_numbers():
    env = run_environment(3)
    assert env["threads"] == 3 and env["torch"] == torch.__version__
    assert env["cpu"] == cpu_model() and env["cpu"]
    assert set(env) >= {"cpu", "cpu_count", "threads", "torch", "numpy", "python", "platform"}
    json.dumps(env)  # stored as JSON
    assert run_environment()["threads"] == torch.get_num_threads()


def test_label_and_distinct_environments():
    a = {"cpu": "X", "threads": 1, "torch": "2.1", "numpy": "2", "python": "3.12", "platform": "L", "cpu_count": 2}
    assert environment_label(a) == "X, 1 thread, torch 2.1"
    assert environment_label(dict(a, threads=4)) == "X, 4 threads, torch 2.1"
    assert environment_label({}) == ""
    # cpu_count alone does not change a number computed on the same threads: not a different environment
    same = dict(a, cpu_count=64)
    assert distinct_environments([a, {}, same, dict(a, threads=2), dict(a, torch="2.2"), a]) == [
        a, dict(a, threads=2), dict(a, torch="2.2")]
