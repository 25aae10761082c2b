"""The runner: executes claims in worker processes (local) or as Ray tasks, with a wall-clock limit each.

Only the driver (this module) writes the store. Every result is stored the moment it arrives, so an
interrupted run loses nothing that finished; claims already in the store for the current code fingerprint
are skipped unless ``force=True``.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as mp_wait
from typing import Any, Callable, Iterable

from gradlab.claims.fingerprint import paper_fingerprint
from gradlab.claims.registry import Registry
from gradlab.claims.store import ResultRow, ResultStore
from gradlab.claims.types import ClaimSpec, check_scale
from gradlab.core.parallel import ray_init

BACKENDS = ("local", "ray")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One claim to run at one scale and seed under one code fingerprint."""

    spec: ClaimSpec
    scale: str
    seed: int
    fingerprint: str

    @property
    def timeout(self) -> float:
        return self.spec.timeout(self.scale)


@dataclass
class Event:
    """What the runner tells its observer: ``skip``, ``start``, ``progress`` or ``done``."""

    kind: str
    task: Task
    fraction: float = 0.0
    message: str = ""
    row: ResultRow | None = None


Observer = Callable[[Event], None]


def plan(registry: Registry, keys: list[str], scale: str, seed: int) -> list[Task]:
    """The tasks for the selected papers (papers without claims contribute none)."""
    check_scale(scale)
    tasks = []
    for key in keys:
        entry = registry.papers[key]
        if not entry.claims:
            continue
        fp = paper_fingerprint(entry.paper, entry.module)
        tasks.extend(Task(spec, scale, seed, fp) for spec in entry.claims)
    return tasks


def _row_from_result(task: Task, result: dict[str, Any], store: ResultStore, backend: str) -> ResultRow:
    figures = store.save_figures(task.spec.id, task.scale, task.seed, task.fingerprint, result.get("pngs", {}))
    return ResultRow(
        claim_id=task.spec.id, paper=task.spec.paper, scale=task.scale, seed=task.seed,
        fingerprint=task.fingerprint, status=result["status"], metrics=result.get("metrics", {}),
        criterion=result.get("criterion", ""), notes=result.get("notes", ""), figures=figures,
        traceback=result.get("traceback", ""), started_at=result["started_at"],
        finished_at=result["finished_at"], duration_s=result["duration_s"], backend=backend,
        preconditions=result.get("preconditions", {}), headline=result.get("headline", []),
    )


def _failure(task: Task, status: str, message: str, started: float) -> dict[str, Any]:
    end = time.time()
    return {"status": status, "traceback": message, "started_at": started, "finished_at": end,
            "duration_s": end - started, "metrics": {}, "pngs": {}}


