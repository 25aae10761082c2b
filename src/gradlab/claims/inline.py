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
