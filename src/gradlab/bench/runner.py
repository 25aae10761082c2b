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
from gradlab.core.validation import check_choice, check_int

ProgressFn = Callable[[int, int, str], None]


def _derive_seed(*parts: int | str) -> int:
    ints = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(1)[0] % (2**31 - 1))


@dataclass(frozen=True)
class TrialSpec:
    """What defines one trial; its :attr:`fingerprint` keys the stored result."""

    workload: str
    submission: str
    study: int
    trial: int
    hyperparameters: dict[str, Any]
    seed: int
    budget_factor: float
    clock: str = "wall"

    @property
    def key(self) -> str:
        return f"{self.workload}--{self.submission}--study{self.study}--trial{self.trial}"

    @property
    def fingerprint(self) -> str:
        text = json.dumps([self.workload, self.submission, self.study, self.trial, self.hyperparameters, self.seed,
                           self.budget_factor, self.clock], sort_keys=True, default=repr)
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
                                           _derive_seed(seed, wl.name, sub.name, k, i), factor, clock))
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


def write_atomic(path: str | Path, text: str | bytes) -> None:
    """Write ``text`` to ``path`` through a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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
              clock: str = "wall") -> BenchResult:
    """Plan, run (skipping trials already stored under ``out_dir`` unless ``force``) and aggregate a benchmark.

    ``clock``: ``"wall"`` (AlgoPerf) or ``"process"`` (CPU time of this process; see :mod:`gradlab.bench.timing`).
    """
    workloads, submissions = list(workloads), list(submissions)
    if not workloads or not submissions:
        raise ValueError("workloads and submissions must each be non-empty")
    for w in workloads:
        if not isinstance(w, Workload):
            raise TypeError(f"workloads must hold Workload objects; got {type(w).__name__}")
    for s in submissions:
        check_submission(s)
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
    for done, spec in enumerate(specs):
        result = store.get(spec) if (store is not None and not force) else None
        if result is not None:
            res.resumed += 1
        else:
            try:
                result = run_trial(wl_by[spec.workload], sub_by[spec.submission], spec.hyperparameters, spec.seed,
                                   budget_factor=spec.budget_factor, eval_fn=eval_fn, clock=spec.clock)
            except Exception as err:  # noqa: BLE001 - a failing submission loses its trial, not the benchmark
                result = TrialResult(spec.workload, spec.submission, spec.hyperparameters, spec.seed,
                                     spec.budget_factor, spec.clock, error=f"{type(err).__name__}: {err}")
                res.errors.append(f"{spec.key}: {result.error}")
            else:
                if store is not None:
                    store.put(spec, result)
        res.trials.append((spec, result))
        i, j = res.submissions.index(spec.submission), res.workloads.index(spec.workload)
        st[i, j, spec.study, spec.trial] = result.time_to_target
        ss[i, j, spec.study, spec.trial] = result.steps_to_target
        if progress is not None:
            progress(done + 1, len(specs), spec.key)
    res.study_times, res.study_steps = st.min(axis=3), ss.min(axis=3)
    return res


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


def write_outputs(result: BenchResult, out_dir: str | Path) -> dict[str, Path]:
    """``results.json``, ``profile.png`` and ``BENCH.md`` under ``out_dir`` (each written atomically)."""
    import io

    out = Path(out_dir)
    paths = {"json": out / "results.json", "figure": out / "profile.png", "markdown": out / "BENCH.md"}
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
    return paths
