"""Run a benchmark: plan the trials of a ruleset, run them (resumably), aggregate and score.

Every finished trial is written to ``out_dir/trials/<key>.json`` atomically (temp file + ``os.replace``) together
with the fingerprint of its specification (workload, submission, study, trial, hyperparameters, seed, budget), so a
stopped benchmark resumes without rerunning a finished trial, and a changed plan reruns the trials it changed.
Trials that raise are recorded in the result (``errors``) with an infinite time and are not stored, so they rerun.

Seeds: the Halton scramble of a submission is seeded by ``(seed, submission name)``, so its points are the same on
every workload (one workload-agnostic search space); each trial's seed is derived from ``(seed, workload,
submission, study, trial)``, so trials are independent and reproducible.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gradlab.bench.scoring import benchmark_scores, performance_profile, tau_grid
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


class TrialStore:
    """Finished trials as one JSON file each under ``root`` (atomic writes; see the module docstring)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, spec: TrialSpec) -> Path:
        return self.root / f"{spec.key}.json"

    def get(self, spec: TrialSpec) -> TrialResult | None:
        """The stored result of ``spec`` if one exists with the same fingerprint (unreadable files count as none)."""
        p = self.path(spec)
        try:
            d = json.loads(p.read_text())
            if d.get("fingerprint") != spec.fingerprint:
                return None
            return TrialResult.from_json(d["result"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, spec: TrialSpec, result: TrialResult) -> None:
        payload = json.dumps({"fingerprint": spec.fingerprint, "key": spec.key, "study": spec.study,
                              "trial": spec.trial, "result": result.to_json()}, indent=1)
        write_atomic(self.path(spec), payload)


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


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory and ``os.replace``, with the mode a
    plain ``open(path, "w")`` would give it (an existing file keeps its mode; a new one ``0o666 & ~umask``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
              n_trials: int = 5, n_studies: int = 3, seed: int = 0, out_dir: str | Path | None = None,
              force: bool = False, eval_fn: EvalFn | None = None, progress: ProgressFn | None = None,
              clock: str = "wall", backend: str = "sequential", workers: int = 1,
              address: str | None = None) -> BenchResult:
    """Plan, run (skipping trials already stored under ``out_dir`` unless ``force``) and aggregate a benchmark.

    ``clock``: ``"wall"`` (AlgoPerf) or ``"process"`` (CPU time of this process; see :mod:`gradlab.bench.timing`).
    ``backend``/``workers``/``address``: how trials run (:func:`gradlab.core.parallel.make_unordered_map`):
    ``"sequential"`` in this process, ``"local"`` in ``workers`` single-thread processes, ``"ray"`` as Ray tasks
    (on the cluster at ``address``). In the parallel backends each trial builds its model in the worker process;
    results are stored as they finish. ``eval_fn`` must then be picklable.
    """
    check_choice("backend", backend, MAP_BACKENDS)
    check_int("workers", workers, minimum=1)
    workloads, submissions = check_workloads_and_submissions(workloads, submissions)
    for kind, names in (("workload", [w.name for w in workloads]), ("submission", [s.name for s in submissions])):
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{kind} names must be unique; repeated: {', '.join(dup)}")
    specs = plan_trials(workloads, submissions, ruleset=ruleset, n_trials=n_trials, n_studies=n_studies, seed=seed,
                        clock=clock)
    store = TrialStore(Path(out_dir) / "trials") if out_dir is not None else None
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
    for k, result in make_unordered_map(backend, workers, address)(_run_spec, payloads):
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


def profile_figure(result: BenchResult, title: str = ""):
    """Performance profiles rho_s(tau) by time and by steps, with each submission's score in the legend."""
    from matplotlib.figure import Figure

    taus = tau_grid()
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, vals, scores, what in ((axes[0], result.times, result.scores, "time"),
                                   (axes[1], result.steps, result.step_scores, "steps")):
        rho = performance_profile(_safe(vals), taus)
        order = np.argsort(-scores)
        for i in order:  # one colour per submission in both panels
            ax.step(taus, rho[i], where="post", lw=2, color=f"C{i % 10}",
                    label=f"{result.submissions[i]} (B={scores[i]:.3f})")
        ax.set(xlabel=r"$\tau$ (ratio to the fastest submission)", xlim=(1, 4), ylim=(-0.03, 1.03),
               title=f"performance profile by {what}-to-target")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel(r"$\rho_s(\tau)$: share of workloads within $\tau$")
    fig.suptitle(title or f"{result.ruleset} tuning, {result.n_trials} trials x {result.n_studies} studies, "
                 f"{len(result.workloads)} workloads: {', '.join(result.workloads)}", fontsize=10)
    fig.tight_layout()
    return fig


def markdown_table(result: BenchResult) -> str:
    """The ranking (by time score) with per-workload times and steps to target."""
    order = np.argsort(-result.scores, kind="stable")
    head = "| rank | submission | score (time) | score (steps) | " + " | ".join(
        f"{w} s / steps" for w in result.workloads) + " |"
    lines = [head, "|" + "---|" * (4 + len(result.workloads))]
    for r, i in enumerate(order, 1):
        cells = [f"{_fmt(result.times[i, j])} / {_fmt(result.steps[i, j], 0)}" for j in range(len(result.workloads))]
        lines.append(f"| {r} | {result.submissions[i]} | {result.scores[i]:.3f} | {result.step_scores[i]:.3f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "∞"
    return f"{x:.{digits}f}" if digits else f"{x:.0f}"


def render_html(result: BenchResult, workloads: Sequence[Workload] | None = None,
                figure: str = "profile.png") -> str:
    """The bench page (``templates/bench.html.j2``, jinja2 with autoescaping): the ranking table first, then the
    profile plot and any trial errors. ``workloads`` (optional) adds each workload's metric and target."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("gradlab.bench", "templates"),
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2")),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    by_name = {w.name: w for w in (workloads or ())}
    wls = [{"name": n, "metric": by_name[n].target_metric_name if n in by_name else "target",
            "higher_is_better": by_name[n].higher_is_better if n in by_name else True,
            "target": f"{by_name[n].validation_target:.4g}" if n in by_name else "?"} for n in result.workloads]
    order = np.argsort(-result.scores, kind="stable")
    rows = []
    for r, i in enumerate(order, 1):
        cells = [{"missed": not math.isfinite(result.times[i, j]),
                  "text": f"{_fmt(result.times[i, j])} / {_fmt(result.steps[i, j], 0)}"}
                 for j in range(len(result.workloads))]
        rows.append({"rank": r, "name": result.submissions[i], "score": f"{result.scores[i]:.3f}",
                     "step_score": f"{result.step_scores[i]:.3f}", "cells": cells})
    return env.get_template("bench.html.j2").render(
        ruleset=result.ruleset, n_trials=result.n_trials, n_studies=result.n_studies, seed=result.seed,
        workloads=wls, rows=rows, figure=figure, errors=result.errors, n_done=len(result.trials),
        resumed=result.resumed)


def write_outputs(result: BenchResult, out_dir: str | Path,
                  workloads: Sequence[Workload] | None = None) -> dict[str, Path]:
    """``results.json``, ``profile.png``, ``BENCH.md`` and ``bench.html`` under ``out_dir`` (each written
    atomically); ``workloads`` adds metrics and targets to the HTML page."""
    import io

    out = Path(out_dir)
    paths = {"json": out / "results.json", "figure": out / "profile.png", "markdown": out / "BENCH.md",
             "html": out / "bench.html"}
    write_atomic(paths["json"], json.dumps(result.to_json(), indent=1))
    buf = io.BytesIO()
    profile_figure(result).savefig(buf, format="png", dpi=110)
    write_atomic(paths["figure"], buf.getvalue())
    md = (f"# gradlab bench\n\n{result.ruleset} tuning, {result.n_trials} trial(s) x {result.n_studies} studies, "
          f"seed {result.seed}. Times are seconds of submission time (eval excluded) to the validation target, "
          "median over studies of the best trial; ∞ = missed.\n\n" + markdown_table(result)
          + "\n\n![performance profiles](profile.png)\n")
    if result.errors:
        md += "\n## Trial errors\n\n" + "\n".join(f"- {e}" for e in result.errors) + "\n"
    write_atomic(paths["markdown"], md)
    write_atomic(paths["html"], render_html(result, workloads, paths["figure"].name))
    return paths
