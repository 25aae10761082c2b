"""Shut a driver's local Ray instance down with the driver, even when the driver is killed with SIGKILL.

A driver that calls ``ray.init()`` starts a private Ray instance (GCS server, raylet, dashboard and runtime-env
agents, workers). On Linux Ray ties the GCS server and the raylet to the driver (``PR_SET_PDEATHSIG``) and the
workers exit about 2 s after their raylet, but the raylet's agents outlive a SIGKILLed driver (measured: still
running after 60 s with Ray 2.60; they block reporting the raylet's death to the dead GCS). A SIGKILL leaves the
driver no chance to clean up, so a separate watchdog process does it:

* :func:`start_reaper` (called by the driver before ``ray.init``) runs this file as a script (standard library
  only) in its own session, connected to the driver by a pipe on its stdin;
* the reaper records, every ``interval`` seconds, the driver's descendant processes that belong to Ray (the
  command line names the Ray package directory or starts with ``ray::``), each with its start time;
* when the pipe closes without the word ``done`` (the driver died: the kernel closes its end), it SIGKILLs every
  recorded process that is still the same process (same start time, so a reused pid is never hit) and exits;
  :meth:`Reaper.release` (the driver finished normally and shut Ray down itself) sends ``done`` and it exits.

Processes are found through ``/proc``; elsewhere :func:`start_reaper` returns ``None`` (nothing is watched).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import IO

__all__ = ["Reaper", "start_reaper", "ray_descendants"]

DONE = "done"


def _stat(pid: int) -> tuple[int, int] | None:
    """``(ppid, start time in clock ticks)`` of a live (non-zombie) process, or ``None``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
        return None
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[1]), int(fields[19])  # fields[0] is the state; ppid is field 4, starttime field 22 of stat


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(c) for c in fh.read().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return out


def ray_descendants(root: int, ray_dir: str) -> dict[int, int]:
    """``{pid: start time}`` of the descendants of ``root`` that are Ray processes."""
    found: dict[int, int] = {}
    stack = _children(root)
    while stack:
        pid = stack.pop()
        st = _stat(pid)
        if st is None or pid == os.getpid():  # the reaper is the driver's child too; never record itself
            continue
        cmd = _cmdline(pid)
        if cmd.startswith("ray::") or ray_dir in cmd:
            found[pid] = st[1]
        stack.extend(_children(pid))
    return found


def _kill_recorded(recorded: dict[int, int]) -> None:
    for pid, start in recorded.items():
        st = _stat(pid)
        if st is not None and st[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _main(driver: int, ray_dir: str, interval: float, stdin: IO[str]) -> int:
    recorded: dict[int, int] = {}
    lock = threading.Lock()
    released = threading.Event()
    closed = threading.Event()

    def read() -> None:
        for line in stdin:
            if line.strip() == DONE:
                released.set()
                break
        closed.set()

    threading.Thread(target=read, name="gradlab-reaper-pipe", daemon=True).start()
    driver_start = (_stat(driver) or (0, -1))[1]
    while not closed.wait(interval):
        st = _stat(driver)
        if st is None or st[1] != driver_start:  # the pipe closes too, but do not wait for the next read
            break
        snapshot = ray_descendants(driver, ray_dir)
        with lock:
            recorded.update(snapshot)
    if not released.is_set():
        recorded.update(ray_descendants(driver, ray_dir))  # the driver may still be exiting
        _kill_recorded(recorded)
    return 0


class Reaper:
    """Handle of a running reaper process (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def release(self) -> None:
        """The driver shut its Ray instance down itself: stop the reaper without killing anything."""
        if self.proc.poll() is None and self.proc.stdin is not None:
            try:
                self.proc.stdin.write(DONE + "\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_reaper(interval: float = 0.25) -> Reaper | None:
    """Start the reaper of this (driver) process's local Ray instance; ``None`` where ``/proc`` is missing."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc/self/task"):
        return None
    import ray

    ray_dir = os.path.dirname(os.path.abspath(ray.__file__))
    # run this file as a script: it needs the standard library only (no gradlab, torch or ray import); -I keeps
    # the script's directory off sys.path (gradlab/claims/types.py would shadow the standard library's types)
    proc = subprocess.Popen(
        [sys.executable, "-I", os.path.abspath(__file__), str(os.getpid()), ray_dir, str(float(interval))],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True, close_fds=True,
    )
    return Reaper(proc)


if __name__ == "__main__":  # python reaper.py DRIVER_PID RAY_DIR INTERVAL
    sys.exit(_main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.stdin))
