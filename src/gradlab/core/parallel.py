"""Map a function over items sequentially, in local worker processes, or as Ray tasks.

Components that fan out independent evaluations (the update-rule program search, tuning sweeps) take a
``map_fn(fn, items) -> list``; :func:`make_map` builds one for each backend, so the same code runs on one
core, on all local cores, or on a Ray cluster. Each worker process runs torch with one thread (oversubscribed
cores are ~10x slower). ``fn`` must be a picklable module-level function.

The local backend reuses one process pool across calls (joblib's loky ``get_reusable_executor``): spawning a
fresh pool per call cost ~8.7 s on this machine's 2 cores, which a search that maps a generation at a time pays
at every generation. The pool is rebuilt only when the number of workers changes, and its workers exit after
five idle minutes or when this process dies.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator, Sequence

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], list]
MAP_BACKENDS = ("sequential", "local", "ray")


def _single_thread_worker() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)


def sequential_map(fn: Callable[[Any], Any], items: Iterable[Any]) -> list:
    """``list(map(fn, items))``: the reference every other backend must equal."""
    return [fn(item) for item in items]


def local_map(workers: int) -> MapFn:
    """A map over a reusable pool of ``workers`` processes (one torch thread each), shared across calls."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int; got {workers!r}")

    def map_fn(fn: Callable[[Any], Any], items: Iterable[Any]) -> list:
        items = list(items)
        if len(items) <= 1 or workers == 1:
            return sequential_map(fn, items)
        from joblib.externals.loky import get_reusable_executor

        pool = get_reusable_executor(max_workers=workers, timeout=300, initializer=_single_thread_worker,
                                     reuse=True)
        return list(pool.map(fn, items))

    return map_fn


def ray_init(address: str | None = None, num_cpus: int | None = None, env_vars: dict[str, str] | None = None) -> bool:
    """Start (or connect to) Ray once; return True when this call started it (so the caller shuts it down).

    With ``address`` the gradlab package is shipped to the cluster as a ``py_module``.
    """
    import ray

    if ray.is_initialized():
        return False
    runtime_env: dict[str, Any] = {"env_vars": {"OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", **(env_vars or {})}}
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
    if address:
        import gradlab

        runtime_env["py_modules"] = [os.path.dirname(gradlab.__file__)]
        kwargs["address"] = address
    elif num_cpus is not None:
        kwargs["num_cpus"] = num_cpus
    ray.init(**kwargs)
    return True


def _apply(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


def ray_map(address: str | None = None, workers: int | None = None) -> MapFn:
    """A map whose items run as Ray tasks (one CPU each) on a local Ray or the cluster at ``address``."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive int or None; got {workers!r}")

    def map_fn(fn: Callable[[Any], Any], items: Iterable[Any]) -> list:
        import ray

        ray_init(address, workers)
        remote = ray.remote(num_cpus=1, max_retries=0)(_apply)
        return ray.get([remote.remote(fn, item) for item in items])

    return map_fn


def make_map(backend: str = "sequential", workers: int = 1, address: str | None = None) -> MapFn:
    """The map function for ``backend`` in ``MAP_BACKENDS``."""
    if backend not in MAP_BACKENDS:
        raise ValueError(f"backend must be one of {MAP_BACKENDS}; got {backend!r}")
    if backend == "sequential":
        return sequential_map
    if backend == "local":
        return local_map(workers)
    return ray_map(address, workers)


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Split ``items`` into consecutive chunks of at most ``size`` (for internal batching)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int; got {size!r}")
    return [items[i:i + size] for i in range(0, len(items), size)]


UnorderedMapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[tuple[int, Any]]]


class _WithThreads:
    """``fn`` run with ``threads`` torch/OpenMP threads, restored afterwards (picklable, for worker processes)."""

    def __init__(self, fn: Callable[[Any], Any], threads: int) -> None:
        self.fn, self.threads = fn, threads

    def __call__(self, item: Any) -> Any:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.fn(item)
        finally:
            torch.set_num_threads(before)


def make_unordered_map(backend: str = "sequential", workers: int = 1, address: str | None = None,
                       cpus_per_item: int = 1) -> UnorderedMapFn:
    """Like :func:`make_map`, but the map yields ``(index, result)`` pairs as the items finish (in any order), so a
    caller can store each result at once. An exception of ``fn`` is raised from the iterator when its item's turn
    comes; the local backend uses the same reusable pool as :func:`local_map`.

    ``cpus_per_item``: torch threads of each item. ``"local"`` runs ``workers`` processes at once, each item with
    that many threads (``workers * cpus_per_item`` cores busy); ``"ray"`` requests that many CPUs per task (a local
    Ray gets ``workers`` CPUs, so ``workers // cpus_per_item`` tasks run at once; more than ``workers`` would never
    be scheduled and is refused); ``"sequential"`` runs each item with that many threads in this process.
    """
    if backend not in MAP_BACKENDS:
        raise ValueError(f"backend must be one of {MAP_BACKENDS}; got {backend!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int; got {workers!r}")
    if isinstance(cpus_per_item, bool) or not isinstance(cpus_per_item, int) or cpus_per_item < 1:
        raise ValueError(f"cpus_per_item must be a positive int; got {cpus_per_item!r}")
    if backend == "ray" and not address and cpus_per_item > workers:
        raise ValueError(f"cpus_per_item ({cpus_per_item}) exceeds the {workers} CPU(s) of the local Ray instance "
                         "(workers): no task could be scheduled")

    def sequential(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        fn = _WithThreads(fn, cpus_per_item) if cpus_per_item != 1 else fn
        for i, item in enumerate(items):
            yield i, fn(item)

    def local(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        items = list(items)
        if len(items) <= 1 or workers == 1:
            yield from sequential(fn, items)
            return
        from concurrent.futures import as_completed

        from joblib.externals.loky import get_reusable_executor

        pool = get_reusable_executor(max_workers=workers, timeout=300, initializer=_single_thread_worker,
                                     reuse=True)
        run = _WithThreads(fn, cpus_per_item) if cpus_per_item != 1 else fn
        futures = {pool.submit(run, item): i for i, item in enumerate(items)}
        try:
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        finally:
            for fut in futures:
                fut.cancel()

    def ray(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        import ray as _ray

        ray_init(address, None if address else workers)
        remote = _ray.remote(num_cpus=cpus_per_item, max_retries=0)(_apply)
        run = _WithThreads(fn, cpus_per_item) if cpus_per_item != 1 else fn
        refs = {remote.remote(run, item): i for i, item in enumerate(items)}
        pending = list(refs)
        try:
            while pending:
                done, pending = _ray.wait(pending, num_returns=1)
                yield refs[done[0]], _ray.get(done[0])
        finally:
            for ref in pending:
                _ray.cancel(ref)

    return {"sequential": sequential, "local": local, "ray": ray}[backend]
