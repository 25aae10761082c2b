"""A content-keyed on-disk cache for artifacts that are expensive to build (trained tiny models).

``cached_artifact(name, recipe, build)`` returns the directory ``<cache>/<name>-<key>``, where ``key`` hashes the
JSON of ``recipe`` together with the source code of the module that defines ``build`` (so editing the training code
invalidates the artifact). The first caller builds it; everyone else reuses it:

* builders serialise on a per-key file lock (``fcntl.flock`` on ``<cache>/.<name>-<key>.lock``), so concurrent
  workers (processes or threads) build once;
* ``build`` writes into a fresh temporary directory next to the target, which is renamed into place only after
  ``build`` returned (``os.rename`` of a directory is atomic on POSIX), so a build that raises or is killed never
  leaves a half artifact under the final name; temporaries of killed builds are removed by the next builder.

The cache root is ``cache_dir`` if given, else ``$GRADLAB_CACHE``, else ``.gradlab/cache`` under the working
directory. Nothing here touches the network.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from gradlab.core.validation import check_type

__all__ = ["cache_root", "artifact_key", "cached_artifact"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$GRADLAB_CACHE``, else ``./.gradlab/cache``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("GRADLAB_CACHE")
    return Path(env) if env else Path.cwd() / ".gradlab" / "cache"


def _source_of(build: Callable[..., Any]) -> str:
    module = inspect.getmodule(build)
    try:
        return inspect.getsource(module) if module is not None else inspect.getsource(build)
    except (OSError, TypeError):  # built-in or interactively defined: fall back to the qualified name
        return f"{getattr(build, '__module__', '')}.{getattr(build, '__qualname__', repr(build))}"


def artifact_key(recipe: Mapping[str, Any], build: Callable[..., Any]) -> str:
    """The 16-hex-digit key of (``recipe``, source of ``build``'s module)."""
    try:
        blob = json.dumps(dict(recipe), sort_keys=True, separators=(",", ":"))
    except TypeError as exc:
        raise TypeError(f"recipe must be JSON-serialisable (str, int, float, bool, None, lists, dicts); {exc}") from exc
    h = hashlib.sha256()
    h.update(blob.encode())
    h.update(b"\0")
    h.update(_source_of(build).encode())
    return h.hexdigest()[:16]


def cached_artifact(name: str, recipe: Mapping[str, Any], build: Callable[[Path], None], *,
                    cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the directory of the artifact ``(name, recipe, build source)``, building it once if absent.

    Args:
        name: a file-name-safe label (letters, digits, ``_ . -``), the directory's prefix.
        recipe: JSON-serialisable settings that determine the artifact (steps, seed, sizes ...).
        build: ``build(tmp_dir)`` writes the artifact's files into ``tmp_dir`` (an existing empty directory).
        cache_dir: the cache root (see :func:`cache_root`).

    Returns:
        ``<root>/<name>-<key>``, a complete artifact.

    Raises:
        ValueError: ``name`` is not file-name-safe.
        TypeError: ``recipe`` is not a mapping of JSON values or ``build`` is not callable.
        Exception: whatever ``build`` raises (the temporary directory is removed first).
    """
    check_type("name", name, str)
    if not _NAME_RE.match(name):
        raise ValueError(f"name must be letters, digits, '_', '.', '-' (not starting with a dot); got {name!r}")
    check_type("recipe", recipe, Mapping)
    if not callable(build):
        raise TypeError(f"build must be callable as build(tmp_dir); got {type(build).__name__}")
    key = artifact_key(recipe, build)
    root = cache_root(cache_dir)
    final = root / f"{name}-{key}"
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp_prefix = f".tmp-{name}-{key}-"
    with open(root / f".{name}-{key}.lock", "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            if final.is_dir():  # another worker built it while we waited
                return final
            for stale in root.glob(tmp_prefix + "*"):  # left by a killed builder (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=root))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from other users
            try:
                build(tmp)
                (tmp / "recipe.json").write_text(json.dumps({"name": name, "key": key, "recipe": dict(recipe)},
                                                            sort_keys=True, indent=1))
                os.rename(tmp, final)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            return final
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
