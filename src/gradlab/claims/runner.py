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
from dataclasses import dataclass
from multiprocessing.connection import wait as mp_wait
from typing import Any, Callable, Iterable

from gradlab.claims.fingerprint import paper_fingerprint
from gradlab.claims.registry import Registry
from gradlab.claims.store import ResultRow, ResultStore
from gradlab.claims.types import ClaimSpec, Setup, check_scale, setup_closure
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
    def id(self) -> str:
        return self.spec.id

    @property
    def timeout(self) -> float:
        return self.spec.timeout(self.scale)


@dataclass(frozen=True)
class SetupTask:
    """One shared :class:`~gradlab.claims.types.Setup` to run at one scale and seed before the claims needing it."""

    setup: Setup
    scale: str
    seed: int

    @property
    def id(self) -> str:
        return f"setup:{self.setup.name}"

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.setup.name, self.scale, self.seed)

    @property
    def timeout(self) -> float:
        return self.setup.timeout(self.scale)


@dataclass
class Event:
    """What the runner tells its observer: ``skip``, ``start``, ``progress`` or ``done`` for a claim's
    :class:`Task`; ``setup_start``, ``setup_progress`` and ``setup_done`` (message: ``done``/``error``/``timeout``)
    for a :class:`SetupTask`."""

    kind: str
    task: "Task | SetupTask"
    fraction: float = 0.0
    message: str = ""
    row: ResultRow | None = None
    seconds: float | None = None  # setup_done: how long the setup ran


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
        environment=result.get("environment", {}),
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
        for task, row in runner(_Schedule(todo), store, workers, notify, **kwargs):
            rows[task.spec.id] = row
    return [rows[t.spec.id] for t in tasks if t.spec.id in rows]


class _Schedule:
    """The order jobs start in: every needed setup first (each once per scale and seed, after its own needs),
    then the claims in the given order; a job starts only when all the setups it needs have finished (whether
    they succeeded or not: a claim whose setup failed builds what it needs itself and reports its own error)."""

    def __init__(self, todo: list[Task]) -> None:
        setups: dict[tuple[str, str, int], SetupTask] = {}
        for task in todo:
            for s in setup_closure(task.spec.needs):
                job = SetupTask(s, task.scale, task.seed)
                if job.key in setups and setups[job.key].setup is not s:
                    raise ValueError(f"two different setups are named {s.name!r} ({setups[job.key].setup.module}, "
                                     f"{s.module})")
                setups.setdefault(job.key, job)
        self.pending: list[Task | SetupTask] = [*setups.values(), *todo]
        self.finished: set[tuple[str, str, int]] = set()

    def __bool__(self) -> bool:
        return bool(self.pending)

    def _needs(self, job: "Task | SetupTask") -> tuple[Setup, ...]:
        return job.setup.needs if isinstance(job, SetupTask) else job.spec.needs

    def pop_ready(self) -> "Task | SetupTask | None":
        """The first pending job whose setups have all finished (removed from pending), else None."""
        for i, job in enumerate(self.pending):
            if all((s.name, job.scale, job.seed) in self.finished for s in self._needs(job)):
                return self.pending.pop(i)
        return None

    def finish(self, job: SetupTask) -> None:
        self.finished.add(job.key)

    def check_progress(self, running: int) -> None:
        if self.pending and not running:  # cannot happen for setups built by setup_closure: a bug if it does
            raise RuntimeError(f"no runnable job among {[j.id for j in self.pending]}")


def _setup_done(job: SetupTask, result: dict[str, Any], schedule: _Schedule, notify: Observer) -> None:
    schedule.finish(job)
    if result["status"] == "done":
        log.info("%s (%s, seed %d): done in %.1f s", job.id, job.scale, job.seed, result["duration_s"])
    else:
        log.warning("%s (%s, seed %d): %s after %.1f s; the claims needing it build it themselves\n%s", job.id,
                    job.scale, job.seed, result["status"], result["duration_s"], result.get("traceback", ""))
    notify(Event("setup_done", job, 1.0, result["status"], seconds=float(result["duration_s"])))


def _longest_first(todo: list[Task], store: ResultStore) -> list[Task]:
    """Start the claims that took longest last time first, so that one long claim does not run alone at the end
    while the other workers idle. Claims without a stored duration (every claim of a fresh run) go first, the ones
    with the longest declared timeout at their scale first (a timeout is the claim author's bound on its run
    time: on the quick run of 2026-12-03, whose store was empty, registry order left one worker idle for 187 s
    at the end while ``yolov9/pgi_gain`` ran; replayed with the measured durations, timeout order packs the two
    workers to within 8 s of the ideal). Ties keep the given order."""
    last: dict[str, float] = {}
    for row in store.rows():
        if row.scale in {t.scale for t in todo}:
            last[row.claim_id] = row.duration_s

    def rank(task: Task) -> tuple[int, float]:
        known = last.get(task.spec.id)
        return (0, -task.timeout) if known is None else (1, -known)

    return sorted(todo, key=rank)


