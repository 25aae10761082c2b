"""``gradlab bench`` exit codes, outputs and name resolution."""

import json
from importlib.metadata import EntryPoint

import pytest

import gradlab.bench.loading as loading
from gradlab.bench.loading import UnknownNameError, load_submission, load_workload
from gradlab.cli import main

LIN = "tests.bench.helpers:LinearRegressionWorkload"


def test_unknown_workload_exits_2_listing_names(capsys):
    assert main(["bench", "--workloads", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and "digits_mlp" in err and len(err.strip().splitlines()) <= 3


@pytest.mark.parametrize("argv", [["--submissions", "nosuch"], ["--submissions", "tests.bench.helpers:nosuch"],
                                  ["--submissions", "tests.bench.helpers:NOT_A_SUBMISSION"],
                                  ["--submissions", ","], ["--ruleset", "self", "--trials", "2"]])
def test_bad_input_exits_2(argv, tmp_path):
    assert main(["bench", "--workloads", LIN, "--out", str(tmp_path), *argv]) == 2


def test_argparse_rejects_bad_numbers():
    with pytest.raises(SystemExit) as e:
        main(["bench", "--trials", "0"])
    assert e.value.code == 2


def test_bench_runs_resumes_and_writes_outputs(tmp_path, capsys):
    argv = ["bench", "--workloads", LIN, "--submissions", "tests.bench.helpers:sgd_submission,adamw",
            "--trials", "2", "--studies", "1", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "plain_sgd" in out and "adamw" in out and "0 resumed" in out
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["submissions"] == ["plain_sgd", "adamw"] and len(data["trials"]) == 4
    assert (tmp_path / "profile.png").stat().st_size > 1000 and (tmp_path / "BENCH.md").exists()
    assert main(argv) == 0
    assert "4 resumed" in capsys.readouterr().out


def test_trial_error_exits_1(tmp_path):
    assert main(["bench", "--workloads", LIN, "--submissions", "tests.bench.helpers:BrokenSubmission",
                 "--trials", "1", "--studies", "1", "--out", str(tmp_path)]) == 1


def test_entry_point_submission(monkeypatch):
    ep = EntryPoint("ep_sgd", "tests.bench.helpers:sgd_submission", loading.SUBMISSION_GROUP)
    monkeypatch.setattr(loading, "entry_points", lambda group: [ep] if group == loading.SUBMISSION_GROUP else [])
    assert load_submission("ep_sgd").name == "plain_sgd"
    assert "ep_sgd" in loading.available_submissions()


def test_loading_errors():
    with pytest.raises(UnknownNameError, match="valid"):
        load_workload("nosuch")
    with pytest.raises(UnknownNameError, match="cannot import"):
        load_submission("no_such_pkg_xyz:thing")
    with pytest.raises(TypeError, match="not a submission"):
        load_submission("tests.bench.helpers:NOT_A_SUBMISSION")
    with pytest.raises(TypeError, match="non-empty"):
        load_workload("")
    assert load_workload(LIN).name == "linreg"


def test_sigkill_then_resume_reruns_no_finished_trial(tmp_path, capsys):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.bench.test_runner import stored_rows

    store = tmp_path / "store.sqlite"
    argv = ["bench", "--workloads", LIN, "--submissions", "tests.bench.helpers:SlowStepSubmission", "--trials", "2",
            "--studies", "2", "--out", str(tmp_path / "out"), "--store", str(store)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gradlab", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def rows():
        try:
            return stored_rows(store)
        except Exception:  # noqa: BLE001 - the table does not exist yet
            return {}

    deadline = time.time() + 60
    while time.time() < deadline and len(rows()) < 1 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = rows()
    assert 1 <= len(done) < 4
    assert main(argv) == 0
    assert f"{len(done)} resumed" in capsys.readouterr().out
    after = rows()
    assert len(after) == 4 and all(after[k] == v for k, v in done.items())


def test_report_rebuilds_the_bench_pages_from_the_store(tmp_path, capsys):
    store = tmp_path / "store.sqlite"
    argv = ["bench", "--workloads", LIN, "--submissions", "tests.bench.helpers:sgd_submission,adamw", "--trials", "2",
            "--studies", "1", "--clock", "process", "--out", str(tmp_path / "bench-out"), "--store", str(store)]
    assert main(argv) == 0
    first = json.loads((tmp_path / "bench-out" / "results.json").read_text())
    assert main(["report", "--store", str(store), "--out", str(tmp_path / "report")]) == 0
    assert "rebuilt from the store" in capsys.readouterr().out
    page = tmp_path / "report" / "bench"
    rebuilt = json.loads((page / "results.json").read_text())
    assert rebuilt["scores_time"] == first["scores_time"] and rebuilt["times_s"] == first["times_s"]
    html = (page / "bench.html").read_text()
    assert "Ranking" in html and "linreg" in html and (page / "profile.png").stat().st_size > 1000
    assert main(["report", "--store", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r2")]) == 2


def test_cpus_per_trial_and_store_options(tmp_path, capsys):
    argv = ["bench", "--workloads", LIN, "--submissions", "tests.bench.helpers:sgd_submission", "--trials", "1",
            "--studies", "1", "--out", str(tmp_path / "o")]
    assert main([*argv, "--cpus-per-trial", "2", "--store", str(tmp_path / "s.sqlite")]) == 0
    with pytest.raises(SystemExit) as exit_info:  # argparse's own one-line error
        main([*argv, "--cpus-per-trial", "0"])
    assert exit_info.value.code == 2
    assert main([*argv, "--backend", "ray", "--workers", "1", "--cpus-per-trial", "2"]) == 2
    assert main([*argv, "--store", str(tmp_path)]) == 2  # a directory
    (tmp_path / "text").write_text("hello")
    assert main([*argv, "--store", str(tmp_path / "text")]) == 2
    err = capsys.readouterr().err
    assert "--cpus-per-trial" in err and "--store" in err


def test_package_exports_lazily():
    import gradlab.bench as bench

    assert all(getattr(bench, name) is not None for name in bench.__all__)
    with pytest.raises(AttributeError, match="nosuch"):
        bench.nosuch


def test_self_tuning_ruleset_via_cli(tmp_path):
    assert main(["bench", "--workloads", LIN, "--submissions", "tests.bench.helpers:sgd_submission", "--ruleset",
                 "self", "--studies", "2", "--clock", "process", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["ruleset"] == "self" and data["n_trials"] == 1 and len(data["trials"]) == 2
    assert all(t["budget_factor"] == 1.5 and t["clock"] == "process" for t in data["trials"])


def test_bench_html_leads_with_the_ranking_and_escapes_names(tmp_path):
    import numpy as np

    from gradlab.bench.pages import write_outputs
    from gradlab.bench.runner import BenchResult
    from tests.bench.helpers import LinearRegressionWorkload

    res = BenchResult(["linreg"], ["<b>evil</b>", "sgd"], "external", 2, 1, 0,
                      study_times=np.array([[[2.0]], [[1.0]]]), study_steps=np.array([[[20.0]], [[10.0]]]))
    res.errors.append("x: <script>alert(1)</script>")
    html = write_outputs(res, tmp_path, [LinearRegressionWorkload()])["html"].read_text()
    assert "<b>evil</b>" not in html and "&lt;b&gt;evil&lt;/b&gt;" in html and "<script>" not in html
    assert html.index("Ranking") < html.index("profile.png")
    ranking = html[html.index("Ranking"):html.index("Performance profiles")]
    assert ranking.index("sgd") < ranking.index("evil")  # sgd is 2x faster: rank 1
    assert "mse &le; 0.05" in html and "2.000 / 20" in html
