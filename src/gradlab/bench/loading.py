"""Resolve workload and submission names: built-ins, ``package.module:attr`` paths and entry points.

A name is looked up, in order, among the built-ins, as ``module:attr`` (imported from the user's code; ``attr``
may be a dotted path), and in the entry-point groups ``gradlab.bench.submissions`` / ``gradlab.bench.workloads``
(a third-party package declares ``[project.entry-points."gradlab.bench.submissions"] mine = "pkg.mod:MySub"``).
The object found may be an instance or a zero-argument callable (a class or factory) returning one.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, Callable

from gradlab.bench.submission import Submission, builtin_submissions, check_submission
from gradlab.bench.workloads import BUILTIN_WORKLOADS, Workload

SUBMISSION_GROUP = "gradlab.bench.submissions"
WORKLOAD_GROUP = "gradlab.bench.workloads"


class UnknownNameError(ValueError):
    """A workload or submission name that resolves to nothing (the message lists the valid names)."""


def _entry_point_names(group: str) -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=group)}


def _import_path(path: str, kind: str) -> Any:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UnknownNameError(f"{kind} path {path!r} must look like package.module:attr")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise UnknownNameError(f"{kind} {path!r}: cannot import {module_name!r} ({err})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownNameError(f"{kind} {path!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _instantiate(obj: Any, is_instance: Callable[[Any], bool], kind: str, name: str) -> Any:
    if is_instance(obj):
        return obj
    if callable(obj):
        made = obj()
        if is_instance(made):
            return made
        obj = made
    raise TypeError(f"{kind} {name!r} resolved to {type(obj).__name__}, not a {kind}")


def _is_submission(obj: Any) -> bool:
    try:
        check_submission(obj)
    except TypeError:
        return False
    return not isinstance(obj, type)


def available_submissions() -> list[str]:
    """Built-in and entry-point submission names."""
    return list(builtin_submissions()) + sorted(_entry_point_names(SUBMISSION_GROUP))


def available_workloads() -> list[str]:
    """Built-in and entry-point workload names."""
    return list(BUILTIN_WORKLOADS) + sorted(_entry_point_names(WORKLOAD_GROUP))


def load_submission(name: str) -> Submission:
    """The submission called ``name`` (see the module docstring); ``UnknownNameError`` lists the valid names."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"submission name must be a non-empty string; got {name!r}")
    builtins = builtin_submissions()
    if name in builtins:
        return builtins[name]()
    if ":" in name:
        obj = _import_path(name, "submission")
    else:
        eps = _entry_point_names(SUBMISSION_GROUP)
        if name not in eps:
            raise UnknownNameError(f"unknown submission {name!r}; valid: {', '.join(available_submissions())} "
                                   "or package.module:attr")
        obj = eps[name].load()
    sub = _instantiate(obj, _is_submission, "submission", name)
    return check_submission(sub)


def load_workload(name: str) -> Workload:
    """The workload called ``name``; ``UnknownNameError`` lists the valid names."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"workload name must be a non-empty string; got {name!r}")
    if name in BUILTIN_WORKLOADS:
        return BUILTIN_WORKLOADS[name]()
    if ":" in name:
        obj = _import_path(name, "workload")
    else:
        eps = _entry_point_names(WORKLOAD_GROUP)
        if name not in eps:
            raise UnknownNameError(f"unknown workload {name!r}; valid: {', '.join(available_workloads())} "
                                   "or package.module:attr")
        obj = eps[name].load()
    wl = _instantiate(obj, lambda o: isinstance(o, Workload), "workload", name)
    if not wl.name:
        raise TypeError(f"workload {name!r} must set a non-empty 'name'")
    return wl