def _threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _finish(task: Task, result: dict[str, Any], store: ResultStore, backend: str, notify: Observer) -> ResultRow:
    row = _row_from_result(task, result, store, backend)
    store.put(row)
    log.info("%s (%s, seed %d): %s in %.1f s", task.spec.id, task.scale, task.seed, row.status, row.duration_s)
    notify(Event("done", task, 1.0, row.status, row))
    return row


def _run_local(schedule: _Schedule, store: ResultStore, workers: int, notify: Observer):
    """Each claim (and setup) in its own spawned process; a process past its deadline is killed and recorded as
    timeout."""
    from gradlab.claims.worker import worker_main

    ctx = mp.get_context("spawn")
    threads = _threads_per_worker(workers)
    running: dict[Any, tuple[Any, Any, Any, float, float]] = {}  # conn -> (job, proc, conn, started, deadline)
    try:
        while schedule or running:
            while len(running) < workers and (task := schedule.pop_ready()) is not None:
                parent, child = ctx.Pipe(duplex=False)
                is_setup = isinstance(task, SetupTask)
                setup_ref = (task.setup.module, task.setup.attr) if is_setup else None
                proc = ctx.Process(target=worker_main, args=(child, task.id, task.scale, task.seed, threads,
                                                                   os.getpid(), setup_ref),
                                   name=f"gradlab-{task.id}", daemon=True)
                proc.start()
                child.close()
                started = time.time()
                running[parent] = (task, proc, parent, started, time.monotonic() + task.timeout)
                log.info("%s (%s, seed %d): started in process %d, limit %.0f s", task.id, task.scale, task.seed,
                         proc.pid, task.timeout)
                notify(Event("setup_start" if is_setup else "start", task))
            schedule.check_progress(len(running))
            mp_wait(list(running) + [entry[1].sentinel for entry in running.values()], timeout=0.5)
            for conn in list(running):
                task, proc, _, started, deadline = running[conn]
                result = None
                try:
                    while conn.poll():
                        msg = conn.recv()
                        if msg[0] == "progress":
                            kind = "setup_progress" if isinstance(task, SetupTask) else "progress"
                            notify(Event(kind, task, msg[1], msg[2]))
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
                    result = _failure(task, "timeout", f"{'setup' if isinstance(task, SetupTask) else 'claim'} "
                                      f"exceeded its {task.timeout:.0f} s limit at scale {task.scale!r} and was killed",
                                      started)
                if result is not None:
                    del running[conn]
                    conn.close()
                    proc.join(timeout=10)
                    if proc.is_alive():
                        proc.kill()
                    if isinstance(task, SetupTask):
                        _setup_done(task, result, schedule, notify)
                    else:
                        yield task, _finish(task, result, store, "local", notify)
    finally:
        for task, proc, conn, _, _ in running.values():
            proc.kill()
            proc.join()


def _run_ray(schedule: _Schedule, store: ResultStore, workers: int, notify: Observer, address: str | None = None):
    """Claims as Ray tasks (local ``ray.init`` or an existing cluster); the driver alone writes the store."""
    try:
        import ray
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise RuntimeError("--backend ray needs Ray: pip install 'gradlab[distributed]'") from err
    from gradlab.claims.reaper import start_reaper
    from gradlab.claims.worker import execute_claim, execute_setup

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
    remote_setup = ray.remote(num_cpus=1, max_retries=0)(execute_setup)
    running: dict[Any, tuple[Any, float, float]] = {}
    try:
        while schedule or running:
            while len(running) < workers and (task := schedule.pop_ready()) is not None:
                if isinstance(task, SetupTask):
                    ref = remote_setup.remote(task.setup.module, task.setup.attr, task.scale, task.seed, threads)
                    notify(Event("setup_start", task))
                else:
                    ref = remote.remote(task.spec.id, task.scale, task.seed, threads)
                    notify(Event("start", task))
                running[ref] = (task, time.time(), time.monotonic() + task.timeout)
            schedule.check_progress(len(running))
            ready, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            finished = []
            for ref in ready:
                task, started, _ = running.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # worker crash, cancellation, serialization
                    result = _failure(task, "error", f"Ray task failed: {type(exc).__name__}: {exc}", started)
                finished.append((task, result))
            for ref, (task, started, deadline) in list(running.items()):
                if time.monotonic() > deadline:
                    ray.cancel(ref, force=True)
                    del running[ref]
                    finished.append((task, _failure(task, "timeout", f"{task.id} exceeded its {task.timeout:.0f} s "
                                                    f"limit at scale {task.scale!r}; the Ray task was cancelled",
                                                    started)))
            for task, result in finished:
                if isinstance(task, SetupTask):
                    _setup_done(task, result, schedule, notify)
                else:
                    yield task, _finish(task, result, store, "ray", notify)
    finally:
        for ref in running:
            ray.cancel(ref, force=True)
        if started_ray:
            ray.shutdown()
        if reaper is not None:
            reaper.release()
