"""The Ray backend for real: a local ray.init, claims as Ray tasks, the driver writing the store."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.cli_helpers import ROOT, gradlab_cli

ray = pytest.importorskip("ray", reason="the test extra installs ray; this guards only partial installs")

EXPECTED = {"demo/passes": "passed", "demo/fails": "failed", "demo/raises": "error", "demo/sleeps": "timeout",
            "demo/dies": "error"}


@pytest.mark.ray
def test_ray_backend_matches_local(demo_env):
    from gradlab.claims.store import ResultStore

    env = dict(demo_env["env"], RAY_USAGE_STATS_ENABLED="0")
    out = gradlab_cli("reproduce", "--only", "demo", "--scale", "smoke", "--backend", "ray", "--workers", "2",
                      "--store", str(demo_env["store"]), "--out", str(demo_env["out"]), env=env, timeout=600)
    assert out.returncode == 3, out.stdout + out.stderr  # demo claims crash by design
    rows = list(ResultStore(demo_env["store"]).rows())
    assert {r.claim_id: r.status for r in rows} == EXPECTED
    assert all(r.backend == "ray" for r in rows)
    passed = next(r for r in rows if r.claim_id == "demo/passes")
    assert passed.figures and passed.metrics["n"] == 100


@pytest.mark.ray
def test_ray_backend_runs_shared_setups_once_before_their_claims(tmp_path):
    from gradlab.claims.store import ResultStore

    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "GRADLAB_EXTRA_PAPERS": "tests.fixtures.setup_papers", "GRADLAB_DEMO_MARKER": str(marks),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "RAY_USAGE_STATS_ENABLED": "0",
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop("GRADLAB_SETUP_FAIL", None)
    store = tmp_path / "store" / "results.sqlite"
    out = gradlab_cli("reproduce", "--only", "setupdemo", "--scale", "smoke", "--backend", "ray", "--workers", "2",
                      "--store", str(store), "--out", str(tmp_path / "report"), env=env, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    assert {r.status for r in ResultStore(store).rows()} == {"passed"}  # each claim found what its setups built
    names = [line.split()[0] for line in (marks / "log").read_text().splitlines()]
    assert names.count("base-model") == 1 and names.count("fine-tuned") == 1
    assert "setup done" in out.stdout


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False


def _session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid`` (the driver started a new session; Ray's daemons and workers inherit it)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields: state, ppid, pgrp, session, ...
                pids.append(int(entry))
    return pids


@pytest.mark.ray
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the Ray processes")
def test_ray_tasks_stop_promptly_when_the_driver_is_sigkilled(tmp_path):
    """SIGKILL only the driver of `reproduce --backend ray`: the task computing the claim, and the local Ray
    instance the driver started, must not live on as orphans."""
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "GRADLAB_EXTRA_PAPERS": "tests.fixtures.orphan_papers", "GRADLAB_ORPHAN_MARKER": str(marks),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1",
           "MPLBACKEND": "Agg", "RAY_USAGE_STATS_ENABLED": "0"}
    cmd = [sys.executable, "-m", "gradlab.cli", "reproduce", "--only", "orphan", "--scale", "smoke", "--backend", "ray",
           "--workers", "1", "--store", str(tmp_path / "store.sqlite"), "--out", str(tmp_path / "report")]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(marks.glob("*.pid")) and proc.poll() is None:
            time.sleep(0.2)
        pid_files = list(marks.glob("*.pid"))
        assert pid_files, f"the claim never started (driver exit code {proc.poll()})"
        task_pid = int(pid_files[0].read_text())
        ray_pids = [p for p in _session_pids(proc.pid) if p != proc.pid]
        assert _alive(task_pid) and task_pid in ray_pids, "the Ray task is not running in the driver's session"
        proc.kill()
        proc.wait()
        deadline = time.time() + 10
        while _alive(task_pid) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(task_pid), "the Ray task computed on after its driver was killed"
        deadline = time.time() + 30
        while any(_alive(p) for p in ray_pids) and time.time() < deadline:
            time.sleep(0.2)
        left = [p for p in ray_pids if _alive(p)]
        assert not left, f"Ray processes of the killed driver's local instance live on: {left}"
    finally:
        for pid in [proc.pid] + _session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
