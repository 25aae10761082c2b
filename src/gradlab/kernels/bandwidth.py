"""Memory-bandwidth references and interleaved timing for the softmax kernels (arXiv 2001.04438, Sec. on the
physical limit).

A softmax kernel is bandwidth-bound when it takes no longer than the streaming sweeps that move the same bytes.
For the two-pass kernel (pass 1 reads x, pass 2 reads x and writes y) the floor is
``t_read + t_scale``: one read sweep (:func:`stream_read`, ``sum(x)``) plus one read-and-write sweep
(:func:`stream_scale`, ``y = c x``), both measured in the same process, interleaved with the kernels, so that
``fraction = (t_read + t_scale) / t_two_pass`` is the share of the bandwidth available *at that moment* that the
kernel reaches (1 = bandwidth-bound). On a shared machine absolute GB/s move by 2x within minutes; ratios of
interleaved medians do not.

:func:`cache_sizes` reads the cache hierarchy from ``/sys/devices/system/cpu/cpu0/cache`` (Linux), falling back to
``lscpu``; :func:`interleaved_times` runs callables round-robin (rotating the order every round) and records
per-call thread CPU time and wall time.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from gradlab.core.validation import check_int

__all__ = ["cache_sizes", "last_level_cache", "stream_read", "stream_scale", "stream_scale_inplace", "Timings",
           "interleaved_times"]

_SYS_CACHE = Path("/sys/devices/system/cpu/cpu0/cache")
DEFAULT_LLC_BYTES = 32 * 2**20
"""Last-level cache assumed when the machine does not say (32 MiB: larger than most desktop/server L3 slices)."""


def _parse_size(text: str) -> int | None:
    m = re.search(r"([\d.]+)\s*([KMG]i?B?|[KMG])?", text.strip(), flags=re.IGNORECASE)
    if not m:
        return None
    value = float(m.group(1))
    unit = (m.group(2) or "").upper()[:1]
    return int(value * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[unit])


def _sysfs_caches(root: Path) -> dict[int, int]:
    sizes: dict[int, int] = {}
    for index in sorted(root.glob("index*")):
        try:
            kind = (index / "type").read_text().strip()
            level = int((index / "level").read_text().strip())
            size = _parse_size((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or size is None:
            continue
        sizes[level] = max(size, sizes.get(level, 0))
    return sizes


def _lscpu_caches() -> dict[int, int]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    sizes: dict[int, int] = {}
    for line in text.splitlines():
        m = re.match(r"\s*L(\d)d?\s+cache:\s*(.+)", line)
        if m and "L1i" not in line:
            total = _parse_size(m.group(2))
            inst = re.search(r"\((\d+) instances?\)", m.group(2))
            if total is not None:
                per = total // int(inst.group(1)) if inst and int(m.group(1)) < 3 else total
                sizes[int(m.group(1))] = per
    return sizes


def cache_sizes(sysfs_root: str | Path = _SYS_CACHE) -> tuple[dict[int, int], str]:
    """Data/unified cache size in bytes per level as seen by CPU 0, and where it came from.

    Returns ``({1: ..., 2: ..., 3: ...}, source)`` with source ``"sysfs"``, ``"lscpu"`` or ``"none"`` (empty dict).
    """
    sizes = _sysfs_caches(Path(sysfs_root))
    if sizes:
        return sizes, "sysfs"
    sizes = _lscpu_caches()
    if sizes:
        return sizes, "lscpu"
    return {}, "none"


def last_level_cache(sysfs_root: str | Path = _SYS_CACHE) -> tuple[int, str]:
    """Size in bytes of the last-level cache and its source (``DEFAULT_LLC_BYTES`` and ``"default"`` if unknown)."""
    sizes, source = cache_sizes(sysfs_root)
    if not sizes:
        return DEFAULT_LLC_BYTES, "default"
    return sizes[max(sizes)], source


def _check_f32_vector(name: str, a: object) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray; got {type(a).__name__}")
    if a.dtype != np.float32 or a.ndim != 1 or not a.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous 1-D float32 array; got {a.dtype} with shape {a.shape}")
    return a


def _kernels():
    from gradlab.kernels.softmax import _numba_module

    return _numba_module()


def stream_read(x: np.ndarray) -> float:
    """``sum(x)``: one streaming read of ``x`` (4 bytes per element)."""
    return float(_kernels().read_sum(_check_f32_vector("x", x)))


def stream_scale(x: np.ndarray, y: np.ndarray, c: float = 0.5) -> None:
    """``y = c * x``: one read and one write per element (8 bytes, 12 with write-allocate)."""
    _check_f32_vector("x", x)
    _check_f32_vector("y", y)
    if x.shape != y.shape:
        raise ValueError(f"y must have the shape of x {x.shape}; got {y.shape}")
    _kernels().scale_into(x, y, np.float32(c))


def stream_scale_inplace(y: np.ndarray, c: float = 0.5) -> None:
    """``y *= c``: one read and one write of ``y`` (the third pass of the reloading softmax)."""
    _kernels().scale_inplace(_check_f32_vector("y", y), np.float32(c))


@dataclass(frozen=True)
class Timings:
    """Per-call seconds of each callable in every round: ``cpu[name]`` (thread CPU time) and ``wall[name]``."""

    cpu: dict[str, np.ndarray]
    wall: dict[str, np.ndarray]

    def median(self, name: str, clock: str = "cpu") -> float:
        return float(np.median((self.cpu if clock == "cpu" else self.wall)[name]))


def interleaved_times(fns: Mapping[str, Callable[[], object]], rounds: int, repeats: int = 1,
                      warmup: bool = True) -> Timings:
    """Run every callable ``repeats`` times per round, round-robin over ``rounds`` rounds (the starting callable
    rotates each round), and record per-call thread CPU time and wall time.
    """
    check_int("rounds", rounds, minimum=1)
    check_int("repeats", repeats, minimum=1)
    if not fns:
        raise ValueError("fns must hold at least one callable")
    names = list(fns)
    if warmup:
        for name in names:
            fns[name]()
    cpu = {n: np.empty(rounds) for n in names}
    wall = {n: np.empty(rounds) for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            fn = fns[name]
            c0, t0 = time.thread_time(), time.perf_counter()
            for _ in range(repeats):
                fn()
            t1, c1 = time.perf_counter(), time.thread_time()
            cpu[name][r] = (c1 - c0) / repeats
            wall[name][r] = (t1 - t0) / repeats
    return Timings(cpu=cpu, wall=wall)
