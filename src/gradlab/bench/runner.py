"""Run a benchmark: plan the trials of a ruleset, run them (resumably), aggregate and score.

Every finished trial is one transaction in the ``bench_trials`` table of an SQLite store
(:class:`gradlab.bench.store.BenchStore`; the CLI's default is the claims' ``.gradlab/results.sqlite``) keyed by
the fingerprint of its specification (workload, submission, study, trial, hyperparameters, seed, budget, clock,
target), so a stopped benchmark resumes without rerunning a finished trial, and a changed plan reruns the trials it
changed. Trials that raise are recorded in the result (``errors``) with an infinite time and are not stored, so
they rerun. :func:`run_record` / :func:`result_from_record` turn a finished benchmark into the JSON plan kept in
``bench_runs`` and back, so the pages are rebuilt from the store (``gradlab report``) without rerunning anything.

Seeds: the Halton scramble of a submission is seeded by ``(seed, submission name)``, so its points are the same on
every workload (one workload-agnostic search space); each trial's seed is derived from ``(seed, workload,
submission, study, trial)``, so trials are independent and reproducible.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gradlab.bench.scoring import benchmark_scores
from gradlab.bench.store import BenchStore
from gradlab.bench.submission import Submission, check_submission
from gradlab.bench.timing import CLOCKS, EvalFn, TrialResult, run_trial
from gradlab.bench.tuning import RULESETS, SELF_TUNING_BUDGET_FACTOR, study_plan, workload_time
from gradlab.bench.workloads import Workload
from gradlab.core.parallel import MAP_BACKENDS, make_unordered_map
from gradlab.core.validation import check_choice, check_int

ProgressFn = Callable[[int, int, str], None]


def _derive_seed(*parts: int | str) -> int:
    ints = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0] % (2**31 - 1))


@dataclass(frozen=True)
class TrialSpec:
    """What defines one trial; its ``fingerprint`` keys the stored result."""

    workload: str
    submission: str
    study: int
    trial: int
    hyperparameters: dict[str, Any]
    seed: int
    budget_factor: float
    clock: str = "wall"
    target: float = math.nan  # the workload's validation target (a changed target reruns the trial)

    @property
    def key(self) -> str:
        return f"{self.workload}--{self.submission}--study{self.study}--trial{self.trial}"

    @property
    def fingerprint(self) -> str:
        text = json.dumps([self.workload, self.submission, self.study, self.trial, self.hyperparameters, self.seed,
                           self.budget_factor, self.clock, repr(float(self.target))], sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_trials(workloads: Sequence[Workload], submissions: Sequence[Submission], *, ruleset: str = "external",
                n_trials: int = 5, n_studies: int = 3, seed: int = 0, clock: str = "wall") -> list[TrialSpec]:
    """The trials of ``ruleset``: external tuning ``n_trials`` Halton points per study, self-tuning one trial with
    the submission's defaults at 1.5x the budget; ``n_studies`` studies each."""
    check_choice("ruleset", ruleset, RULESETS)
    check_int("n_trials", n_trials, minimum=1)
    check_int("n_studies", n_studies, minimum=1)
    check_int("seed", seed, minimum=0)
    check_choice("clock", clock, tuple(CLOCKS))
    specs = []
    for sub in submissions:
        if ruleset == "external":
            plan = study_plan(sub.tuning_search_space(), n_trials, n_studies, _derive_seed(seed, sub.name))
            factor = 1.0
        else:
            plan = [[sub.default_hyperparameters()] for _ in range(n_studies)]
            factor = SELF_TUNING_BUDGET_FACTOR
        for wl in workloads:
            for k, points in enumerate(plan):
                for i, hp in enumerate(points):
                    specs.append(TrialSpec(wl.name, sub.name, k, i, dict(hp),
                                           _derive_seed(seed, wl.name, sub.name, k, i), factor, clock,
                                           float(wl.validation_target)))
    return specs


def check_workloads_and_submissions(workloads: Any, submissions: Any) -> tuple[list[Workload], list[Any]]:
    """Both non-empty, every workload a :class:`Workload`, every submission satisfying the submission API."""
    workloads, submissions = list(workloads), list(submissions)
    if not workloads or not submissions:
        raise ValueError("workloads and submissions must each be non-empty")
    for w in workloads:
        if not isinstance(w, Workload):
            raise TypeError(f"workloads must hold Workload objects; got {type(w).__name__}")
    for s in submissions:
        check_submission(s)
    return workloads, submissions


@dataclass
class BenchResult:
    """Aggregated results: ``study_times[s, w, k]`` (min over study k's trials), the ruleset's per-workload
    ``times[s, w]`` (median over studies), the same by steps, and the benchmark scores."""

    workloads: list[str]
    submissions: list[str]
    ruleset: str
    n_trials: int
    n_studies: int
    seed: int
    trials: list[tuple[TrialSpec, TrialResult]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    resumed: int = 0
    study_times: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    study_steps: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))

    @property
    def times(self) -> np.ndarray:
        return aggregate(self.study_times)

    @property
    def steps(self) -> np.ndarray:
        return aggregate(self.study_steps)

    @property
    def scores(self) -> np.ndarray:
        return benchmark_scores(_safe(self.times))

    @property
    def step_scores(self) -> np.ndarray:
        return benchmark_scores(_safe(self.steps))

    def to_json(self) -> dict[str, Any]:
        def fl(a: np.ndarray) -> Any:
            return [fl(x) for x in a] if isinstance(a, np.ndarray) and a.ndim else (
                float(a) if math.isfinite(float(a)) else str(float(a)))

        return {"workloads": self.workloads, "submissions": self.submissions, "ruleset": self.ruleset,
                "n_trials": self.n_trials, "n_studies": self.n_studies, "seed": self.seed,
                "scores_time": fl(self.scores), "scores_steps": fl(self.step_scores),
                "times_s": fl(self.times), "steps": fl(self.steps), "study_times_s": fl(self.study_times),
                "study_steps": fl(self.study_steps), "errors": self.errors, "resumed_trials": self.resumed,
                "trials": [{"key": s.key, "study": s.study, "trial": s.trial, **r.to_json()} for s, r in self.trials]}


def _safe(times: np.ndarray) -> np.ndarray:
    """Times for scoring: a zero (target met at the first eval in ~0 s) is floored at 1e-9."""
    return np.maximum(times, 1e-9)


def aggregate(study_values: np.ndarray) -> np.ndarray:
    """``[s, w, k] -> [s, w]`` by :func:`~gradlab.bench.tuning.workload_time` (median over studies)."""
    s, w, _ = study_values.shape
    out = np.empty((s, w))
    for i in range(s):
        for j in range(w):
            out[i, j] = workload_time(study_values[i, j][:, None])
    return out


def run_bench(workloads: Sequence[Workload], submissions: Sequence[Submission], *, ruleset: str = "external",
              n_trials: int = 5, n_studies: int = 3, seed: int = 0, store: str | Path | BenchStore | None = None,
              force: bool = False, eval_fn: EvalFn | None = None, progress: ProgressFn | None = None,
              clock: str = "wall", backend: str = "sequential", workers: int = 1,
              address: str | None = None, cpus_per_trial: int = 1) -> BenchResult:
    """Plan, run (skipping trials already in ``store`` unless ``force``) and aggregate a benchmark.

    ``store``: an SQLite file (or :class:`~gradlab.bench.store.BenchStore`) whose ``bench_trials`` table receives
    each trial as it finishes; ``None`` keeps nothing. ``clock``: ``"wall"`` (AlgoPerf) or ``"process"`` (CPU time
    of this process; see :mod:`gradlab.bench.timing`). ``backend``/``workers``/``address``: how trials run
    (:func:`gradlab.core.parallel.make_unordered_map`): ``"sequential"`` in this process, ``"local"`` in
    ``workers`` processes, ``"ray"`` as Ray tasks (on the cluster at ``address``; a local Ray gets ``workers``
    CPUs). ``cpus_per_trial``: torch threads of each trial, and the CPUs each Ray task requests. In the parallel
    backends each trial builds its model in the worker process; ``eval_fn`` must then be picklable.
    """
    check_choice("backend", backend, MAP_BACKENDS)
    check_int("workers", workers, minimum=1)
    check_int("cpus_per_trial", cpus_per_trial, minimum=1)
    if backend == "ray" and address is None and cpus_per_trial > workers:
        raise ValueError(f"cpus_per_trial ({cpus_per_trial}) exceeds the {workers} CPU(s) given to the local Ray "
                         "instance (workers): no trial could be scheduled")
    workloads, submissions = check_workloads_and_submissions(workloads, submissions)
    for kind, names in (("workload", [w.name for w in workloads]), ("submission", [s.name for s in submissions])):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{kind} names must be unique; repeated: {', '.join(dup)}")
    specs = plan_trials(workloads, submissions, ruleset=ruleset, n_trials=n_trials, n_studies=n_studies, seed=seed,
                        clock=clock)
    if store is not None and not isinstance(store, BenchStore):
        store = BenchStore(store)
    wl_by, sub_by = {w.name: w for w in workloads}, {s.name: s for s in submissions}
    res = BenchResult([w.name for w in workloads], [s.name for s in submissions], ruleset, n_trials if ruleset ==
                      "external" else 1, n_studies, seed)
    per_study = 1 if ruleset == "self" else n_trials
    st = np.full((len(submissions), len(workloads), n_studies, per_study), np.inf)
    ss = np.full_like(st, np.inf)
    results: list[TrialResult | None] = [None] * len(specs)
    todo = []
    for n, spec in enumerate(specs):
        stored = store.get(spec) if (store is not None and not force) else None
        if stored is not None:
            results[n] = stored
            res.resumed += 1
        else:
            todo.append(n)
    done = res.resumed
    if progress is not None and done:
        progress(done, len(specs), "resumed")
    payloads = [(wl_by[specs[n].workload], sub_by[specs[n].submission], specs[n], eval_fn) for n in todo]
    for k, result in make_unordered_map(backend, workers, address, cpus_per_item=cpus_per_trial)(_run_spec, payloads):
        spec = specs[todo[k]]
        if result.error:
            res.errors.append(f"{spec.key}: {result.error}")
        elif store is not None:
            store.put(spec, result)  # at once: a stopped bench resumes from here
        results[todo[k]] = result
        done += 1
        if progress is not None:
            progress(done, len(specs), spec.key)
    for spec, result in zip(specs, results):
        res.trials.append((spec, result))
        i, j = res.submissions.index(spec.submission), res.workloads.index(spec.workload)
        st[i, j, spec.study, spec.trial] = result.time_to_target
        ss[i, j, spec.study, spec.trial] = result.steps_to_target
    res.study_times, res.study_steps = st.min(axis=3), ss.min(axis=3)
    return res


