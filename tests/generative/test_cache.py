"""cached_artifact: keyed by recipe and builder source, built once under a file lock, never half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab.generative.cache import artifact_key, cache_root, cached_artifact

WORKER = Path(__file__).with_name("cache_worker.py")


def _writer(text: str):
    calls = []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "x.txt").write_text(text)
    return build, calls


def test_builds_once_and_reuses(tmp_path):
    build, calls = _writer("a")
    p1 = cached_artifact("thing", {"n": 1}, build, cache_dir=tmp_path)
    p2 = cached_artifact("thing", {"n": 1}, build, cache_dir=tmp_path)
    assert p1 == p2 and len(calls) == 1 and (p1 / "x.txt").read_text() == "a"
    assert p1.name == f"thing-{artifact_key({'n': 1}, build)}" and (p1 / "recipe.json").is_file()
    p3 = cached_artifact("thing", {"n": 2}, build, cache_dir=tmp_path)
    assert p3 != p1 and len(calls) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_key_depends_on_builder_source(tmp_path):
    build, _ = _writer("a")

    class Other:  # same recipe, a builder from another module's source
        __module__ = "gradlab.generative.cache"

        def __call__(self, tmp):
            pass
    assert artifact_key({"n": 1}, build) != artifact_key({"n": 1}, Other())


def test_failed_build_leaves_nothing(tmp_path):
    def bad(tmp: Path) -> None:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        cached_artifact("bad", {}, bad, cache_dir=tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_errors_and_root(tmp_path, monkeypatch):
    build, _ = _writer("a")
    with pytest.raises(ValueError, match="name"):
        cached_artifact("../up", {}, build, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="recipe"):
        cached_artifact("ok", {"f": object()}, build, cache_dir=tmp_path)
    with pytest.raises(TypeError, match="build"):
        cached_artifact("ok", {}, "not callable", cache_dir=tmp_path)
    monkeypatch.setenv("GRADLAB_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("GRADLAB_CACHE")
    assert cache_root() == Path.cwd() / ".gradlab" / "cache"


@settings(max_examples=30, deadline=None)
@given(recipe=st.dictionaries(st.text(min_size=1, max_size=5), st.one_of(st.integers(), st.text(max_size=5), st.booleans()),
                              max_size=4))
def test_key_is_a_function_of_the_recipe(recipe):
    build, _ = _writer("a")
    k = artifact_key(recipe, build)
    assert len(k) == 16 and k == artifact_key(dict(reversed(list(recipe.items()))), build)
    assert k != artifact_key({**recipe, "__extra__": 1}, build)


def _spawn(root: Path, mode: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(WORKER), str(root), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_two_processes_build_once(tmp_path):
    procs = [_spawn(tmp_path, "slow"), _spawn(tmp_path, "slow")]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    paths = {o[0].strip() for o in outs}
    assert len(paths) == 1
    assert (tmp_path / "builds.log").read_text().splitlines() == ["slow"]
    assert (Path(paths.pop()) / "data.txt").read_text() == "done"


def test_killed_build_leaves_no_half_artifact(tmp_path):
    p = _spawn(tmp_path, "hang")
    deadline = time.time() + 60
    while not (tmp_path / "started").exists():
        assert time.time() < deadline and p.poll() is None, p.stderr.read() if p.poll() is not None else "timeout"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    cache = tmp_path / "cache"
    assert not [d for d in cache.iterdir() if d.name.startswith("worker-")]  # no artifact under the final name
    # the next builder removes the killed one's temporary and builds a complete artifact
    q = _spawn(tmp_path, "slow")
    out, err = q.communicate(timeout=60)
    assert q.returncode == 0, err
    assert (Path(out.strip()) / "data.txt").read_text() == "done"
    assert not [d for d in cache.iterdir() if d.name.startswith(".tmp")]
    assert (tmp_path / "builds.log").read_text().splitlines() == ["hang", "slow"]
