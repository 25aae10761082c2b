"""The reaper that takes a driver's local Ray instance down with it (no Ray needed: fake 'Ray' children)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from gradlab.claims import reaper as reaper_mod

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc")

DRIVER = textwrap.dedent("""
    import os, subprocess, sys, time
    reaper_script, fake_ray_dir, release = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    sleeper = "import time; time.sleep(120)"
    ray_like = subprocess.Popen([sys.executable, "-c", sleeper, fake_ray_dir + "/raylet"])
    other = subprocess.Popen([sys.executable, "-c", sleeper, "not-ray"])
    # started last, so it is found first: its own command line names the Ray directory, and it must not kill itself
    reaper = subprocess.Popen([sys.executable, "-I", reaper_script, str(os.getpid()), fake_ray_dir, "0.05"],
                              stdin=subprocess.PIPE, text=True, start_new_session=True)
    print(ray_like.pid, other.pid, reaper.pid, flush=True)
    if release:
        time.sleep(0.5)
        reaper.stdin.write("done\\n"); reaper.stdin.flush(); reaper.stdin.close(); reaper.wait()
        print("released", flush=True)
    time.sleep(120)
""")


def _alive(pid):
    st = reaper_mod._stat(pid)
    return st is not None


def _run_driver(tmp_path, release):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    fake_ray = str(tmp_path / "site-packages" / "ray")
    proc = subprocess.Popen([sys.executable, str(script), reaper_mod.__file__, fake_ray, "1" if release else "0"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    ray_like, other, reaper = (int(v) for v in proc.stdout.readline().split())
    if release:
        assert proc.stdout.readline().strip() == "released"
    else:
        time.sleep(0.5)  # let the reaper record the children
    return proc, ray_like, other, reaper


def _cleanup(*pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_sigkilled_driver_takes_its_ray_processes_along_and_nothing_else(tmp_path):
    proc, ray_like, other, reaper = _run_driver(tmp_path, release=False)
    try:
        assert _alive(ray_like) and _alive(other)
        proc.kill()
        proc.wait()
        deadline = time.time() + 10
        while _alive(ray_like) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(ray_like), "the Ray-like child outlived its SIGKILLed driver"
        assert _alive(other), "the reaper killed a process that is not Ray's"
        deadline = time.time() + 10
        while _alive(reaper) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(reaper), "the reaper did not exit after its work"
    finally:
        _cleanup(proc.pid, ray_like, other, reaper)


def test_a_released_reaper_kills_nothing(tmp_path):
    proc, ray_like, other, reaper = _run_driver(tmp_path, release=True)
    try:
        assert not _alive(reaper)
        proc.kill()
        proc.wait()
        time.sleep(0.5)
        assert _alive(ray_like) and _alive(other)
    finally:
        _cleanup(proc.pid, ray_like, other, reaper)


def test_ray_descendants_matches_by_command_line_and_records_start_times(tmp_path):
    fake_ray = str(tmp_path / "ray")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", fake_ray])
    try:
        deadline = time.time() + 10
        found = {}
        while child.pid not in found and time.time() < deadline:
            found = reaper_mod.ray_descendants(os.getpid(), fake_ray)
            time.sleep(0.05)
        assert found.get(child.pid) == reaper_mod._stat(child.pid)[1]
        assert reaper_mod.ray_descendants(os.getpid(), str(tmp_path / "elsewhere")) == {}
    finally:
        child.kill()
        child.wait()
