"""The value types of the claim framework: ``Paper``, ``ClaimSpec``, ``ClaimRun`` and ``Evidence``.

A *paper* (one per seed paper) owns zero or more *claims*. A claim is a function
``fn(run: ClaimRun) -> Evidence`` whose verdict is computed from measured numbers against a criterion
that is fixed in the code before the run (see DESIGN.md, "The claim framework").
"""

from __future__ import annotations

import io
import math
import numbers
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
        cluster: one of :data:`CLUSTERS`.
        arxiv: the arXiv identifier where known (``"2302.06675"``), else ``None``.
        components: dotted module paths of the library code the claims exercise; their source enters the
            code fingerprint, so evidence is rerun when they change.
        short_title: a few words for tables.
    """

    key: str
    title: str
    cluster: str
    arxiv: str | None = None
    components: tuple[str, ...] = ()
    short_title: str = ""

    def __post_init__(self) -> None:
        if not self.key or self.key != self.key.strip().lower() or " " in self.key:
            raise ValueError(f"Paper.key must be a lower-case identifier without spaces; got {self.key!r}")
        if self.cluster not in CLUSTERS:
            raise ValueError(f"Paper.cluster must be one of {CLUSTERS}; got {self.cluster!r}")
        object.__setattr__(self, "components", tuple(self.components))
        if not self.short_title:
            object.__setattr__(self, "short_title", self.title.split(":")[0][:60])

    @property
    def module_name(self) -> str:
        """The module that holds this paper's metadata and claims."""
        return "gradlab.papers." + self.key.replace("-", "_")


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


@dataclass
class Evidence:
    """What a claim returns: the measured numbers, the criterion, the computed verdict and figures.

    ``passed`` must be computed from ``metrics`` by the claim (never a literal). ``figures`` maps a name to a
    matplotlib ``Figure``, PNG ``bytes`` or a path to a PNG file; the runner stores them as PNG files.
    """

    metrics: dict[str, Any]
    criterion: str
    passed: bool
    figures: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

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
