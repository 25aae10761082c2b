"""Regularized evolution over update programs with funnel selection (Lion's search, arXiv 2302.06675, Sec. 2).

Regularized evolution (Real et al., 2019): keep a population (a queue) of ``population_size`` programs; each
cycle samples ``tournament_size`` of them, mutates the fittest (:func:`~.mutation.mutate_valid`: invalid programs
are pruned before any training), evaluates the child, appends it and drops the *oldest* member. The search is
warm-started from a seed program (SGD with momentum here, AdamW in the paper).

Funnel selection: tasks of growing size. A candidate is scored on task 0; only when it beats the seed program
there (loss ratio below ``funnel_threshold``) is it scored on task 1, and so on. Fitness is
``(number of consecutive tasks passed, -mean loss ratio over the tasks it was scored on)``, compared
lexicographically, so a program that generalises to larger tasks outranks one that only wins the smallest.

Duplicates are skipped by hashing: a child whose behavioural fingerprint (:func:`~.simplify.fingerprint`) was
seen before reuses the stored fitness. Evaluations go through a pluggable executor: ``None`` (sequential), a
``concurrent.futures.Executor`` (anything with ``.map``) or a function ``map_fn(fn, items) -> iterable`` (e.g. the
claim runner's local or Ray backend); each cycle evaluates ``batch_size`` children in one ``map`` call.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from gradlab.core.validation import check_int, check_positive, check_type
from gradlab.optim.search.dsl import Program, check_program, sgd_momentum_program
from gradlab.optim.search.mutation import mutate_valid
from gradlab.optim.search.simplify import fingerprint, simplify
from gradlab.optim.search.tasks import ProxyTask, evaluate_on_task

__all__ = ["Candidate", "SearchResult", "evaluate_funnel", "regularized_evolution", "resolve_map"]

MapFn = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


@dataclass(frozen=True)
class Candidate:
    """A scored program: losses and loss ratios (to the seed program) on the funnel tasks it reached."""

    program: Program
    key: str
    losses: tuple[float, ...]
    ratios: tuple[float, ...]
    lrs: tuple[float, ...]
    passed: int

    @property
    def fitness(self) -> tuple[int, float]:
        mean = sum(self.ratios) / len(self.ratios) if self.ratios else math.inf
        return (self.passed, -mean if math.isfinite(mean) else -math.inf)


@dataclass
class SearchResult:
    """What :func:`regularized_evolution` returns."""

    best: Candidate
    seed: Candidate
    history: list[tuple[int, float]] = field(default_factory=list)  # (evaluations, best mean ratio so far)
    n_proposed: int = 0
    n_evaluated: int = 0
    n_duplicates: int = 0

    @property
    def best_program(self) -> Program:
        """The best program with dead statements removed."""
        return simplify(self.best.program)


def evaluate_funnel(job: tuple[Program, tuple[ProxyTask, ...], tuple[float, ...], float]) -> tuple:
    """Score one program on the funnel (picklable, module level, so any executor can run it).

    ``job = (program, tasks, baseline_losses, threshold)``; returns ``(losses, lrs, passed)``. With no baseline
    (empty tuple) every task is run and ``passed`` is 0.
    """
    program, tasks, baselines, threshold = job
    losses, lrs, passed = [], [], 0
    for i, task in enumerate(tasks):
        r = evaluate_on_task(program, task)
        losses.append(r.loss)
        lrs.append(r.lr)
        if not baselines:
            continue
        if r.loss < threshold * baselines[i]:
            passed += 1
        else:
            break
    return tuple(losses), tuple(lrs), passed


def resolve_map(executor: Any) -> MapFn:
    """``None`` -> builtin ``map``; an object with ``.map`` -> its bound ``map``; a callable -> itself."""
    if executor is None:
        return lambda fn, items: list(map(fn, items))
    if hasattr(executor, "map") and callable(executor.map):
        return lambda fn, items: list(executor.map(fn, items))
    if callable(executor):
        return executor
    raise TypeError("executor must be None, a concurrent.futures-style executor (with .map) or map_fn(fn, items)")


def _candidate(program: Program, key: str, out: tuple, baselines: Sequence[float]) -> Candidate:
    losses, lrs, passed = out
    ratios = tuple(l / b if b > 0 else math.inf for l, b in zip(losses, baselines))
    return Candidate(program, key, tuple(losses), ratios, tuple(lrs), passed)


def regularized_evolution(
    tasks: Sequence[ProxyTask],
    *,
    seed_program: Program | None = None,
    population_size: int = 16,
    tournament_size: int = 4,
    max_evaluations: int = 200,
    batch_size: int = 8,
    funnel_threshold: float = 1.0,
    max_length: int = 8,
    rng: np.random.Generator | int = 0,
    executor: Any = None,
    progress: Callable[[float, str], None] | None = None,
) -> SearchResult:
    """Search for an update program that beats ``seed_program`` (default SGD-momentum) on the funnel ``tasks``.

    Args:
        tasks: proxy tasks of growing size (the funnel), at least one.
        seed_program: the warm start; the population starts as copies of it.
        population_size, tournament_size: regularized-evolution parameters (``tournament_size <= population_size``).
        max_evaluations: stop after this many proposed children (duplicates included).
        batch_size: children proposed per cycle and evaluated in one ``map`` call.
        funnel_threshold: a task is passed when ``loss < funnel_threshold * seed_loss``.
        max_length: longest program allowed.
        rng: a numpy Generator or an int seed.
        executor: see the module docstring.
        progress: optional ``(fraction, message)`` callback.
    """
    tasks = tuple(tasks)
    if not tasks or not all(isinstance(t, ProxyTask) for t in tasks):
        raise TypeError("tasks must be a non-empty sequence of ProxyTask")
    seed_program = seed_program if seed_program is not None else sgd_momentum_program()
    check_program(seed_program, max_length)
    check_int("population_size", population_size, minimum=2)
    check_int("tournament_size", tournament_size, minimum=1, maximum=population_size)
    check_int("max_evaluations", max_evaluations, minimum=1)
    check_int("batch_size", batch_size, minimum=1)
    check_positive("funnel_threshold", funnel_threshold)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        rng = np.random.default_rng(int(rng))
    check_type("rng", rng, np.random.Generator)
    map_fn = resolve_map(executor)

    seed_key = fingerprint(seed_program)
    base_losses, base_lrs, _ = map_fn(evaluate_funnel, [(seed_program, tasks, (), funnel_threshold)])[0]
    if not all(math.isfinite(b) for b in base_losses):
        raise RuntimeError("the seed program diverges at every learning rate of a task; widen the task's lrs")
    seed = Candidate(seed_program, seed_key, base_losses, tuple(1.0 for _ in tasks), base_lrs, 0)
    cache: dict[str, Candidate] = {seed_key: seed}
    population: collections.deque[Candidate] = collections.deque([seed] * population_size)
    best = seed
    result = SearchResult(best=seed, seed=seed)

    while result.n_proposed < max_evaluations:
        n = min(batch_size, max_evaluations - result.n_proposed)
        children: list[tuple[Program, str]] = []
        for _ in range(n):
            picks = rng.choice(len(population), size=tournament_size, replace=False)
            parent = max((population[int(i)] for i in picks), key=lambda c: c.fitness)
            children.append(mutate_valid(parent.program, rng, max_length=max_length))
        result.n_proposed += n
        fresh = {key: prog for prog, key in children if key not in cache}
        result.n_duplicates += n - len(fresh)
        jobs = [(simplify(p), tasks, base_losses, funnel_threshold) for p in fresh.values()]
        for (key, prog), out in zip(fresh.items(), map_fn(evaluate_funnel, jobs)):
            cache[key] = _candidate(prog, key, out, base_losses)
        result.n_evaluated += len(fresh)
        for prog, key in children:
            scored = cache[key]
            child = Candidate(prog, key, scored.losses, scored.ratios, scored.lrs, scored.passed)
            population.append(child)
            population.popleft()
            if child.fitness > best.fitness:
                best = child
        result.best = best
        result.history.append((result.n_proposed, -best.fitness[1]))
        if progress is not None:
            progress(result.n_proposed / max_evaluations,
                     f"search: {result.n_proposed}/{max_evaluations}, best passes {best.passed}/{len(tasks)}")
    return result
