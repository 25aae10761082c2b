"""The value types of the claim framework: ``Paper``, ``ClaimSpec``, ``ClaimRun`` and ``Evidence``.

A *paper* (one per seed paper) owns zero or more *claims*. A claim is a function
``fn(run: ClaimRun) -> Evidence`` whose verdict is computed from measured numbers against a criterion
that is fixed in the code before the run (see DESIGN.md, "The claim framework").
"""

from __future__ import annotations

import io
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

SCALES: tuple[str, ...] = ("smoke", "quick", "full")
"""Run sizes. ``smoke`` proves the code path (seconds); ``quick`` and ``full`` produce evidence."""

EVIDENCE_SCALES: tuple[str, ...] = ("quick", "full")

CLUSTERS: tuple[str, ...] = (
    "optim",
    "curvature",
    "training",
    "explain",
    "incontext",
    "dynamics",
    "operators",
    "numerics",
    "generative",
)

DEFAULT_TIMEOUTS: dict[str, float] = {"smoke": 180.0, "quick": 900.0, "full": 7200.0}
"""Wall-clock limit per claim and scale, in seconds (a claim may override it)."""


def check_scale(scale: str) -> str:
    """Return ``scale`` if it is one of :data:`SCALES`, else raise ``ValueError``."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
    return scale


@dataclass(frozen=True)
class Paper:
    """Metadata of one seed paper.

    Attributes:
        key: the name used by the CLI, the store and the report (``lr-batch-rmt``).
        title: the paper's full title.
        cluster: one of ``CLUSTERS``.
        arxiv: the arXiv identifier where known (``"2302.06675"``), else ``None``.
        components: dotted module paths of the library code the claims exercise; their source enters the
            code fingerprint, so evidence is rerun when they change.
        short_title: a few words for tables.
        statement: the paper's central statement in one sentence (what the claims check), shown first in
            the report.
        revisions: the criterion history: every change of a claim's criterion or statistic made after a
            result was seen (:class:`Revision`), printed under the claim in the report.
    """

    key: str
    title: str
    cluster: str
    arxiv: str | None = None
    components: tuple[str, ...] = ()
    short_title: str = ""
    statement: str = ""
    revisions: tuple["Revision", ...] = ()

    def __post_init__(self) -> None:
        if not self.key or self.key != self.key.strip().lower() or " " in self.key:
            raise ValueError(f"Paper.key must be a lower-case identifier without spaces; got {self.key!r}")
        if self.cluster not in CLUSTERS:
            raise ValueError(f"Paper.cluster must be one of {CLUSTERS}; got {self.cluster!r}")
        object.__setattr__(self, "components", tuple(self.components))
        if not isinstance(self.statement, str):
            raise TypeError(f"Paper.statement must be a string; got {type(self.statement).__name__}")
        revisions = tuple(self.revisions)
        for r in revisions:
            if not isinstance(r, Revision):
                raise TypeError(f"Paper.revisions must hold Revision objects; got {type(r).__name__}")
        object.__setattr__(self, "revisions", revisions)
        if not self.short_title:
            object.__setattr__(self, "short_title", self.title.split(":")[0][:60])

    @property
    def module_name(self) -> str:
        """The module that holds this paper's metadata and claims."""
        return "gradlab.papers." + self.key.replace("-", "_")


@dataclass(frozen=True)
class Revision:
    """One entry of a claim's criterion history.

    A criterion or statistic may change after a result was seen only to make it match the paper's statement
    or to fix a statistical flaw, never to pass; each such change is recorded here and printed in the report.

    Attributes:
        claim: the claim's name within its paper (``"lst_reaches_target_keeping_confidence"``).
        date: ISO date of the change (``"2026-12-01"``).
        old: the criterion before the change.
        new: the criterion after the change.
        reason: why it changed (which statement of the paper, which statistical flaw).
        old_result: what the last result was under the old criterion (numbers and verdict).
    """

    claim: str
    date: str
    old: str
    new: str
    reason: str
    old_result: str = ""

    def __post_init__(self) -> None:
        for name in ("claim", "date", "old", "new", "reason"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Revision.{name} must be a non-empty string; got {value!r}")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", self.date):
            raise ValueError(f"Revision.date must be an ISO date YYYY-MM-DD; got {self.date!r}")


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": lambda v, b: v <= b,
    "<": lambda v, b: v < b,
    ">=": lambda v, b: v >= b,
    ">": lambda v, b: v > b,
}


