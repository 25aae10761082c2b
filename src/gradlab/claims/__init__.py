"""The claim framework: papers, claims, runs, evidence, the runner, the result store and the report."""

from gradlab.claims.registry import Registry, claim, load_registry
from gradlab.claims.types import SCALES, ClaimRun, ClaimSpec, Evidence, Paper

__all__ = ["SCALES", "ClaimRun", "ClaimSpec", "Evidence", "Paper", "Registry", "claim", "load_registry"]
