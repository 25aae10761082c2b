"""The reproduction report: ``index.html``, ``REPORT.md`` and ``results.json`` from one data model.

One row per paper, always all of them: a paper without claims is shown as *not implemented*, a claim without
a result for the current code as *not run*. Only ``quick``/``full`` results count as evidence; a paper whose
claims ran only at ``smoke`` scale is reported as not run.

A row leads with what the paper states (``Paper.statement``), the verdict and the decisive numbers beside their
thresholds (``Evidence.headline``); a claim whose experiment could not test the statement (a failed
precondition) is *inconclusive* and names the precondition with its numbers. The criterion history
(``Paper.revisions``) is printed under each claim. The pages are rendered from jinja2 templates in
``gradlab/claims/templates`` (HTML autoescaped); figures are copied next to the report and linked, and every
figure is verified to be a whole PNG: a damaged or missing one is reported, not silently dropped.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import struct
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradlab.claims.environment import distinct_environments, environment_label
from gradlab.claims.fingerprint import paper_fingerprint
from gradlab.claims.registry import PaperEntry, Registry
from gradlab.claims.store import ResultRow, ResultStore
from gradlab.core.files import write_atomic
from gradlab.claims.types import CLUSTERS, EVIDENCE_SCALES, Check

PAPER_STATUSES = ("reproduced", "partial", "not reproduced", "inconclusive", "error", "not run", "not implemented")
CLAIM_STATUSES = ("passed", "failed", "inconclusive", "error", "timeout", "not run")
_BADGE_COLOURS = {
    "reproduced": "#1a7f37", "passed": "#1a7f37", "partial": "#9a6700", "not reproduced": "#cf222e",
    "failed": "#cf222e", "inconclusive": "#0969da", "error": "#8250df", "timeout": "#8250df",
    "not run": "#6e7781", "not implemented": "#afb8c1",
}
README_START = "<!-- gradlab:report:start -->"
README_END = "<!-- gradlab:report:end -->"


@dataclass
class ClaimLine:
    """A claim as the report shows it: its spec and the result it uses (``None`` = not run)."""

    claim_id: str
    title: str
    row: ResultRow | None
    note: str = ""

    @property
    def status(self) -> str:
        return "not run" if self.row is None else self.row.status

    @property
    def name(self) -> str:
        return self.claim_id.split("/", 1)[1]


@dataclass
class PaperLine:
    entry: PaperEntry
    claims: list[ClaimLine] = field(default_factory=list)

    @property
    def status(self) -> str:
        return paper_status(self.entry, [c.status for c in self.claims])

    @property
    def duration_s(self) -> float:
        return sum(c.row.duration_s for c in self.claims if c.row is not None)


def paper_status(entry: PaperEntry, claim_statuses: list[str]) -> str:
    """Aggregate claim statuses into one of ``PAPER_STATUSES``.

    A paper is *reproduced* only if every claim passed; inconclusive never counts as reproduced. Some passed and
    some not: *partial*. None passed: *error* if one raised or timed out, else *not reproduced* if one failed,
    else *inconclusive* if one was inconclusive, else *not run*.
    """
    if entry.import_error:
        return "error"
    if not claim_statuses:
        return "not implemented"
    n = len(claim_statuses)
    passed = claim_statuses.count("passed")
    if passed == n:
        return "reproduced"
    if passed > 0:
        return "partial"
    if any(s in ("error", "timeout") for s in claim_statuses):
        return "error"
    if "failed" in claim_statuses:
        return "not reproduced"
    if "inconclusive" in claim_statuses:
        return "inconclusive"
    return "not run"


def collect(registry: Registry, store: ResultStore) -> list[PaperLine]:
    """Pick, for every claim, the newest evidence-scale result for the current code fingerprint."""
    all_rows = list(store.rows())
    lines = []
    for entry in registry.papers.values():
        line = PaperLine(entry)
        if entry.import_error:
            lines.append(line)
            continue
        fp = paper_fingerprint(entry.paper, entry.module)
        for spec in entry.claims:
            mine = [r for r in all_rows if r.claim_id == spec.id]
            current = [r for r in mine if r.fingerprint == fp and r.scale in EVIDENCE_SCALES]
            note = ""
            if not current:
                if any(r.fingerprint == fp for r in mine):
                    note = "only a smoke-scale run exists (smoke proves the code path; it is not evidence)"
                elif mine:
                    note = "results exist only for older code (stale, not shown)"
            # Prefer full over quick, then the newest.
            current.sort(key=lambda r: (r.scale == "full", r.finished_at))
            line.claims.append(ClaimLine(spec.id, spec.title, current[-1] if current else None, note))
        lines.append(line)
    return lines


def format_value(value: Any) -> str:
    """Compact human formatting of a metric value."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0 or (1e-3 <= abs(value) < 1e5):
            return f"{value:.4g}"
        return f"{value:.3e}"
    if isinstance(value, list):
        shown = ", ".join(format_value(v) for v in value[:6])
        return f"[{shown}{', ...' if len(value) > 6 else ''}]"
    if isinstance(value, dict):
        return json.dumps(value)[:120]
    return str(value)


