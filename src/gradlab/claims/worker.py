"""Code that runs inside a worker (a local process or a Ray task): run one claim, capture everything.

Nothing here writes the store; the result travels back to the driver as a plain dict (PNG figures as bytes).
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable


def _limit_threads(threads: int) -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    os.environ.setdefault("MPLBACKEND", "Agg")
    import torch

    torch.set_num_threads(threads)


def execute_claim(
    claim_id: str, scale: str, seed: int, threads: int = 1,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Run one claim and return ``{status, metrics, criterion, notes, pngs, traceback, started_at, ...}``.

    ``status`` is ``passed``/``failed``/``inconclusive`` from the Evidence's verdict, or ``error`` when the claim raised or returned
    something invalid. Never raises for a claim's own failure.
    """
    started = time.time()
    result: dict[str, Any] = {"claim_id": claim_id, "scale": scale, "seed": seed, "metrics": {}, "criterion": "",
                              "notes": "", "pngs": {}, "traceback": "", "started_at": started,
                              "preconditions": {}, "headline": [], "environment": {}}

    def body() -> None:
        _limit_threads(max(1, int(threads)))
        from gradlab.claims.environment import run_environment
        from gradlab.claims.registry import find_claim
        from gradlab.claims.types import ClaimRun, Evidence
        from gradlab.core.seeding import seed_everything

        spec = find_claim(claim_id)
        result["environment"] = run_environment(max(1, int(threads)))
        seed_everything(seed)
        with tempfile.TemporaryDirectory(prefix="gradlab-claim-") as scratch:
            run = ClaimRun(seed=seed, scale=scale, scratch=Path(scratch),
                           progress_fn=progress or (lambda f, m="": None))
            evidence = spec.fn(run)
            if not isinstance(evidence, Evidence):
                raise TypeError(f"claim {claim_id} returned {type(evidence).__name__}, expected Evidence")
            result.update(metrics=evidence.metrics, criterion=evidence.criterion, notes=evidence.notes,
                          pngs=evidence.figure_pngs(), status=evidence.verdict,
                          preconditions=evidence.preconditions_json(),
                          headline=[h.to_json() for h in evidence.headline])

    return _recorded(result, body, started)


def _recorded(result: dict[str, Any], body: Callable[[], None], started: float) -> dict[str, Any]:
    """Run ``body`` (which fills ``result``); any failure but Ctrl-C becomes ``status="error"`` with its traceback;
    adds ``finished_at`` and ``duration_s``."""
    try:
        body()
    except BaseException as exc:  # noqa: BLE001 - a claim's or setup's failure of any kind is recorded, not raised
        if isinstance(exc, KeyboardInterrupt):
            raise
        result.update(status="error", traceback=traceback.format_exc())
    result["finished_at"] = time.time()
    result["duration_s"] = result["finished_at"] - started
    return result


def execute_setup(
    module: str, attr: str, scale: str, seed: int, threads: int = 1,
    progress: Callable[[float, str], None] | None = None,
) -> dict[str, Any]:
    """Run one :class:`~gradlab.claims.types.Setup` (found as ``module.attr``) and return
    ``{status: "done" | "error", traceback, started_at, finished_at, duration_s}``; never raises for its failure."""
    started = time.time()
    result: dict[str, Any] = {"status": "done", "traceback": "", "started_at": started}

    def body() -> None:
        _limit_threads(max(1, int(threads)))
        import importlib

        from gradlab.claims.types import ClaimRun, Setup
        from gradlab.core.seeding import seed_everything

        obj = getattr(importlib.import_module(module), attr, None)
        if not isinstance(obj, Setup):
            raise TypeError(f"{module}.{attr} is {type(obj).__name__}, expected a Setup made with @setup")
        seed_everything(seed)
        with tempfile.TemporaryDirectory(prefix="gradlab-setup-") as scratch:
            obj.fn(ClaimRun(seed=seed, scale=scale, scratch=Path(scratch),
                            progress_fn=progress or (lambda f, m="": None)))

    return _recorded(result, body, started)  # a failed setup is recorded; the claims needing it still run


def die_with_parent(parent_pid: int | None = None) -> None:
    """Make this process end as soon as its parent does, so a killed driver leaves no orphan computing on.

    On Linux the kernel does it (``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere, and as a second line of
    defence, a daemon thread polls the parent's pid every half second and exits the process when it changes.
    """
    import signal
    import sys
    import threading

    parent = os.getppid() if parent_pid is None else parent_pid
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):  # pragma: no cover - no libc: the watcher thread still works
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="gradlab-parent-watch", daemon=True).start()


def worker_main(conn: Any, claim_id: str, scale: str, seed: int, threads: int, parent_pid: int | None = None,
                setup: tuple[str, str] | None = None) -> None:
    """Entry point of a local worker process: stream progress, then the result, through ``conn``.

    Runs the claim ``claim_id``, or, when ``setup`` is ``(module, attr)``, that setup (``claim_id`` unused)."""
    die_with_parent(parent_pid)
    last = [0.0]

    def progress(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        if now - last[0] >= 0.2 or fraction >= 1.0:
            last[0] = now
            conn.send(("progress", float(fraction), str(message)))

    if setup is None:
        result = execute_claim(claim_id, scale, seed, threads, progress)
    else:
        result = execute_setup(setup[0], setup[1], scale, seed, threads, progress)
    conn.send(("result", result))
    conn.close()
