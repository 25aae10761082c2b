"""Run one claim in the current process (for tests and debugging; the CLI uses the runner's workers)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from gradlab.claims.registry import find_claim
from gradlab.claims.types import ClaimRun, Evidence, ProgressFn, _no_progress, check_scale
from gradlab.core.seeding import seed_everything


def run_claim_inline(claim_id: str, scale: str = "smoke", seed: int = 0, progress: ProgressFn = _no_progress) -> Evidence:
    """Seed, run ``claim_id`` (``"<paper>/<name>"``) at ``scale`` in this process and return its Evidence.

    Raises ``KeyError`` for an unknown claim and ``TypeError`` when the claim returns something else.
    """
    check_scale(scale)
    spec = find_claim(claim_id)
    seed_everything(seed)
    with tempfile.TemporaryDirectory(prefix="gradlab-claim-") as scratch:
        evidence = spec.fn(ClaimRun(seed=seed, scale=scale, scratch=Path(scratch), progress_fn=progress))
    if not isinstance(evidence, Evidence):
        raise TypeError(f"claim {claim_id} must return Evidence; got {type(evidence).__name__}")
    return evidence


def _numbers(value: object) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):  # how Evidence stores non-finite numbers
        return [float(value)]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    return []


def check_evidence(evidence: Evidence, required_metrics: tuple[str, ...] | set[str] = (), min_figures: int = 1,
                   allow_nonfinite: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Check that a claim's Evidence is well formed; return its figures as PNG bytes.

    Raises ``ValueError`` naming the problem when: a required metric is missing, a metric (other than those in
    ``allow_nonfinite``) is NaN/inf, there are fewer than ``min_figures`` figures, or a figure is not a PNG.
    Used by every claim's smoke test.
    """
    if not isinstance(evidence, Evidence):
        raise TypeError(f"evidence must be Evidence; got {type(evidence).__name__}")
    missing = set(required_metrics) - set(evidence.metrics)
    if missing:
        raise ValueError(f"evidence lacks metrics {sorted(missing)}")
    if not evidence.metrics:
        raise ValueError("evidence has no metrics")
    for name, value in evidence.metrics.items():
        if name in allow_nonfinite:
            continue
        if any(x != x or x in (float("inf"), float("-inf")) for x in _numbers(value)):
            raise ValueError(f"metric {name!r} is not finite: {value!r}")
    pngs = evidence.figure_pngs()
    if len(pngs) < min_figures:
        raise ValueError(f"evidence has {len(pngs)} figure(s); expected at least {min_figures}")
    for name, data in pngs.items():
        if not data.startswith(b"\x89PNG"):
            raise ValueError(f"figure {name!r} is not a PNG")
    return pngs
