"""The reproduction report: ``index.html`` (self-contained, figures inlined) and ``REPORT.md``.

One row per paper, always all of them: a paper without claims is shown as *not implemented*, a claim without
a result for the current code as *not run*. Only ``quick``/``full`` results count as evidence; a paper whose
claims ran only at ``smoke`` scale is reported as not run.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradlab.claims.fingerprint import paper_fingerprint
from gradlab.claims.registry import PaperEntry, Registry
from gradlab.claims.store import ResultRow, ResultStore, atomic_write_bytes
from gradlab.claims.types import EVIDENCE_SCALES

PAPER_STATUSES = ("reproduced", "partial", "not reproduced", "error", "not run", "not implemented")
_BADGE_COLOURS = {
    "reproduced": "#1a7f37", "partial": "#9a6700", "not reproduced": "#cf222e", "error": "#8250df",
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
    """Aggregate claim statuses (passed/failed/error/timeout/not run) into one of :data:`PAPER_STATUSES`."""
    if entry.import_error:
        return "error"
    if not claim_statuses:
        return "not implemented"
    n = len(claim_statuses)
    passed = claim_statuses.count("passed")
    failed = claim_statuses.count("failed")
    errored = sum(s in ("error", "timeout") for s in claim_statuses)
    if passed == n:
        return "reproduced"
    if passed > 0:
        return "partial"
    if errored > 0:
        return "error"
    if failed > 0:
        return "not reproduced"
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
                    note = "only a smoke-scale run exists (not evidence)"
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


def _metrics_summary(row: ResultRow | None, limit: int = 6) -> str:
    if row is None:
        return ""
    return "; ".join(f"{k}={format_value(v)}" for k, v in headline_metrics(row, limit))


def _fmt_time(seconds: float) -> str:
    if seconds <= 0 or math.isnan(seconds):
        return ""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def markdown_table(lines: list[PaperLine]) -> str:
    """The summary table in GitHub Markdown (one row per paper)."""
    out = ["| paper | cluster | status | criterion | measured | time |", "|---|---|---|---|---|---|"]
    for line in lines:
        p = line.entry.paper
        crit = "<br>".join(_md_escape(c.row.criterion) for c in line.claims if c.row is not None and c.row.criterion)
        measured = "<br>".join(
            f"{c.claim_id.split('/', 1)[1]}: {c.status}" + (f" ({_md_escape(_metrics_summary(c.row))})" if c.row else "")
            for c in line.claims
        )
        out.append(f"| `{p.key}` {_md_escape(p.short_title)} | {p.cluster} | **{line.status}** | {crit} | "
                   f"{measured} | {_fmt_time(line.duration_s)} |")
    counts = {s: sum(l.status == s for l in lines) for s in PAPER_STATUSES}
    out.append("")
    out.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(lines)} papers).")
    return "\n".join(out)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_markdown(lines: list[PaperLine], store: ResultStore, out_dir: Path) -> Path:
    parts = ["# gradlab reproduction report", "",
             "Status per seed paper. Only `quick`/`full` results for the current code count as evidence.", "",
             markdown_table(lines), ""]
    for line in lines:
        p = line.entry.paper
        parts += [f"## `{p.key}` — {p.title}", ""]
        if p.arxiv:
            parts += [f"arXiv: [{p.arxiv}](https://arxiv.org/abs/{p.arxiv}) · cluster: {p.cluster} · "
                      f"status: **{line.status}**", ""]
        if line.entry.import_error:
            parts += ["The paper module failed to import:", "", "```", line.entry.import_error.strip(), "```", ""]
        for c in line.claims:
            parts += [f"### {c.claim_id}: {c.title}", "", f"status: **{c.status}**" + (f" ({c.note})" if c.note else ""), ""]
            if c.row is None:
                continue
            parts += [f"criterion: `{c.row.criterion}`", "", f"scale {c.row.scale}, seed {c.row.seed}, "
                      f"{_fmt_time(c.row.duration_s)}, code {c.row.fingerprint}", ""]
            if c.row.metrics:
                parts += ["| metric | value |", "|---|---|"]
                parts += [f"| {k} | {_md_escape(format_value(v))} |" for k, v in c.row.metrics.items()]
                parts.append("")
            if c.row.notes:
                parts += [c.row.notes, ""]
            if c.row.traceback:
                parts += ["```", c.row.traceback.strip()[-3000:], "```", ""]
            for name, rel in c.row.figures.items():
                src = store.figure_path(rel)
                if src.exists():
                    dest = out_dir / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
                    parts += [f"![{name}]({rel})", ""]
    path = out_dir / "REPORT.md"
    atomic_write_bytes(path, "\n".join(parts).encode())
    return path


_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#1f2328}
table{border-collapse:collapse;width:100%;margin:1em 0;font-size:14px}th,td{border:1px solid #d0d7de;padding:6px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}.badge{color:#fff;border-radius:10px;padding:2px 8px;
font-size:12px;white-space:nowrap}code{background:#f6f8fa;padding:1px 4px;border-radius:4px}img{max-width:100%;
border:1px solid #d0d7de;margin:6px 0}pre{background:#f6f8fa;padding:8px;overflow-x:auto;font-size:12px}
section{border-top:2px solid #d0d7de;margin-top:2em}
"""


