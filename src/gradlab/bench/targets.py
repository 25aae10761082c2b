"""AlgoPerf's target-setting procedure, scaled down (Dahl et al., 2023, arXiv 2306.07179, §4.3; research §6.5).

For each workload:

1. each target-setting baseline (AdamW, NAdamW, SGD heavy-ball, SGD Nesterov) runs ``n_trials`` points of its
   scrambled-Halton search space with the target disabled, for ``step_hint`` steps (the target-setting budget;
   a scored trial later gets 4/3 of it, ``Workload.max_steps``);
2. the configuration with the best *best validation metric* over all baselines' trials is rerun ``n_reruns``
   times with fresh seeds;
3. the validation target is the median over the reruns of their best validation metric.

AlgoPerf uses 200 trials per baseline and 20 reruns; ``gradlab bench --set-targets`` defaults to 5 and 3 (one
core). AlgoPerf's test target (the worst test metric of the reruns that reached the validation target) is not set:
the built-in workloads have no separate test split. :func:`write_targets` stores ``{workload: record}`` as JSON
(atomically); :func:`apply_targets` sets ``validation_target`` on workload instances from such a file.
"""

from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from gradlab.bench.submission import Submission
from gradlab.bench.timing import TrialResult, run_trial
from gradlab.bench.tuning import halton_points
from gradlab.bench.workloads import Workload
from gradlab.core.validation import check_int

ProgressFn = Callable[[int, int, str], None]


def best_validation(result: TrialResult, higher_is_better: bool) -> float:
    """The best eval metric of a trial (``nan`` when no eval was finite)."""
    vals = [e["metric"] for e in result.evals if math.isfinite(e["metric"])]
    if not vals:
        return math.nan
    return max(vals) if higher_is_better else min(vals)


def _untargeted(workload: Workload) -> Workload:
    """A copy whose target is unreachable and whose clock budget is unbounded (only the step budget stops it)."""
    wl = copy.copy(workload)
    wl.validation_target = math.inf if workload.higher_is_better else -math.inf
    wl.max_runtime_s = math.inf
    return wl


def _better(a: float, b: float, higher: bool) -> bool:
    if not math.isfinite(a):
        return False
    return (not math.isfinite(b)) or (a > b if higher else a < b)


def set_targets(workloads: Sequence[Workload], submissions: Sequence[Submission], *, n_trials: int = 5,
                n_reruns: int = 3, seed: int = 0, clock: str = "process",
                progress: ProgressFn | None = None) -> dict[str, dict[str, Any]]:
    """Run the procedure of the module docstring; return ``{workload name: record}`` with the ``target``, the best
    configuration (``submission``, ``hyperparameters``), the reruns' best values and every trial's best value."""
    from gradlab.bench.runner import _derive_seed, check_workloads_and_submissions

    check_int("n_trials", n_trials, minimum=1)
    check_int("n_reruns", n_reruns, minimum=1)
    check_int("seed", seed, minimum=0)
    workloads, submissions = check_workloads_and_submissions(workloads, submissions)
    total = len(workloads) * (len(submissions) * n_trials + n_reruns)
    done = 0
    out: dict[str, dict[str, Any]] = {}
    for wl in workloads:
        free = _untargeted(wl)
        factor = wl.step_hint / wl.max_steps  # run exactly step_hint steps
        hi = wl.higher_is_better
        trials: list[dict[str, Any]] = []
        best: tuple[float, Submission | None, dict[str, Any]] = (math.nan, None, {})
        for sub in submissions:
            for i, hp in enumerate(halton_points(sub.tuning_search_space(), n_trials,
                                                 _derive_seed(seed, "targets", sub.name))):
                r = run_trial(free, sub, hp, _derive_seed(seed, "targets", wl.name, sub.name, i),
                              budget_factor=factor, clock=clock)
                v = best_validation(r, hi)
                trials.append({"submission": sub.name, "trial": i, "hyperparameters": hp, "best_validation": v})
                if _better(v, best[0], hi):
                    best = (v, sub, hp)
                done += 1
                if progress is not None:
                    progress(done, total, f"targets {wl.name} {sub.name} {i}")
        if best[1] is None:
            raise ValueError(f"no target-setting trial on {wl.name} produced a finite validation metric")
        reruns = []
        for k in range(n_reruns):
            r = run_trial(free, best[1], best[2], _derive_seed(seed, "targets-rerun", wl.name, k),
                          budget_factor=factor, clock=clock)
            reruns.append(best_validation(r, hi))
            done += 1
            if progress is not None:
                progress(done, total, f"targets {wl.name} rerun {k}")
        finite = [v for v in reruns if math.isfinite(v)]
        if not finite:
            raise ValueError(f"every rerun of the best configuration on {wl.name} diverged")
        out[wl.name] = {"target": float(statistics.median(finite)), "metric": wl.target_metric_name,
                        "higher_is_better": hi, "submission": best[1].name, "hyperparameters": best[2],
                        "rerun_best_validation": reruns, "steps": wl.step_hint, "n_trials": n_trials,
                        "n_reruns": n_reruns, "seed": seed, "trials": trials}
    return out


def write_targets(path: str | Path, targets: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``targets`` (from :func:`set_targets`) as JSON, atomically; non-finite numbers as strings."""
    from gradlab.core.files import write_atomic

    def clean(x: Any) -> Any:
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        if isinstance(x, Mapping):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    path = Path(path)
    write_atomic(path, json.dumps(clean(dict(targets)), indent=1))
    return path


def load_targets(path: str | Path) -> dict[str, float]:
    """``{workload name: target}`` from a targets file (``ValueError`` naming the file when it is malformed)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise ValueError(f"targets file {path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"targets file {path}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"targets file {path}: expected an object of workload records")
    out = {}
    for name, rec in data.items():
        value = rec.get("target") if isinstance(rec, dict) else rec
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"targets file {path}: workload {name!r} needs a finite 'target'; got {value!r}")
        out[str(name)] = float(value)
    return out


def apply_targets(workloads: Sequence[Workload], targets: Mapping[str, float]) -> list[str]:
    """Set ``validation_target`` on each workload named in ``targets`` (in place); return the names set."""
    named = []
    for wl in workloads:
        if wl.name in targets:
            wl.validation_target = float(targets[wl.name])
            named.append(wl.name)
    return named