def headline_metrics(row: ResultRow, limit: int = 6) -> list[tuple[str, Any]]:
    """The metrics that decide the verdict: those named in the criterion (in order of mention), else the first."""
    scalars = {k: v for k, v in row.metrics.items() if not isinstance(v, (list, dict))}
    text = row.criterion
    named = []
    for key in scalars:
        match = re.search(r"(?<![A-Za-z0-9_])" + re.escape(key) + r"(?![A-Za-z0-9_])", text)
        if match:
            named.append((match.start(), key))
    keys = [k for _, k in sorted(named)] or list(scalars)
    return [(k, scalars[k]) for k in keys[:limit]]


def _fmt_time(seconds: float) -> str:
    if seconds <= 0 or math.isnan(seconds):
        return ""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


# ----------------------------------------------------------------------------------------------- figures
def png_problem(path: Path) -> str:
    """Return ``""`` if ``path`` is a whole PNG (signature, every chunk's CRC, an IEND chunk), else what is wrong."""
    if not path.exists():
        return "figure file is missing"
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "figure file is not a PNG"
    pos = 8
    while pos + 12 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if end > len(data):
            return "figure file is truncated"
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(data[pos + 4:end - 4]) & 0xFFFFFFFF != crc:
            return f"figure file is damaged (bad CRC in chunk {kind.decode('latin-1')!r})"
        if kind == b"IEND":
            return ""
        pos = end
    return "figure file is truncated"