@dataclass(frozen=True)
class Check:
    """One decisive number beside its threshold: ``Check("distance ratio", 0.19, "<=", 0.25)``.

    Used for the headline numbers of a claim (``Evidence.headline``) and for preconditions
    (``Evidence.preconditions``). ``ok`` is the comparison; ``margin`` is the signed distance to the threshold
    on a common scale (relative to ``max(|bound|, |value|, 1e-12)``), positive when the check holds, so the report
    can draw every claim's margin on one axis.
    """

    label: str
    value: float
    op: str
    bound: float

    def __post_init__(self) -> None:
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"Check.label must be a non-empty string; got {self.label!r}")
        if self.op not in _OPS:
            raise ValueError(f"Check.op must be one of {tuple(_OPS)}; got {self.op!r}")
        for name in ("value", "bound"):
            v = getattr(self, name)
            if hasattr(v, "item") and getattr(v, "ndim", 0) == 0:
                v = v.item()
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise TypeError(f"Check.{name} must be a real number; got {type(v).__name__}")
            object.__setattr__(self, name, float(v))

    @property
    def ok(self) -> bool:
        """Whether ``value op bound`` holds (NaN never holds)."""
        if math.isnan(self.value) or math.isnan(self.bound):
            return False
        return bool(_OPS[self.op](self.value, self.bound))

    @property
    def margin(self) -> float:
        """Signed relative distance to the threshold, > 0 when the check holds (clipped to [-1, 1])."""
        if math.isnan(self.value) or math.isnan(self.bound):
            return float("nan")
        if math.isinf(self.value):
            return 1.0 if self.ok else -1.0
        scale = max(abs(self.bound), abs(self.value), 1e-12)
        d = (self.bound - self.value) if self.op in ("<=", "<") else (self.value - self.bound)
        m = d / scale
        if m == 0.0:
            m = 0.0 if self.ok else -0.0
        return max(-1.0, min(1.0, m))

    def __str__(self) -> str:
        return f"{self.label} {_fmt(self.value)} {self.op} {_fmt(self.bound)}"

    def to_json(self) -> dict[str, Any]:
        return {"label": self.label, "value": _to_jsonable(self.value, self.label), "op": self.op,
                "bound": _to_jsonable(self.bound, self.label), "ok": self.ok}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Check":
        return cls(str(d["label"]), float(d["value"]), str(d["op"]), float(d["bound"]))


def _fmt(x: float) -> str:
    if math.isfinite(x) and x == int(x) and abs(x) < 1e6:
        return str(int(x))
    return f"{x:.4g}"


@dataclass(frozen=True, eq=False)
class Setup:
    """A shared, cached build step that several claims need (e.g. a model trained once and cached on disk).

    ``fn(run)`` builds (or finds in its cache) what the claims need and returns nothing; it must be idempotent,
    because a claim still calls the same loaders itself and a setup that failed is simply not waited for. The
    runner runs each needed setup once per (scale, seed), before the claims that need it, in a worker of its
    own, so that two claims sharing one expensive build do not both hold a worker while one trains and the other
    waits on the cache lock, and the other workers run independent claims meanwhile. ``module``/``attr`` locate
    this object for the worker process (``getattr(import_module(module), attr)``).
    """

    name: str
    fn: Callable[["ClaimRun"], None]
    module: str
    attr: str
    needs: tuple["Setup", ...] = ()
    timeouts: Mapping[str, float] = field(default_factory=dict)

    def timeout(self, scale: str) -> float:
        """Wall-clock limit in seconds for ``scale``."""
        return float(self.timeouts.get(scale, DEFAULT_TIMEOUTS[check_scale(scale)]))

    def closure(self) -> list["Setup"]:
        """This setup and everything it needs, dependencies first."""
        return setup_closure((self,))


