"""Where a claim ran: the machine and library facts stored with each result.

A training-dependent number is reproducible for a seed only on the same arithmetic: the same CPU family (oneDNN
and BLAS pick kernels, and so the summation order, per instruction set), the same thread count (reductions split
differently) and the same library versions. Two runs of unchanged code with the same seeds on two machines can
therefore differ, and a verdict decided near its threshold can flip. Each result row records
:func:`run_environment` so that the report can say on what a number was measured and warn when the rows it shows
come from different environments (:func:`environment_label`, :func:`distinct_environments`).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from typing import Any, Iterable, Mapping

__all__ = ["cpu_model", "run_environment", "environment_label", "distinct_environments"]

_KEYS = ("cpu", "threads", "torch", "numpy", "python", "platform")
"""The facts that can change a computed number (the ones compared by :func:`distinct_environments`)."""


@lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform.processor()``), or ``"unknown"``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip() or "unknown"
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def run_environment(threads: int | None = None) -> dict[str, Any]:
    """The environment of the current process: CPU model, logical CPUs, compute threads (``threads``, else torch's
    current setting), torch / numpy / Python versions and the platform string. JSON-safe."""
    import numpy
    import torch

    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": int(threads) if threads is not None else int(torch.get_num_threads()),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def environment_label(env: Mapping[str, Any]) -> str:
    """One line for a report: ``"AMD EPYC 7B13, 1 thread, torch 2.14.1"`` (empty for an empty record)."""
    if not env:
        return ""
    threads = env.get("threads")
    parts = [str(env.get("cpu", "unknown CPU"))]
    if threads is not None:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    if env.get("torch"):
        parts.append(f"torch {env['torch']}")
    return ", ".join(parts)


def distinct_environments(envs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The different environments among ``envs`` (compared on the facts that change numbers; empty records, from
    stores written before environments were recorded, are skipped), in first-seen order."""
    seen: list[dict[str, Any]] = []
    keys: list[tuple] = []
    for env in envs:
        if not env:
            continue
        key = tuple(str(env.get(k)) for k in _KEYS)
        if key not in keys:
            keys.append(key)
            seen.append(dict(env))
    return seen
