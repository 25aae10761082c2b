"""The local runner end to end on the demo papers: statuses, skipping, forcing, resuming after SIGKILL."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gradlab.claims.fingerprint import paper_fingerprint
from gradlab.claims.registry import load_registry
from gradlab.claims.runner import plan, run_tasks
from gradlab.claims.store import ResultStore

from tests.fixtures.cli_helpers import ROOT, runs

EXPECTED = {"demo/passes": "passed", "demo/fails": "failed", "demo/raises": "error", "demo/sleeps": "timeout",
            "demo/dies": "error"}


def test_local_runner_records_every_outcome_and_skips_finished(demo_env):
    registry = load_registry()
    store = ResultStore(demo_env["store"])
    events = []
    rows = run_tasks(plan(registry, ["demo"], "smoke", 0), store, workers=2, observer=events.append)
    got = {r.claim_id: r.status for r in rows}
    assert got == EXPECTED
    by_id = {r.claim_id: r for r in rows}
    assert "deliberate failure inside a claim" in by_id["demo/raises"].traceback
    assert "3 s limit" in by_id["demo/sleeps"].traceback
    assert "exit code 3" in by_id["demo/dies"].traceback
    assert by_id["demo/passes"].figures and store.figure_path(by_id["demo/passes"].figures["histogram"]).exists()
    assert {e.kind for e in events} >= {"start", "progress", "done"}
    assert runs(demo_env["marks"], "passes") == 1
    env = by_id["demo/passes"].environment  # where it ran, as the worker saw it (2 workers: cpu_count // 2 threads)
    assert env["threads"] == max(1, (os.cpu_count() or 1) // 2) and env["torch"] == torch.__version__ and env["cpu"]
    assert store.get("demo/passes", "smoke", 0, by_id["demo/passes"].fingerprint).environment == env

    again = run_tasks(plan(registry, ["demo"], "smoke", 0), store, workers=2)
    assert {r.claim_id: r.status for r in again} == EXPECTED
    assert runs(demo_env["marks"], "passes") == 1 and runs(demo_env["marks"], "dies") == 1

    run_tasks(plan(registry, ["demo"], "smoke", 0)[:1], store, workers=1, force=True)
    assert runs(demo_env["marks"], "passes") == 2


def test_runner_rejects_bad_arguments(demo_env):
    store = ResultStore(demo_env["store"])
    with pytest.raises(ValueError, match="backend"):
        run_tasks([], store, backend="slurm")
    with pytest.raises(ValueError, match="workers"):
        run_tasks([], store, workers=0)


def test_fingerprint_changes_with_the_paper_module(tmp_path, monkeypatch):
    pkg = tmp_path / "fpdemo"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    mod = pkg / "paper_x.py"
    mod.write_text("A = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from gradlab.claims.types import Paper

    paper = Paper(key="x", title="x", cluster="optim", components=("gradlab.claims.store",))
    before = paper_fingerprint(paper, "fpdemo.paper_x")
    assert paper_fingerprint(paper, "fpdemo.paper_x") == before
    mod.write_text("A = 2\n")
    os.utime(mod, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert paper_fingerprint(paper, "fpdemo.paper_x") != before
    other = Paper(key="x", title="x", cluster="optim", components=("gradlab.claims.report",))
    assert paper_fingerprint(other, "fpdemo.paper_x") != paper_fingerprint(paper, "fpdemo.paper_x")
    with pytest.raises(ValueError, match="component"):
        paper_fingerprint(Paper(key="x", title="x", cluster="optim", components=("gradlab.nope.Nothing",)),
                          "fpdemo.paper_x")


def _count_rows(path) -> int:
    if not path.exists():
        return 0
    try:
        con = sqlite3.connect(path, timeout=1)
        n = con.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        con.close()
        return n
    except sqlite3.OperationalError:
        return 0


def test_sigkilled_run_resumes_without_rerunning_finished_claims(demo_env):
    """Kill `gradlab reproduce` (driver and workers) with SIGKILL mid-run; the rerun skips what finished."""
    store_path = demo_env["store"]
    env = dict(demo_env["env"], GRADLAB_DEMO_SLEEP="60")
    cmd = [sys.executable, "-m", "gradlab.cli", "reproduce", "--only", "demo", "--scale", "smoke", "--workers", "1",
           "--store", str(store_path), "--out", str(demo_env["out"])]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while _count_rows(store_path) < 2 and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = _count_rows(store_path)
    assert 2 <= finished < 5
    assert runs(demo_env["marks"], "passes") == 1 and runs(demo_env["marks"], "fails") == 1

    done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stdout + done.stderr  # some demo claims crash by design (exit 3)
    assert runs(demo_env["marks"], "passes") == 1 and runs(demo_env["marks"], "fails") == 1
    rows = {r.claim_id: r.status for r in ResultStore(store_path).rows()}
    assert rows == EXPECTED


def test_longest_known_claims_start_first(demo_env):
    from gradlab.claims.runner import _longest_first
    from gradlab.claims.store import ResultRow

    registry = load_registry()
    store = ResultStore(demo_env["store"])
    tasks = plan(registry, ["demo"], "smoke", 0)
    for i, task in enumerate(tasks):
        if task.spec.name != "dies":  # "dies" has no history: it goes first
            store.put(ResultRow(claim_id=task.spec.id, paper="demo", scale="smoke", seed=0, fingerprint="old",
                                status="passed", started_at=0.0, finished_at=1.0, duration_s=float(i)))
    order = [t.spec.name for t in _longest_first(tasks, store)]
    assert order == ["dies", "sleeps", "raises", "fails", "passes"]


def test_without_history_claims_start_by_declared_timeout_longest_first(demo_env):
    from gradlab.claims.runner import _longest_first

    tasks = plan(load_registry(), ["demo"], "smoke", 0)
    store = ResultStore(demo_env["store"])  # empty: a fresh run
    names = [t.spec.name for t in tasks]
    assert names.index("sleeps") < len(names) - 1  # the test would be vacuous if it were already last
    timeouts = {t.spec.name: t.timeout for t in tasks}
    assert timeouts["sleeps"] < min(v for k, v in timeouts.items() if k != "sleeps")
    order = [t.spec.name for t in _longest_first(tasks, store)]
    # every other demo claim has the default smoke timeout: they keep their order, the 3-s "sleeps" goes last
    assert order == [n for n in names if n != "sleeps"] + ["sleeps"]


def test_ctrl_c_stops_the_run_keeps_finished_results_and_exits_130(demo_env):
    store_path = demo_env["store"]
    env = dict(demo_env["env"], GRADLAB_DEMO_SLEEP="60")
    cmd = [sys.executable, "-m", "gradlab.cli", "reproduce", "--only", "demo", "--scale", "smoke", "--workers", "1",
           "--store", str(store_path), "--out", str(demo_env["out"])]
    # A test run started in the background by a non-interactive shell inherits SIGINT as ignored, and Python then
    # keeps ignoring it (no KeyboardInterrupt): give the child the default disposition, as a terminal would.
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while _count_rows(store_path) < 1 and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted" in out
    kept = {r.claim_id: r.status for r in ResultStore(store_path).rows()}
    assert kept.get("demo/passes") == "passed"
    assert runs(demo_env["marks"], "passes") == 1


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the worker processes")
def test_workers_die_promptly_when_the_driver_is_sigkilled(demo_env):
    """SIGKILL only the driver (not its process group): its claim workers must not compute on as orphans."""
    env = dict(demo_env["env"], GRADLAB_DEMO_SLEEP="120")
    cmd = [sys.executable, "-m", "gradlab.cli", "reproduce", "--only", "demo", "--scale", "smoke", "--workers", "2",
           "--store", str(demo_env["store"]), "--out", str(demo_env["out"])]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        children: list[int] = []
        while time.time() < deadline:  # a finished claim proves the workers run; then take the live ones
            children = [int(p) for p in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]
            if _count_rows(demo_env["store"]) >= 1 and len(children) >= 2:
                break
            time.sleep(0.2)
        assert len(children) >= 2, "no worker was running"
        proc.kill()
        proc.wait()
        deadline = time.time() + 10
        while any(_alive(c) for c in children) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_alive(c) for c in children), "worker processes outlived the killed driver"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_fingerprint_ignores_docstrings_comments_and_formatting_but_not_code(tmp_path, monkeypatch):
    pkg = tmp_path / "fpdoc"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    mod = pkg / "paper_y.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    from gradlab.claims.types import Paper

    paper = Paper(key="y", title="y", cluster="optim", components=())
    stamp = [time.time_ns()]

    def fingerprint_of(source: str) -> str:
        mod.write_text(source)
        stamp[0] += 10**9
        os.utime(mod, ns=(stamp[0], stamp[0]))
        return paper_fingerprint(paper, "fpdoc.paper_y")

    base = fingerprint_of('"""Module doc."""\n\ndef f(x):\n    """Old doc."""\n    return x + 1\n')
    assert fingerprint_of('"""Other module doc."""\n\n\ndef f(x):  # a comment\n    """New doc."""\n'
                          '    return (x + 1)\n') == base
    assert fingerprint_of('def f(x):\n    return x + 1\n') == base
    assert fingerprint_of('def f(x):\n    return x + 2\n') != base
    assert fingerprint_of('def f(x):\n    "a string statement that is not first"\n    return x + 1\n') == base
    assert fingerprint_of('def f(x):\n    y = "a literal"\n    return x + 1\n') != base
    assert fingerprint_of('def f(x):\n    return x +\n') != base  # does not parse: hashed byte for byte


def test_fingerprint_covers_the_code_that_decides_verdicts():
    from gradlab.claims.fingerprint import fingerprint_files

    registry = load_registry()
    names = {p.resolve().relative_to(Path(ROOT, "src").resolve()).as_posix()
             for p in fingerprint_files(registry.papers["lion"].paper)}
    assert {"gradlab/papers/lion.py", "gradlab/claims/types.py", "gradlab/claims/stats.py",
            "gradlab/core/seeding.py"} <= names
    assert "gradlab/optim/lion.py" in names  # a component