def setup_closure(setups: "tuple[Setup, ...] | list[Setup]") -> list[Setup]:
    """``setups`` and their transitive needs, each once, every setup after the ones it needs."""
    out: list[Setup] = []

    def visit(s: Setup, path: tuple[str, ...]) -> None:
        if s.name in path:
            raise ValueError(f"setup dependency cycle: {' -> '.join((*path, s.name))}")
        if any(o is s for o in out):
            return
        for dep in s.needs:
            visit(dep, (*path, s.name))
        out.append(s)

    for s in setups:
        visit(s, ())
    return out


@dataclass(frozen=True)
class ClaimSpec:
    """A registered claim: the function and how to run it."""

    paper: str
    name: str
    title: str
    fn: Callable[["ClaimRun"], "Evidence"]
    module: str
    budget: str = "quick"
    timeouts: Mapping[str, float] = field(default_factory=dict)
    needs: tuple[Setup, ...] = ()

    @property
    def id(self) -> str:
        """Globally unique id ``<paper>/<name>``."""
        return f"{self.paper}/{self.name}"

    def timeout(self, scale: str) -> float:
        """Wall-clock limit in seconds for ``scale``."""
        return float(self.timeouts.get(scale, DEFAULT_TIMEOUTS[check_scale(scale)]))


ProgressFn = Callable[[float, str], None]


def _no_progress(fraction: float, message: str = "") -> None:
    return None


@dataclass
class ClaimRun:
    """What a claim function receives.

    Attributes:
        seed: seed for every random source (already applied with :func:`gradlab.core.seed_everything`).
        scale: ``smoke`` | ``quick`` | ``full``.
        scratch: a private, empty directory that is removed after the run.
        progress_fn: reports ``(fraction in [0, 1], message)`` to the driver's progress bar.
    """

    seed: int
    scale: str
    scratch: Path
    progress_fn: ProgressFn = _no_progress

    def __post_init__(self) -> None:
        check_scale(self.scale)
        self.scratch = Path(self.scratch)

    def progress(self, fraction: float, message: str = "") -> None:
        """Report progress; ``fraction`` is clipped to [0, 1]."""
        f = float(fraction)
        if math.isnan(f):
            f = 0.0
        self.progress_fn(min(1.0, max(0.0, f)), str(message))

    def pick(self, smoke: Any, quick: Any, full: Any | None = None) -> Any:
        """Choose a size by scale: ``n = run.pick(smoke=50, quick=2000, full=20000)`` (full defaults to quick)."""
        if self.scale == "smoke":
            return smoke
        if self.scale == "quick" or full is None:
            return quick
        return full

    def seeds(self, n: int) -> tuple[int, ...]:
        """``n`` distinct seeds derived from :attr:`seed` (the first is ``seed`` itself), for claims decided
        on a CI over seeds: ``for s in run.seeds(run.pick(smoke=2, quick=5)): seed_everything(s); ...``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int; got {n!r}")
        return tuple(self.seed + 1009 * i for i in range(n))

    @property
    def is_evidence(self) -> bool:
        """Whether this scale's results count as evidence (``quick`` and ``full``)."""
        return self.scale in EVIDENCE_SCALES


