"""Tuning rulesets of AlgoPerf (Dahl et al., 2023, arXiv 2306.07179, §4.4; research notes §6.4 and §6.9).

* **External tuning.** A submission declares one workload-agnostic search space. ``n_trials x n_studies`` points
  are drawn from one *seeded, scrambled* Halton sequence (``scipy.stats.qmc.Halton``) and dealt out to the
  studies, so every study gets distinct points (AlgoPerf's ``halton.py`` reshuffles the same 5 points with the
  unseeded global NumPy RNG, so its studies reuse them). A study's time on a workload is the minimum
  time-to-target over its trials (by *time*, not by eval index as AlgoPerf's ``get_best_trial_index``); the
  workload's time is the median over studies.
* **Self-tuning.** No hyperparameters: the submission's defaults, one trial per study, and 1.5x the runtime
  budget; the workload's time is the median over studies.

A search-space dimension is a :class:`Param`: a ``log``/``linear`` range ``[low, high]`` or a list of
``feasible_points`` (chosen by ``floor(u * n)``, as AlgoPerf's discrete dimensions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

RULESETS = ("external", "self")
SELF_TUNING_BUDGET_FACTOR = 1.5


@dataclass(frozen=True)
class Param:
    """One search-space dimension: a range (``scaling`` ``"log"`` or ``"linear"``) or ``feasible_points``."""

    low: float | None = None
    high: float | None = None
    scaling: str = "log"
    feasible_points: tuple[Any, ...] | None = None

    def __post_init__(self) -> None:
        if self.feasible_points is not None:
            pts = tuple(self.feasible_points)
            if not pts:
                raise ValueError("Param.feasible_points must not be empty")
            object.__setattr__(self, "feasible_points", pts)
            return
        if self.scaling not in ("log", "linear"):
            raise ValueError(f"Param.scaling must be 'log' or 'linear'; got {self.scaling!r}")
        for name in ("low", "high"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"Param.{name} must be a finite number; got {v!r}")
        if not self.low <= self.high:
            raise ValueError(f"Param.low must be <= Param.high; got {self.low} > {self.high}")
        if self.scaling == "log" and self.low <= 0:
            raise ValueError(f"Param.low must be > 0 for log scaling; got {self.low}")

    def from_unit(self, u: float) -> Any:
        """Map ``u`` in [0, 1) to this dimension."""
        if self.feasible_points is not None:
            return self.feasible_points[min(int(u * len(self.feasible_points)), len(self.feasible_points) - 1)]
        if self.scaling == "log":
            return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))
        return float(self.low + u * (self.high - self.low))


SearchSpace = Mapping[str, Param]


def check_search_space(space: Any) -> dict[str, Param]:
    """Return ``space`` as a dict of :class:`Param` or raise ``TypeError``/``ValueError``."""
    if not isinstance(space, Mapping):
        raise TypeError(f"search space must be a mapping of names to Param; got {type(space).__name__}")
    out = {}
    for k, v in space.items():
        if not isinstance(k, str) or not k:
            raise TypeError(f"search space keys must be non-empty strings; got {k!r}")
        if not isinstance(v, Param):
            raise TypeError(f"search space entry {k!r} must be a Param; got {type(v).__name__}")
        out[k] = v
    return out


def halton_points(space: SearchSpace, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` hyperparameter points from a scrambled Halton sequence seeded with ``seed`` (reproducible)."""
    from scipy.stats import qmc

    space = check_search_space(space)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int; got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    if not space:
        return [{} for _ in range(n)]
    names = sorted(space)
    u = qmc.Halton(d=len(names), scramble=True, seed=seed).random(n)
    return [{name: space[name].from_unit(float(u[i, j])) for j, name in enumerate(names)} for i in range(n)]


def study_plan(space: SearchSpace, n_trials: int, n_studies: int, seed: int) -> list[list[dict[str, Any]]]:
    """External tuning: ``n_studies`` lists of ``n_trials`` distinct Halton points (one sequence, dealt in order)."""
    for name, v in (("n_trials", n_trials), ("n_studies", n_studies)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}")
    pts = halton_points(space, n_trials * n_studies, seed)
    return [pts[s * n_trials:(s + 1) * n_trials] for s in range(n_studies)]


def workload_time(times: Sequence[Sequence[float]] | np.ndarray) -> float:
    """The ruleset's per-workload time from ``times[study][trial]``: median over studies of the per-study minimum
    (a study with no trial reaching the target contributes ``inf``). Self-tuning is the one-trial case."""
    arr = np.asarray(times, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"times must be a non-empty 2-D array (studies x trials); got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("times must not contain NaN (use inf for a missed target)")
    per_study = np.sort(arr.min(axis=1))
    k = per_study.size
    # median without inf - inf = nan: the midpoint of the two middle values, inf if either is inf
    lo, hi = per_study[(k - 1) // 2], per_study[k // 2]
    return float(hi) if not math.isfinite(hi) else float((lo + hi) / 2)
