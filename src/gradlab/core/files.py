"""Results on disk: atomic file writes and the checks of an SQLite store's path (shared by the claim result
store, the benchmark store and the pages both write)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["check_store_path", "write_atomic"]

_SQLITE_HEADER = b"SQLite format 3\x00"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` so that readers see the old file or the whole new one,
    never a partial one: a temporary file in the same directory, flushed to disk, then ``os.replace``; on any
    error the temporary file is removed and ``path`` is untouched.

    The file gets the mode a plain ``open(path, "w")`` would give it: an existing file keeps its mode, a new one
    gets ``0o666 & ~umask`` (``mkstemp`` alone would leave every file ``0600``). Missing parent directories are
    created.
    """
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def check_store_path(path: Path, *, create: bool, error: type[Exception], noun: str, missing_hint: str) -> None:
    """Refuse, with ``error`` (a ``ValueError`` subclass of the caller's), a store path that cannot be an SQLite
    store before anything is opened or created: a directory, a path under a file, a missing file when
    ``create`` is false (``"no {noun} at {path} ({missing_hint})"``), or a non-empty file without SQLite's header."""
    if path.is_dir():
        raise error(f"store path must be a file, not a directory: {path}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise error(f"store path lies under a file, not a directory: {parent}")
            break
    if not path.exists() and not create:
        raise error(f"no {noun} at {path} ({missing_hint})")
    if path.exists() and path.stat().st_size > 0:
        with open(path, "rb") as fh:
            if fh.read(len(_SQLITE_HEADER)) != _SQLITE_HEADER:
                raise error(f"{path} is not an SQLite {noun}")