def _badge(status: str) -> str:
    colour = _BADGE_COLOURS.get(status, _BADGE_COLOURS["error"] if status in ("error", "timeout", "failed") else "#6e7781")
    if status == "passed":
        colour = _BADGE_COLOURS["reproduced"]
    elif status == "failed":
        colour = _BADGE_COLOURS["not reproduced"]
    return f'<span class="badge" style="background:{colour}">{html.escape(status)}</span>'


def write_html(lines: list[PaperLine], store: ResultStore, out_dir: Path) -> Path:
    e = html.escape
    rows = []
    for line in lines:
        p = line.entry.paper
        crit = "<br>".join(f"<code>{e(c.row.criterion)}</code>" for c in line.claims if c.row is not None)
        measured = "<br>".join(f"{e(c.claim_id.split('/', 1)[1])}: {_badge(c.status)} {e(_metrics_summary(c.row))}"
                               for c in line.claims)
        rows.append(f"<tr><td><a href='#{e(p.key)}'><code>{e(p.key)}</code></a> {e(p.short_title)}</td>"
                    f"<td>{e(p.cluster)}</td><td>{_badge(line.status)}</td><td>{crit}</td><td>{measured}</td>"
                    f"<td>{e(_fmt_time(line.duration_s))}</td></tr>")
    counts = {s: sum(l.status == s for l in lines) for s in PAPER_STATUSES}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    sections = []
    for line in lines:
        p = line.entry.paper
        body = [f"<section id='{e(p.key)}'><h2><code>{e(p.key)}</code> — {e(p.title)}</h2>",
                f"<p>{_badge(line.status)} cluster {e(p.cluster)}"
                + (f" · <a href='https://arxiv.org/abs/{e(p.arxiv)}'>arXiv {e(p.arxiv)}</a>" if p.arxiv else "") + "</p>"]
        if line.entry.import_error:
            body.append(f"<pre>{e(line.entry.import_error)}</pre>")
        if not line.claims and not line.entry.import_error:
            body.append("<p>No claims implemented yet.</p>")
        for c in line.claims:
            body.append(f"<h3>{e(c.claim_id)}: {e(c.title)}</h3><p>{_badge(c.status)} {e(c.note)}</p>")
            if c.row is None:
                continue
            body.append(f"<p>criterion: <code>{e(c.row.criterion)}</code><br>scale {e(c.row.scale)}, seed {c.row.seed},"
                        f" {e(_fmt_time(c.row.duration_s))}, code {e(c.row.fingerprint)}, backend {e(c.row.backend)}</p>")
            if c.row.metrics:
                body.append("<table><tr><th>metric</th><th>value</th></tr>" + "".join(
                    f"<tr><td>{e(k)}</td><td>{e(format_value(v))}</td></tr>" for k, v in c.row.metrics.items()) + "</table>")
            if c.row.notes:
                body.append(f"<p>{e(c.row.notes)}</p>")
            if c.row.traceback:
                body.append(f"<details><summary>traceback</summary><pre>{e(c.row.traceback)}</pre></details>")
            for name, rel in c.row.figures.items():
                src = store.figure_path(rel)
                if src.exists():
                    data = base64.b64encode(src.read_bytes()).decode()
                    body.append(f"<figure><img alt='{e(name)}' src='data:image/png;base64,{data}'>"
                                f"<figcaption>{e(name)}</figcaption></figure>")
        body.append("</section>")
        sections.append("\n".join(body))
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>gradlab reproduction report</title>"
            f"<style>{_CSS}</style></head><body><h1>gradlab reproduction report</h1>"
            f"<p>{e(summary)} ({len(lines)} papers). Only <code>quick</code>/<code>full</code> results for the current"
            f" code count as evidence.</p><table><thead><tr><th>paper</th><th>cluster</th><th>status</th>"
            f"<th>criterion</th><th>measured</th><th>time</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            + "\n".join(sections) + "</body></html>")
    path = out_dir / "index.html"
    atomic_write_bytes(path, page.encode())
    return path


def build_report(registry: Registry, store: ResultStore, out_dir: str | Path) -> list[PaperLine]:
    """Write ``index.html`` and ``REPORT.md`` (with figures) into ``out_dir``; return the paper lines."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = collect(registry, store)
    write_markdown(lines, store, out)
    write_html(lines, store, out)
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
    atomic_write_bytes(path, new.encode())
    return True