def run_tasks(
    tasks: Iterable[Task],
    store: ResultStore,
    backend: str = "local",
    workers: int = 1,
    force: bool = False,
    address: str | None = None,
    observer: Observer | None = None,
) -> list[ResultRow]:
    """Run ``tasks`` (skipping stored ones unless ``force``) and return the result row of every task."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int; got {workers!r}")
    notify = observer or (lambda event: None)
    rows: dict[str, ResultRow] = {}
    todo: list[Task] = []
    for task in tasks:
        existing = None if force else store.get(task.spec.id, task.scale, task.seed, task.fingerprint)
        if existing is not None:
            rows[task.spec.id] = existing
            log.debug("%s: stored %s result for fingerprint %s reused", task.spec.id, existing.status, task.fingerprint)
            notify(Event("skip", task, 1.0, existing.status, existing))
        else:
            todo.append(task)
    if todo and workers > 1:
        todo = _longest_first(todo, store)
    if todo:
        runner = _run_local if backend == "local" else _run_ray
        kwargs = {"address": address} if backend == "ray" else {}
        for task, row in runner(todo, store, workers, notify, **kwargs):
            rows[task.spec.id] = row
    return [rows[t.spec.id] for t in tasks if t.spec.id in rows]


def _longest_first(todo: list[Task], store: ResultStore) -> list[Task]:
    """Start the claims that took longest last time first (unknown durations first), so that one long claim
    does not run alone at the end while the other workers idle."""
    last: dict[str, float] = {}
    for row in store.rows():
        if row.scale in {t.scale for t in todo}:
            last[row.claim_id] = row.duration_s
    return sorted(todo, key=lambda t: -last.get(t.spec.id, float("inf")))


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _finish(task: Task, result: dict[str, Any], store: ResultStore, backend: str, notify: Observer) -> ResultRow:
    row = _row_from_result(task, result, store, backend)
    store.put(row)
    log.info("%s (%s, seed %d): %s in %.1f s", task.spec.id, task.scale, task.seed, row.status, row.duration_s)
    notify(Event("done", task, 1.0, row.status, row))
    return row


def _run_local(todo: list[Task], store: ResultStore, workers: int, notify: Observer):
    """Each claim in its own spawned process; a process past its deadline is killed and recorded as timeout."""
    from gradlab.claims.worker import worker_main

    ctx = mp.get_context("spawn")
    threads = _threads_per_worker(workers)
    pending = deque(todo)
    running: dict[Any, tuple[Task, Any, Any, float, float]] = {}  # conn -> (task, proc, conn, started, deadline)
    try:
        while pending or running:
            while pending and len(running) < workers:
                task = pending.popleft()
                parent, child = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=worker_main, args=(child, task.spec.id, task.scale, task.seed, threads,
                                                                   os.getpid()),
                                   name=f"gradlab-{task.spec.id}", daemon=True)
                proc.start()
                child.close()
                started = time.time()
                running[parent] = (task, proc, parent, started, time.monotonic() + task.timeout)
                log.info("%s (%s, seed %d): started in process %d, limit %.0f s", task.spec.id, task.scale, task.seed,
                         proc.pid, task.timeout)
                notify(Event("start", task))
            mp_wait(list(running) + [entry[1].sentinel for entry in running.values()], timeout=0.5)
            for conn in list(running):
                task, proc, _, started, deadline = running[conn]
                result = None
                try:
                    while conn.poll():
                        msg = conn.recv()
                        if msg[0] == "progress":
                            notify(Event("progress", task, msg[1], msg[2]))
                        elif msg[0] == "result":
                            result = msg[1]
                except (EOFError, OSError):
                    pass
                if result is None and not proc.is_alive():
                    proc.join()
                    result = _failure(task, "error", f"worker process died (exit code {proc.exitcode}) without a result",
                                      started)
                elif result is None and time.monotonic() > deadline:
                    proc.kill()
                    proc.join()
                    result = _failure(task, "timeout", f"claim exceeded its {task.timeout:.0f} s limit at scale "
                                      f"{task.scale!r} and was killed", started)
                if result is not None:
                    del running[conn]
                    conn.close()
                    proc.join(timeout=10)
                    if proc.is_alive():
                        proc.kill()
                    yield task, _finish(task, result, store, "local", notify)
    finally:
        for task, proc, conn, _, _ in running.values():
            proc.kill()
            proc.join()


def _run_ray(todo: list[Task], store: ResultStore, workers: int, notify: Observer, address: str | None = None):
    """Claims as Ray tasks (local ``ray.init`` or an existing cluster); the driver alone writes the store."""
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError("--backend ray needs Ray: pip install 'gradlab[distributed]'") from err
    from gradlab.claims.reaper import start_reaper
    from gradlab.claims.worker import execute_claim

    env = {k: os.environ[k] for k in ("GRADLAB_EXTRA_PAPERS", "PYTHONPATH") if k in os.environ}
    threads = 1 if address else _threads_per_worker(workers)
    env["OMP_NUM_THREADS"] = str(threads)
    # a local instance this driver starts must not outlive it, even after a SIGKILL (see gradlab.claims.reaper)
    reaper = start_reaper() if not address and not ray.is_initialized() else None
    try:
        started_ray = ray_init(address, None if address else workers, env)
    except BaseException:
        if reaper is not None:
            reaper.release()
        raise
    if not started_ray and reaper is not None:
        reaper.release()
        reaper = None
    remote = ray.remote(num_cpus=1, max_retries=0)(execute_claim)
    pending = deque(todo)
    running: dict[Any, tuple[Task, float, float]] = {}
    try:
        while pending or running:
            while pending and len(running) < workers:
                task = pending.popleft()
                ref = remote.remote(task.spec.id, task.scale, task.seed, threads)
                running[ref] = (task, time.time(), time.monotonic() + task.timeout)
                notify(Event("start", task))
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in ready:
                task, started, _ = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # worker crash, cancellation, serialization
                    result = _failure(task, "error", f"Ray task failed: {type(exc).__name__}: {exc}", started)
                yield task, _finish(task, result, store, "ray", notify)
            for ref, (task, started, deadline) in list(running.items()):
                if time.monotonic() > deadline:
                    ray.cancel(ref, force=True)
                    del running[ref]
                    result = _failure(task, "timeout", f"claim exceeded its {task.timeout:.0f} s limit at scale "
                                      f"{task.scale!r}; the Ray task was cancelled", started)
                    yield task, _finish(task, result, store, "ray", notify)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started_ray:
            ray.shutdown()
        if reaper is not None:
            reaper.release()
