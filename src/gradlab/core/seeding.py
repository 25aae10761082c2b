"""Deterministic seeding of every random source a claim or test touches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, deterministic: bool = False) -> torch.Generator:
    """Seed Python's ``random``, NumPy's global state and torch (CPU and CUDA).

    Args:
        seed: a non-negative integer.
        deterministic: also ask torch for deterministic algorithms (slower; raises on ops without one).

    Returns:
        A fresh ``torch.Generator`` seeded with ``seed``, for code that prefers an explicit generator.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative; got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed % (2**32))  # Python accepts [0, 2**32 - 1]; more kills subprocesses
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def numpy_rng(seed: int) -> np.random.Generator:
    """A NumPy ``Generator`` (PCG64) for ``seed``; prefer it over the global state in library code."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    return np.random.default_rng(int(seed))


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen
