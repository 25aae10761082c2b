"""The claim registry: the ``@claim`` decorator and discovery of paper modules.

Every paper module defines ``PAPER = Paper(...)`` and registers its claims with ``@claim(paper=PAPER.key, ...)``.
Paper modules are discovered through the ``gradlab.papers`` entry-point group (``importlib.metadata``): each
entry point names a paper module or a package whose public submodules are paper modules. gradlab's own seed
papers are registered that way (``gradlab = "gradlab.papers"`` in its ``pyproject.toml``), so a third-party
package adds papers by declaring an entry point in the same group and being installed::

    [project.entry-points."gradlab.papers"]
    my_papers = "my_package.papers"

Modules named in the comma-separated environment variable ``GRADLAB_EXTRA_PAPERS`` are added on top (an
override for quick experiments and test fixtures); worker processes and Ray workers, which re-import the
registry, see both.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import re
import traceback
from dataclasses import dataclass, field
from typing import Callable, Mapping

from gradlab.claims.types import SCALES, ClaimRun, ClaimSpec, Evidence, Paper, Setup, setup_closure

EXTRA_ENV = "GRADLAB_EXTRA_PAPERS"
ENTRY_POINT_GROUP = "gradlab.papers"

_CLAIMS: dict[str, ClaimSpec] = {}
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def claim(
    paper: str,
    title: str,
    name: str | None = None,
    budget: str = "quick",
    timeouts: Mapping[str, float] | None = None,
    needs: tuple[Setup, ...] = (),
) -> Callable[[Callable[[ClaimRun], Evidence]], Callable[[ClaimRun], Evidence]]:
    """Register ``fn(run: ClaimRun) -> Evidence`` as a claim of ``paper``.

    Args:
        paper: the paper key (``PAPER.key``).
        title: one sentence stating what is checked.
        name: the claim's short name (defaults to the function name, ``_`` kept).
        budget: the scale this claim is designed for (``quick`` unless it needs ``full``).
        timeouts: per-scale wall-clock overrides in seconds, e.g. ``{"quick": 1200}``.
        needs: :class:`~gradlab.claims.types.Setup` objects (made with :func:`setup`) the runner completes before
            starting this claim.
    """
    if budget not in SCALES:
        raise ValueError(f"budget must be one of {SCALES}; got {budget!r}")
    _check_timeouts(timeouts)
    needs = _check_needs(needs)

    def register(fn: Callable[[ClaimRun], Evidence]) -> Callable[[ClaimRun], Evidence]:
        claim_name = name or fn.__name__
        if not _NAME_RE.match(claim_name):
            raise ValueError(f"claim name must match {_NAME_RE.pattern}; got {claim_name!r}")
        spec = ClaimSpec(
            paper=paper, name=claim_name, title=title, fn=fn, module=fn.__module__,
            budget=budget, timeouts=dict(timeouts or {}), needs=needs,
        )
        existing = _CLAIMS.get(spec.id)
        if existing is not None and existing.module != spec.module:
            raise ValueError(f"claim {spec.id!r} is registered twice ({existing.module} and {spec.module})")
        _CLAIMS[spec.id] = spec
        return fn

    return register


def _check_timeouts(timeouts: Mapping[str, float] | None) -> None:
    for scale, seconds in (timeouts or {}).items():
        if scale not in SCALES or not float(seconds) > 0:
            raise ValueError(f"timeouts must map a scale in {SCALES} to a positive number; got {scale!r}: {seconds!r}")


def _check_needs(needs: object) -> tuple[Setup, ...]:
    if not isinstance(needs, (tuple, list)) or not all(isinstance(s, Setup) for s in needs):
        raise TypeError(f"needs must be a tuple of Setup objects (made with @setup); got {needs!r}")
    setup_closure(tuple(needs))  # raises on a cycle
    return tuple(needs)


def setup(
    name: str,
    needs: tuple[Setup, ...] = (),
    timeouts: Mapping[str, float] | None = None,
) -> Callable[[Callable[[ClaimRun], None]], Setup]:
    """Turn ``fn(run: ClaimRun) -> None`` into a :class:`~gradlab.claims.types.Setup` shared by claims.

    The decorated module attribute *is* the Setup (pass it to ``@claim(needs=(...))``); it must be defined at
    module level under the function's own name so a worker process can import it. ``fn`` builds and caches what
    the claims load (the claims still call the same cached loaders: a setup only moves the build earlier).

    Args:
        name: a unique name, e.g. ``"tiny-t2i"``.
        needs: setups this one builds on (run first).
        timeouts: per-scale wall-clock limits in seconds (defaults as for claims).
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"setup name must match {_NAME_RE.pattern}; got {name!r}")
    _check_timeouts(timeouts)
    needs = _check_needs(needs)

    def make(fn: Callable[[ClaimRun], None]) -> Setup:
        if "<" in fn.__qualname__ or "." in fn.__qualname__:
            raise ValueError(f"@setup must decorate a module-level function; got {fn.__qualname__!r}")
        return Setup(name=name, fn=fn, module=fn.__module__, attr=fn.__name__, needs=needs,
                     timeouts=dict(timeouts or {}))

    return make


@dataclass
class PaperEntry:
    """A paper as the registry sees it: its metadata, its claims, and an import error if any."""

    paper: Paper
    module: str
    claims: list[ClaimSpec] = field(default_factory=list)
    import_error: str | None = None

    @property
    def implemented(self) -> bool:
        return bool(self.claims)


@dataclass
class Registry:
    """All papers (ordered as in the package) and their claims."""

    papers: dict[str, PaperEntry]

    def claims(self, keys: list[str] | None = None) -> list[ClaimSpec]:
        """Claims of the given paper keys (all papers when ``None``), in paper order."""
        selected = self.papers if keys is None else {k: self.papers[k] for k in keys}
        return [c for entry in selected.values() for c in entry.claims]

    def claim(self, claim_id: str) -> ClaimSpec:
        paper = claim_id.split("/", 1)[0]
        for spec in self.papers[paper].claims:
            if spec.id == claim_id:
                return spec
        raise KeyError(claim_id)

    def resolve_keys(self, only: list[str] | None) -> list[str]:
        """Validate ``--only`` keys; raise ``ValueError`` naming the valid keys when one is unknown."""
        if not only:
            return list(self.papers)
        unknown = [k for k in only if k not in self.papers]
        if unknown:
            raise ValueError(
                f"unknown paper key(s): {', '.join(unknown)}. Valid keys: {', '.join(self.papers)}"
            )
        return [k for k in self.papers if k in set(only)]


def _expand(target: str) -> list[str]:
    """A paper module, or the public submodules of a package of paper modules."""
    spec = importlib.util.find_spec(target)
    if spec is None:
        raise ModuleNotFoundError(f"paper entry point names {target!r}, which cannot be imported")
    if spec.submodule_search_locations:
        names = sorted(m.name for m in pkgutil.iter_modules(spec.submodule_search_locations)
                       if not m.name.startswith("_"))
        return [f"{target}.{n}" for n in names]
    return [target]


def entry_point_targets() -> list[str]:
    """The values of the ``gradlab.papers`` entry points (gradlab's own first, then by name)."""
    from importlib.metadata import entry_points

    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name != "gradlab", ep.name))
    targets = [ep.value.split(":", 1)[0].strip() for ep in eps]
    if not targets:
        raise RuntimeError(f"no {ENTRY_POINT_GROUP!r} entry points found: gradlab is not installed "
                           "(run `pip install -e .` or `make test`)")
    return list(dict.fromkeys(targets))


def _paper_modules() -> list[str]:
    mods: list[str] = []
    for target in entry_point_targets():
        mods.extend(_expand(target))
    mods.extend(m.strip() for m in os.environ.get(EXTRA_ENV, "").split(",") if m.strip())
    return list(dict.fromkeys(mods))


def find_claim(claim_id: str) -> ClaimSpec:
    """The spec of ``claim_id`` importing only its paper's module (fast path for workers).

    Falls back to the full registry (plugins from ``GRADLAB_EXTRA_PAPERS``) when the paper is not a seed module.
    """
    paper = claim_id.split("/", 1)[0]
    for target in entry_point_targets():
        module_name = f"{target}.{paper.replace('-', '_')}"
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:  # target is a module, not a package
            found = False
        if found:
            importlib.import_module(module_name)
            spec = _CLAIMS.get(claim_id)
            if spec is not None and spec.module == module_name:
                return spec
    return load_registry().claim(claim_id)


def load_registry() -> Registry:
    """Import every paper module and return the registry.

    A paper module that fails to import is still listed (key from its module name) with the traceback,
    so a broken paper is reported, never hidden.
    """
    entries: dict[str, PaperEntry] = {}
    for module_name in _paper_modules():
        try:
            module = importlib.import_module(module_name)
        except Exception:
            key = module_name.rsplit(".", 1)[-1].replace("_", "-")
            placeholder = Paper(key=key, title=f"(module {module_name} failed to import)", cluster="optim")
            entries[key] = PaperEntry(paper=placeholder, module=module_name, import_error=traceback.format_exc())
            continue
        paper = getattr(module, "PAPER", None)
        if not isinstance(paper, Paper):
            raise TypeError(f"{module_name} must define PAPER = Paper(...)")
        if paper.key in entries:
            raise ValueError(f"paper key {paper.key!r} is defined twice ({entries[paper.key].module}, {module_name})")
        entries[paper.key] = PaperEntry(paper=paper, module=module_name)
    loaded = {entry.module for entry in entries.values()}
    for spec in _CLAIMS.values():
        if spec.module not in loaded:
            continue  # registered by a module that is not part of this registry (e.g. an unset plugin)
        if spec.paper not in entries:
            raise ValueError(f"claim {spec.id!r} names unknown paper {spec.paper!r}")
        entries[spec.paper].claims.append(spec)
    from gradlab.claims.types import CLUSTERS

    ordered = sorted(entries.values(), key=lambda e: (CLUSTERS.index(e.paper.cluster), e.paper.key))
    return Registry(papers={e.paper.key: e for e in ordered})
