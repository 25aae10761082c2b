"""AlgoPerf performance profiles and benchmark scores (Dahl et al., 2023, arXiv 2306.07179, §4.5).

For submissions ``s`` and workloads ``w`` with per-workload times ``t[s, w]`` (time-to-target after the tuning
ruleset; ``inf`` when the target was missed):

1. ``t[s, w] = inf`` when ``t[s, w] > tau_max * min_s t[s, w]`` (AlgoPerf: a submission more than 4x slower than the
   fastest gets no credit on that workload);
2. the performance ratio is ``r[s, w] = t[s, w] / min_s t[s, w]``; a workload that no submission reached has
   ``r = inf`` for all (AlgoPerf's code yields NaN there);
3. the performance profile is ``rho_s(tau) = #{w : r[s, w] <= tau} / W`` with ``W`` the number of workloads scored
   (AlgoPerf's code divides by the constant 8);
4. the benchmark score is ``B_s = 1/(tau_max - 1) * integral_1^tau_max rho_s(tau) dtau``, evaluated on
   ``n_points`` equally spaced points by the trapezoid rule (AlgoPerf: 100 points, ``tau_max = 4``), so
   ``B_s`` lies in [0, 1] and is 1 exactly for a submission that is fastest on every workload.

Reference values (research notes §6.6): times ``[[1, 2], [2, 1]]`` give ``B = [0.83586, 0.83586]``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

TAU_MAX = 4.0
N_POINTS = 100


def _times_array(times: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    try:
        arr = np.asarray(times, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError("times must be a 2-D array of real numbers (submissions x workloads)") from None
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"times must be a non-empty 2-D array (submissions x workloads); got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("times must not contain NaN (use inf for a missed target)")
    if (arr <= 0).any():
        raise ValueError("times must be > 0 (use inf for a missed target)")
    return arr


def _check_tau_max(tau_max: float) -> float:
    if isinstance(tau_max, bool) or not isinstance(tau_max, (int, float)) or not math.isfinite(tau_max) or tau_max <= 1:
        raise ValueError(f"tau_max must be a finite number > 1; got {tau_max!r}")
    return float(tau_max)


def performance_ratios(times: Sequence[Sequence[float]] | np.ndarray, tau_max: float = TAU_MAX) -> np.ndarray:
    """``r[s, w] = t[s, w] / min_s t[s, w]``, with ``inf`` above ``tau_max`` and on workloads nobody reached."""
    arr = _times_array(times)
    tau_max = _check_tau_max(tau_max)
    best = arr.min(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(np.isfinite(best), arr / best, np.inf)
    ratios[ratios > tau_max] = np.inf
    return ratios


def performance_profile(times: Sequence[Sequence[float]] | np.ndarray, taus: Sequence[float] | np.ndarray,
                        tau_max: float = TAU_MAX) -> np.ndarray:
    """``rho[s, k]``: the share of workloads on which submission ``s`` is within ``taus[k]`` of the fastest."""
    ratios = performance_ratios(times, tau_max)
    tau_arr = np.asarray(taus, dtype=np.float64)
    if tau_arr.ndim != 1 or tau_arr.size < 1 or not np.isfinite(tau_arr).all():
        raise ValueError("taus must be a non-empty 1-D array of finite numbers")
    return (ratios[:, :, None] <= tau_arr[None, None, :]).mean(axis=1)


def tau_grid(tau_max: float = TAU_MAX, n_points: int = N_POINTS) -> np.ndarray:
    """AlgoPerf's evaluation grid ``linspace(1, tau_max, n_points)``."""
    tau_max = _check_tau_max(tau_max)
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 2:
        raise ValueError(f"n_points must be an int >= 2; got {n_points!r}")
    return np.linspace(1.0, tau_max, n_points)


def benchmark_scores(times: Sequence[Sequence[float]] | np.ndarray, tau_max: float = TAU_MAX,
                     n_points: int = N_POINTS) -> np.ndarray:
    """``B_s``: the normalised area under each submission's performance profile on [1, tau_max] (in [0, 1])."""
    from scipy.integrate import trapezoid

    taus = tau_grid(tau_max, n_points)
    rho = performance_profile(times, taus, tau_max)
    return trapezoid(rho, taus, axis=1) / (taus[-1] - 1.0)
