from html.parser import HTMLParser

import pytest

from gradlab.claims.registry import load_registry
from gradlab.claims.report import PAPER_STATUSES, build_report, paper_status, update_readme
from gradlab.claims.runner import plan, run_tasks
from gradlab.claims.store import ResultStore


class _TableCounter(HTMLParser):
    """Counts body rows of the first table (the summary) and collects <img> sources."""

    def __init__(self):
        super().__init__()
        self.tables = 0
        self.in_first_tbody = False
        self.rows = 0
        self.imgs = []

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables += 1
        if tag == "tbody" and self.tables == 1:
            self.in_first_tbody = True
        if tag == "tr" and self.in_first_tbody:
            self.rows += 1
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_first_tbody = False


def test_paper_status_aggregation():
    registry = load_registry()
    entry = registry.papers["lion"]
    assert paper_status(entry, []) == "not implemented"
    assert paper_status(entry, ["passed", "passed"]) == "reproduced"
    assert paper_status(entry, ["passed", "failed"]) == "partial"
    assert paper_status(entry, ["failed", "failed"]) == "not reproduced"
    assert paper_status(entry, ["failed", "timeout"]) == "error"
    assert paper_status(entry, ["not run"]) == "not run"


def test_report_lists_every_paper_with_figures(demo_env):
    registry = load_registry()
    store = ResultStore(demo_env["store"])
    tasks = [t for t in plan(registry, ["demo"], "quick", 0) if t.spec.name in ("passes", "fails")]
    run_tasks(tasks, store, workers=2)
    lines = build_report(registry, store, demo_env["out"])
    assert len(lines) == len(registry.papers) == 40
    status = {l.entry.paper.key: l.status for l in lines}
    assert status["demo"] == "partial"  # one passed, one failed, three not run
    assert all(s in PAPER_STATUSES for s in status.values())

    parser = _TableCounter()
    parser.feed((demo_env["out"] / "index.html").read_text())
    assert parser.rows == len(registry.papers)
    assert parser.imgs and all(src.startswith("data:image/png;base64,") for src in parser.imgs)

    md = (demo_env["out"] / "REPORT.md").read_text()
    summary = md.split("| paper |", 1)[1].split("\n\n", 1)[0]
    assert summary.count("\n| `") == len(registry.papers)
    assert "demo/passes" in md and "abs_mean" in md
    figure_links = [l for l in md.splitlines() if l.startswith("![")]
    assert figure_links
    assert (demo_env["out"] / figure_links[0].split("(", 1)[1].rstrip(")")).exists()


def test_update_readme_replaces_only_the_block(tmp_path, demo_env):
    registry = load_registry()
    lines = build_report(registry, ResultStore(demo_env["store"]), demo_env["out"])
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- gradlab:report:start -->\nold\n<!-- gradlab:report:end -->\noutro\n")
    assert update_readme(readme, lines)
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| `lion`" in text
    assert not update_readme(readme, lines)
    (tmp_path / "plain.md").write_text("no markers")
    with pytest.raises(ValueError, match="block"):
        update_readme(tmp_path / "plain.md", lines)


def test_headline_metrics_follow_the_criterion():
    from gradlab.claims.report import headline_metrics
    from gradlab.claims.store import ResultRow

    row = ResultRow(claim_id="p/c", paper="p", scale="quick", seed=0, fingerprint="f", status="failed",
                    metrics={"aux": 1, "slope_all": 1.7, "slope": 1.0, "curve": [1, 2], "exact": True},
                    criterion="exact == 1 and |slope_all - 2| <= 0.25", started_at=0, finished_at=1, duration_s=1)
    assert headline_metrics(row) == [("exact", True), ("slope_all", 1.7)]
    row.criterion = "no metric named here"
    assert [k for k, _ in headline_metrics(row, limit=2)] == ["aux", "slope_all"]