# ----------------------------------------------------------------------------------------------- data model
def _checks(raw: list[dict[str, Any]]) -> list[Check]:
    out = []
    for d in raw:
        try:
            out.append(Check.from_json(d))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def _claim_data(line: PaperLine, c: ClaimLine, store: ResultStore, out_dir: Path) -> dict[str, Any]:
    paper = line.entry.paper
    d: dict[str, Any] = {"id": c.claim_id, "name": c.name, "title": c.title, "status": c.status, "note": c.note,
                         "revisions": [r.__dict__ for r in paper.revisions if r.claim == c.name]}
    row = c.row
    if row is None:
        d.update(headline=[], preconditions=[], failed_preconditions=[], criterion="", metrics={}, figures=[],
                 scale=None, seed=None, duration_s=0.0, time="", fingerprint=None, notes="", traceback="",
                 summary="", backend=None, margin=None, environment={}, environment_label="")
        return d
    headline = _checks(row.headline)
    pre = []
    for name, info in row.preconditions.items():
        chk = info.get("check") if isinstance(info, dict) else None
        check = Check.from_json(chk) if chk else None
        pre.append({"name": name, "ok": bool(info.get("ok")) if isinstance(info, dict) else bool(info),
                    "check": str(check) if check else ""})
    figures = []
    for name, rel in row.figures.items():
        src = store.figure_path(rel)
        problem = png_problem(src)
        if not problem:
            dest = out_dir / rel
            write_atomic(dest, src.read_bytes())
        figures.append({"name": name, "path": rel, "problem": problem})
    if headline:
        summary = "; ".join(f"{h} {'✓' if h.ok else '✗'}" for h in headline)
    else:
        summary = "; ".join(f"{k}={format_value(v)}" for k, v in headline_metrics(row, 4))
    margins = [h.margin for h in headline if not math.isnan(h.margin)]
    d.update(headline=[{"text": str(h), "ok": h.ok, "margin": h.margin, **h.to_json()} for h in headline],
             preconditions=pre, failed_preconditions=[p for p in pre if not p["ok"]], criterion=row.criterion,
             metrics={k: format_value(v) for k, v in row.metrics.items()}, raw_metrics=row.metrics, figures=figures,
             scale=row.scale, seed=row.seed, duration_s=row.duration_s, time=_fmt_time(row.duration_s),
             fingerprint=row.fingerprint, notes=row.notes, traceback=row.traceback, summary=summary,
             backend=row.backend, margin=min(margins) if margins else None,
             environment=row.environment, environment_label=environment_label(row.environment),
             figure_problems=[f"{f['name']}: {f['problem']}" for f in figures if f["problem"]])
    return d


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance() -> dict[str, Any]:
    """Versions and machine facts recorded with the results (gradlab, git commit, torch, Python, threads)."""
    import torch

    from gradlab import __version__

    return {"gradlab": __version__, "git_commit": _git_commit(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")}


def report_data(lines: list[PaperLine], store: ResultStore, out_dir: Path) -> dict[str, Any]:
    """The one data model rendered as HTML, Markdown and ``results.json``."""
    papers = []
    for line in lines:
        p = line.entry.paper
        claims = [_claim_data(line, c, store, out_dir) for c in line.claims]
        papers.append({
            "key": p.key, "title": p.title, "short_title": p.short_title, "cluster": p.cluster, "arxiv": p.arxiv,
            "statement": p.statement, "components": list(p.components), "status": line.status,
            "duration_s": line.duration_s, "time": _fmt_time(line.duration_s), "claims": claims,
            "import_error": line.entry.import_error or "",
        })
    counts = {s: sum(pp["status"] == s for pp in papers) for s in PAPER_STATUSES}
    envs = distinct_environments(c["environment"] for pp in papers for c in pp["claims"] if c["environment"])
    claim_counts = {s: sum(c["status"] == s for pp in papers for c in pp["claims"]) for s in CLAIM_STATUSES}
    return {"papers": papers, "counts": counts, "claim_counts": claim_counts,
            "summary": ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(papers)} papers)",
            "provenance": provenance(),
            "environments": [{**e, "label": environment_label(e)} for e in envs]}