def _run_spec(payload: tuple[Workload, Submission, TrialSpec, EvalFn | None]) -> TrialResult:
    """Run one planned trial (in a worker process for the parallel backends); an exception of the submission
    becomes the result's ``error`` (the trial is lost, not the benchmark)."""
    workload, submission, spec, eval_fn = payload
    try:
        return run_trial(workload, submission, spec.hyperparameters, spec.seed, budget_factor=spec.budget_factor,
                         eval_fn=eval_fn, clock=spec.clock)
    except Exception as err:  # noqa: BLE001
        return TrialResult(spec.workload, spec.submission, spec.hyperparameters, spec.seed, spec.budget_factor,
                           spec.clock, error=f"{type(err).__name__}: {err}")


def run_record(result: BenchResult, workloads: Sequence[Workload] | None = None) -> dict[str, Any]:
    """The JSON record of a finished benchmark kept in ``bench_runs``: sizes, names, each workload's metric and
    target, the errors, and every planned trial's specification (from which :func:`result_from_record` finds the
    stored results)."""
    from gradlab.bench.pages import workload_meta

    return {"workloads": result.workloads, "submissions": result.submissions, "ruleset": result.ruleset,
            "n_trials": result.n_trials, "n_studies": result.n_studies, "seed": result.seed,
            "errors": list(result.errors), "workload_meta": workload_meta(workloads or ()),
            "specs": [asdict(spec) for spec, _ in result.trials]}


def result_from_record(record: dict[str, Any], store: BenchStore) -> BenchResult:
    """Rebuild a :class:`BenchResult` from a :func:`run_record` and the trials in ``store`` (a trial missing from
    the store -- it raised or never finished -- counts as missed, with an error saying so)."""
    specs = [TrialSpec(**d) for d in record["specs"]]
    found = store.trials([(s.key, s.fingerprint) for s in specs])
    res = BenchResult(list(record["workloads"]), list(record["submissions"]), record["ruleset"],
                      int(record["n_trials"]), int(record["n_studies"]), int(record["seed"]),
                      errors=list(record.get("errors", ())))
    per_study = max([s.trial for s in specs], default=0) + 1
    st = np.full((len(res.submissions), len(res.workloads), res.n_studies, per_study), np.inf)
    ss = np.full_like(st, np.inf)
    for spec in specs:
        result = found.get((spec.key, spec.fingerprint))
        if result is None:
            if not any(e.startswith(f"{spec.key}:") for e in res.errors):
                res.errors.append(f"{spec.key}: not in the store (the trial raised or did not finish)")
            result = TrialResult(spec.workload, spec.submission, spec.hyperparameters, spec.seed, spec.budget_factor,
                                 spec.clock, error="not stored")
        res.trials.append((spec, result))
        i, j = res.submissions.index(spec.submission), res.workloads.index(spec.workload)
        st[i, j, spec.study, spec.trial] = result.time_to_target
        ss[i, j, spec.study, spec.trial] = result.steps_to_target
    res.study_times, res.study_steps = st.min(axis=3), ss.min(axis=3)
    res.resumed = len(found)
    return res
