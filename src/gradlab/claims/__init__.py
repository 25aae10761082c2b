"""The claim framework: papers, claims, runs, evidence, the runner, the result store and the report."""

from gradlab.claims.registry import Registry, claim, load_registry, setup
from gradlab.claims.stats import Interval, bootstrap_ci, paired_bootstrap_ci, resolution_check
from gradlab.claims.types import SCALES, VERDICTS, Check, ClaimRun, ClaimSpec, Evidence, Paper, Revision, Setup

__all__ = ["SCALES", "VERDICTS", "Check", "ClaimRun", "ClaimSpec", "Evidence", "Interval", "Paper", "Registry",
           "Revision", "Setup", "bootstrap_ci", "claim", "load_registry", "paired_bootstrap_ci", "resolution_check",
           "setup"]