# ----------------------------------------------------------------------------------------------- overview figure
def overview_figure(data: dict[str, Any]):
    """Claims by cluster and verdict (left) and every claim's margin to its threshold on one scale (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.7))
    ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    statuses = ("passed", "failed", "inconclusive", "error", "timeout", "not run")
    clusters = [c for c in CLUSTERS if any(p["cluster"] == c for p in data["papers"])]
    bottoms = [0] * len(clusters)
    for s in statuses:
        vals = [sum(cl["status"] == s for p in data["papers"] if p["cluster"] == c for cl in p["claims"])
                for c in clusters]
        if any(vals):
            ax1.barh(clusters, vals, left=bottoms, color=_BADGE_COLOURS[s], label=s)
            bottoms = [b + v for b, v in zip(bottoms, vals)]
    unimpl = [sum(p["status"] == "not implemented" for p in data["papers"] if p["cluster"] == c) for c in clusters]
    ax1.barh(clusters, unimpl, left=bottoms, color=_BADGE_COLOURS["not implemented"], label="paper not implemented")
    ax1.invert_yaxis()
    ax1.set_xlabel("claims (not-implemented papers count 1)")
    ax1.set_title("claims by cluster and verdict")
    # the legend goes under the axis, never on the bars (the longest bar reaches the axis' right edge)
    ax1.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=4, frameon=False)
    pts = [(p["key"] + "/" + c["name"], c["margin"], c["status"]) for p in data["papers"] for c in p["claims"]
           if c.get("margin") is not None]
    if pts:
        pts.sort(key=lambda t: t[1])
        ys = range(len(pts))
        ax2.scatter([m for _, m, _ in pts], list(ys), c=[_BADGE_COLOURS.get(s, "#6e7781") for *_, s in pts], s=18)
        ax2.set_yticks(list(ys))
        ax2.set_yticklabels([n for n, _, _ in pts], fontsize=6)
        ax2.axvline(0.0, color="k", lw=0.8)
        ax2.set_xlim(-1.05, 1.05)
    else:
        ax2.text(0.5, 0.5, "no headline checks recorded yet", ha="center", va="center", transform=ax2.transAxes)
    ax2.set_xlabel("margin to threshold (relative; > 0 holds)")
    ax2.set_title("closest headline check per claim")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- rendering
def _environment():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("gradlab.claims", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2"), default_for_string=False),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )
    env.filters["md"] = lambda t: str(t).replace("|", "\\|").replace("\n", " ")
    env.globals["colour"] = lambda s: _BADGE_COLOURS.get(s, "#6e7781")
    return env


def markdown_table(lines: list[PaperLine], data: dict[str, Any] | None = None) -> str:
    """The summary table in GitHub Markdown (one row per paper)."""
    if data is None:
        data = {"papers": [{"key": l.entry.paper.key, "short_title": l.entry.paper.short_title,
                            "cluster": l.entry.paper.cluster, "status": l.status, "statement": l.entry.paper.statement,
                            "time": _fmt_time(l.duration_s),
                            "claims": [{"name": c.name, "status": c.status,
                                        "summary": _row_summary(c.row), "time": _fmt_time(c.row.duration_s) if c.row else "",
                                        "failed_preconditions": _failed_pre(c.row)}
                                       for c in l.claims]} for l in lines]}
        counts = {s: sum(l.status == s for l in lines) for s in PAPER_STATUSES}
        data["summary"] = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(lines)} papers)"
        envs = distinct_environments(c.row.environment for l in lines for c in l.claims if c.row is not None)
        data["environments"] = [{**e, "label": environment_label(e)} for e in envs]
    return _environment().get_template("table.md.j2").render(**data).strip()


def _row_summary(row: ResultRow | None) -> str:
    if row is None:
        return ""
    headline = _checks(row.headline)
    if headline:
        return "; ".join(f"{h} {'✓' if h.ok else '✗'}" for h in headline)
    return "; ".join(f"{k}={format_value(v)}" for k, v in headline_metrics(row, 4))


def _failed_pre(row: ResultRow | None) -> list[dict[str, Any]]:
    if row is None:
        return []
    out = []
    for name, info in row.preconditions.items():
        if isinstance(info, dict) and not info.get("ok"):
            chk = info.get("check")
            out.append({"name": name, "check": str(Check.from_json(chk)) if chk else ""})
    return out


def build_report(registry: Registry, store: ResultStore, out_dir: str | Path) -> list[PaperLine]:
    """Write ``index.html``, ``REPORT.md``, ``results.json`` and the figures into ``out_dir``; return the lines."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"report directory {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    lines = collect(registry, store)
    data = report_data(lines, store, out)
    import io

    buf = io.BytesIO()
    overview_figure(data).savefig(buf, format="png", dpi=100, bbox_inches="tight")
    write_atomic(out / "overview.png", buf.getvalue())
    env = _environment()
    write_atomic(out / "index.html", env.get_template("report.html.j2").render(**data).encode())
    table = markdown_table(lines, data)
    write_atomic(out / "REPORT.md", env.get_template("report.md.j2").render(table=table, **data).encode())
    write_atomic(out / "results.json", json.dumps(data, indent=1, default=str).encode())
    return lines


def update_readme(readme: str | Path, lines: list[PaperLine]) -> bool:
    """Replace the table between the README's report markers; return whether the file changed."""
    path = Path(readme)
    text = path.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{path} has no {README_START} ... {README_END} block to update")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    new = f"{head}{README_START}\n{markdown_table(lines)}\n{README_END}{tail}"
    if new == text:
        return False
    write_atomic(path, new.encode())
    return True