def _to_jsonable(value: Any, where: str) -> Any:
    """Convert metrics to JSON-safe values (numpy/torch scalars, tuples); NaN/inf become strings."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    if isinstance(value, Mapping):
        return {str(k): _to_jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "tolist"):
        return _to_jsonable(value.tolist(), where)
    raise TypeError(f"Evidence metric {where!r} must be a number, string, bool, list or dict; got {type(value).__name__}")


VERDICTS: tuple[str, ...] = ("passed", "failed", "inconclusive")


@dataclass
class Evidence:
    """What a claim returns: the measured numbers, the criterion, the computed verdict and figures.

    ``passed`` must be computed from ``metrics`` by the claim (never a literal). ``figures`` maps a name to a
    matplotlib ``Figure``, PNG ``bytes`` or a path to a PNG file; the runner stores them as PNG files.

    ``preconditions`` maps a name to a bool or a :class:`Check`: what must hold for the experiment to be able
    to test the statement at all (the model learned, the methods' outputs differ, the rule under test was
    exercised). If any precondition fails the verdict is ``inconclusive`` whatever ``passed`` says; the report
    names the failed precondition with its numbers. ``headline`` lists the one to three decisive numbers beside
    their thresholds (:class:`Check`), shown first in the report.
    """

    metrics: dict[str, Any]
    criterion: str
    passed: bool
    figures: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    preconditions: dict[str, Any] = field(default_factory=dict)
    headline: tuple[Check, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.metrics, Mapping):
            raise TypeError(f"Evidence.metrics must be a dict; got {type(self.metrics).__name__}")
        if not isinstance(self.criterion, str) or not self.criterion.strip():
            raise ValueError("Evidence.criterion must be a non-empty string stating the pass rule")
        passed = self.passed
        if hasattr(passed, "item") and not isinstance(passed, bool):
            passed = passed.item()
        if not isinstance(passed, bool):
            raise TypeError(f"Evidence.passed must be a bool; got {type(self.passed).__name__}")
        self.passed = passed
        self.metrics = {str(k): _to_jsonable(v, str(k)) for k, v in self.metrics.items()}
        if not isinstance(self.figures, Mapping):
            raise TypeError("Evidence.figures must be a dict name -> Figure | bytes | path")
        self.figures = dict(self.figures)
        if not isinstance(self.preconditions, Mapping):
            raise TypeError("Evidence.preconditions must be a dict name -> bool | Check")
        pre: dict[str, Any] = {}
        for name, cond in self.preconditions.items():
            if hasattr(cond, "item") and not isinstance(cond, (bool, Check)):
                cond = cond.item()
            if not isinstance(cond, (bool, Check)):
                raise TypeError(f"Evidence.preconditions[{name!r}] must be a bool or a Check; got {type(cond).__name__}")
            pre[str(name)] = cond
        self.preconditions = pre
        headline = tuple(self.headline) if not isinstance(self.headline, Check) else (self.headline,)
        for h in headline:
            if not isinstance(h, Check):
                raise TypeError(f"Evidence.headline must hold Check objects; got {type(h).__name__}")
        self.headline = headline

    @property
    def failed_preconditions(self) -> list[str]:
        """Names of the preconditions that do not hold."""
        return [n for n, c in self.preconditions.items() if not (c.ok if isinstance(c, Check) else c)]

    @property
    def verdict(self) -> str:
        """``inconclusive`` if a precondition failed, else ``passed`` or ``failed``."""
        if self.failed_preconditions:
            return "inconclusive"
        return "passed" if self.passed else "failed"

    def preconditions_json(self) -> dict[str, Any]:
        """Preconditions as JSON: ``{name: {"ok": bool, "check": {...} | None}}``."""
        out: dict[str, Any] = {}
        for n, c in self.preconditions.items():
            if isinstance(c, Check):
                out[n] = {"ok": c.ok, "check": c.to_json()}
            else:
                out[n] = {"ok": bool(c), "check": None}
        return out

    def figure_pngs(self, dpi: int = 110) -> dict[str, bytes]:
        """Render every figure to PNG bytes (closing matplotlib figures afterwards)."""
        out: dict[str, bytes] = {}
        for name, fig in self.figures.items():
            if isinstance(fig, (bytes, bytearray)):
                out[name] = bytes(fig)
            elif isinstance(fig, (str, Path)):
                out[name] = Path(fig).read_bytes()
            elif hasattr(fig, "savefig"):
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
                out[name] = buf.getvalue()
                try:
                    import matplotlib.pyplot as plt

                    plt.close(fig)
                except Exception:  # pragma: no cover - closing is best effort
                    pass
            else:
                raise TypeError(f"figure {name!r} must be a matplotlib Figure, PNG bytes or a path; got {type(fig).__name__}")
        return out
