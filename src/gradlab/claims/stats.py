"""Statistics for claims decided by a margin: means over seeds with bootstrap confidence intervals.

A margin measured on one draw is not evidence. A claim that compares two methods runs them on the same seeds
(``run.seeds(n)``), forms the per-seed differences and decides on the confidence interval of their mean
(:func:`paired_bootstrap_ci`): "A beats B" holds when the whole interval lies on A's side of zero; an interval
that straddles the threshold does not decide, and the claim says so.

Whether an undecided interval means "failed" or "inconclusive" depends on its width: :func:`resolution_check`
is the precondition of such a claim. With the smallest effect the paper itself reports, ``delta`` (declared before
the run), an interval that lies below ``threshold + delta`` rules the paper's effect out (the claim *failed*); one
that contains both ``threshold`` and ``threshold + delta`` cannot tell the paper's effect from none (the run is
too small or too noisy: *inconclusive*, with the interval reported).

The intervals are percentile-BCa bootstrap intervals from :func:`scipy.stats.bootstrap` (the paired variant
resamples seeds, keeping each seed's pair together). With fewer than two seeds no interval exists; the
returned :class:`Interval` is then unbounded (``(-inf, inf)``), so a decision taken on it never holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:
    from gradlab.claims.types import Check

__all__ = ["Interval", "bootstrap_ci", "paired_bootstrap_ci", "resolution_check"]


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval ``[low, high]`` over ``n`` samples."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float = 0.95

    def above(self, threshold: float) -> bool:
        """The whole interval lies above ``threshold`` (the mean is credibly larger)."""
        return bool(self.low > threshold)

    def below(self, threshold: float) -> bool:
        """The whole interval lies below ``threshold``."""
        return bool(self.high < threshold)

    def contains(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict (non-finite bounds as strings, as Evidence stores them)."""

        def f(x: float) -> float | str:
            return float(x) if math.isfinite(x) else str(float(x))

        return {"mean": f(self.mean), "low": f(self.low), "high": f(self.high), "n": int(self.n),
                "confidence": float(self.confidence)}

    def __str__(self) -> str:
        return f"{self.mean:.4g} [{self.low:.4g}, {self.high:.4g}] (n={self.n}, {self.confidence:.0%} CI)"


def _as_1d(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (one value per seed); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must hold at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite; got {arr.tolist()}")
    return arr


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence!r}")
    return c


def bootstrap_ci(values: Sequence[float] | np.ndarray, *, confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0) -> Interval:
    """Mean of ``values`` with a bootstrap confidence interval (``scipy.stats.bootstrap``, BCa).

    With one value the interval is ``(-inf, inf)``; when all values are equal it is the point itself.
    """
    arr = _as_1d(values, "values")
    c = _check_confidence(confidence)
    mean = float(arr.mean())
    if arr.size < 2:
        return Interval(mean, -math.inf, math.inf, int(arr.size), c)
    if np.all(arr == arr[0]):
        return Interval(mean, mean, mean, int(arr.size), c)
    from scipy.stats import bootstrap

    method = "BCa" if arr.size >= 3 else "percentile"
    res = bootstrap((arr,), np.mean, confidence_level=c, n_resamples=int(n_resamples), method=method,
                    rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # BCa can degenerate on tiny samples
        res = bootstrap((arr,), np.mean, confidence_level=c, n_resamples=int(n_resamples), method="percentile",
                        rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return Interval(mean, min(low, mean), max(high, mean), int(arr.size), c)


def paired_bootstrap_ci(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *,
                        confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> Interval:
    """Mean of the paired differences ``a[i] - b[i]`` (same seed ``i``) with a bootstrap CI over seeds."""
    x = _as_1d(a, "a")
    y = _as_1d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must pair up (one value per seed each); got {x.size} and {y.size} values")
    return bootstrap_ci(x - y, confidence=confidence, n_resamples=n_resamples, seed=seed)


def resolution_check(interval: Interval, smallest_effect: float, *, threshold: float = 0.0,
                     what: str = "gain") -> "Check":
    """Precondition of a claim "the mean ``what`` exceeds ``threshold``" decided on ``interval``: the interval
    must exclude ``threshold`` (a credible gain: the claim can pass) or ``threshold + smallest_effect`` (credibly
    less than the paper's smallest reported effect: the claim fails). It holds iff
    ``max(low - threshold, threshold + smallest_effect - high) > 0``; an interval holding both values (or an
    unbounded one, from fewer than two seeds) fails it, and the claim is inconclusive.
    """
    from gradlab.claims.types import Check

    if not isinstance(interval, Interval):
        raise TypeError(f"interval must be an Interval; got {type(interval).__name__}")
    delta = float(smallest_effect)
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"smallest_effect must be a finite positive number (the paper's smallest effect); "
                         f"got {smallest_effect!r}")
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"threshold must be finite; got {threshold!r}")
    value = max(interval.low - t, t + delta - interval.high)
    label = (f"{what} CI [{interval.low:.4g}, {interval.high:.4g}] excludes {t:g} or {t + delta:g} (the paper's "
             f"smallest effect): max(low - {t:g}, {t + delta:g} - high)")
    return Check(label, value, ">", 0.0)
