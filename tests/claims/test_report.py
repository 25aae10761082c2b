import json
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
    assert paper_status(entry, ["passed", "inconclusive"]) == "partial"
    assert paper_status(entry, ["inconclusive", "inconclusive"]) == "inconclusive"
    assert paper_status(entry, ["inconclusive", "failed"]) == "not reproduced"


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
    assert parser.imgs and "overview.png" in parser.imgs
    assert all((demo_env["out"] / src).read_bytes().startswith(b"\x89PNG") for src in parser.imgs)
    data = json.loads((demo_env["out"] / "results.json").read_text())
    assert len(data["papers"]) == 40 and data["provenance"]["torch"]
    demo = next(p for p in data["papers"] if p["key"] == "demo")
    assert {c["name"]: c["status"] for c in demo["claims"]}["passes"] == "passed"

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


def _put(store, claim_id, **kw):
    from gradlab.claims.store import ResultRow

    base = dict(claim_id=claim_id, paper=claim_id.split("/")[0], scale="quick", seed=0, fingerprint="f",
                status="passed", metrics={"x": 1.0}, criterion="x < 2", started_at=0.0, finished_at=1.0, duration_s=5.0)
    base.update(kw)
    store.put(ResultRow(**base))


def test_report_shows_inconclusive_preconditions_history_and_damaged_figures(tmp_path, monkeypatch):
    from gradlab.claims import report as report_mod
    from gradlab.claims.types import Check, Revision

    registry = load_registry()
    entry = registry.papers["lion"]
    spec = entry.claims[0]
    rev = Revision(claim=spec.name, date="2026-12-01", old="gap < 0", new="CI of gap < 0", reason="one draw <script>",
                   old_result="passed (gap=-0.01)")
    from dataclasses import replace

    registry.papers["lion"] = replace(entry, paper=replace(entry.paper, revisions=(rev,),
                                                           statement="Lion matches AdamW <b>"))
    monkeypatch.setattr(report_mod, "paper_fingerprint", lambda paper, module: "f")
    store = ResultStore(tmp_path / "s.sqlite")
    pre = {"model learned": {"ok": False, "check": Check("final loss", 2.0, "<=", 1.0).to_json()}}
    figs = store.save_figures(spec.id, "quick", 0, "f", {"good": _png(), "cut": _png()[:-20]})
    _put(store, spec.id, status="inconclusive", preconditions=pre, figures=figs,
         headline=[Check("loss ratio", 1.05, "<=", 1.1).to_json()])
    out = tmp_path / "report"
    build_report(registry, store, out)
    page = (out / "index.html").read_text()
    assert "inconclusive" in page and "precondition failed: model learned (final loss 2 &lt;= 1)" in page
    assert "loss ratio 1.05 &lt;= 1.1" in page
    assert "one draw &lt;script&gt;" in page and "<script>" not in page  # autoescaped
    assert "Lion matches AdamW &lt;b&gt;" in page
    assert "figure cut: figure file is truncated" in page
    md = (out / "REPORT.md").read_text()
    assert "Criterion history" in md and "gap < 0" in md and "precondition failed: **model learned**" in md
    assert "figure cut: figure file is truncated" in md
    (tmp_path / "figures").exists()
    data = json.loads((out / "results.json").read_text())
    lion = next(p for p in data["papers"] if p["key"] == "lion")
    assert lion["claims"][0]["failed_preconditions"][0]["name"] == "model learned"


def _png():
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(1, 1))
    fig.subplots().plot([0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def test_png_problem_detects_damage(tmp_path):
    from gradlab.claims.report import png_problem

    good = tmp_path / "g.png"
    good.write_bytes(_png())
    assert png_problem(good) == ""
    bad = bytearray(_png())
    bad[40] ^= 0xFF
    (tmp_path / "b.png").write_bytes(bytes(bad))
    assert "damaged" in png_problem(tmp_path / "b.png") or "truncated" in png_problem(tmp_path / "b.png")
    (tmp_path / "t.png").write_bytes(_png()[:50])
    assert png_problem(tmp_path / "t.png") == "figure file is truncated"
    assert png_problem(tmp_path / "none.png") == "figure file is missing"
    (tmp_path / "x.png").write_bytes(b"GIF89a")
    assert png_problem(tmp_path / "x.png") == "figure file is not a PNG"


def _two_lion_claims_on(tmp_path, monkeypatch, envs):
    from gradlab.claims import report as report_mod

    registry = load_registry()
    monkeypatch.setattr(report_mod, "paper_fingerprint", lambda paper, module: "f")
    store = ResultStore(tmp_path / "s.sqlite")
    for spec, env in zip(registry.papers["lion"].claims, envs):
        _put(store, spec.id, environment=env)
    out = tmp_path / "report"
    lines = build_report(registry, store, out)
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- gradlab:report:start -->\n<!-- gradlab:report:end -->\n")
    update_readme(readme, lines)
    return out, readme.read_text()


_AMD = {"cpu": "AMD EPYC 7B13", "cpu_count": 2, "threads": 1, "torch": "2.14.1", "numpy": "2.1.0",
        "python": "3.12.3", "platform": "Linux"}


def test_report_names_each_claims_environment_and_warns_when_rows_come_from_several(tmp_path, monkeypatch):
    intel = dict(_AMD, cpu="Intel Xeon Platinum 8481C")
    out, readme = _two_lion_claims_on(tmp_path, monkeypatch, [_AMD, dict(intel, threads=2)])
    md = (out / "REPORT.md").read_text()
    page = (out / "index.html").read_text()
    for text in (md, page, readme):
        assert "come from 2 different environments" in text
        assert "AMD EPYC 7B13, 1 thread, torch 2.14.1" in text and "Intel Xeon Platinum 8481C, 2 threads" in text
    assert "ran on AMD EPYC 7B13, 1 thread, torch 2.14.1" in md and "ran on Intel Xeon" in page
    data = json.loads((out / "results.json").read_text())
    assert [e["cpu"] for e in data["environments"]] == ["AMD EPYC 7B13", "Intel Xeon Platinum 8481C"]


def test_report_of_one_environment_says_where_it_was_measured(tmp_path, monkeypatch):
    # a row from a store written before environments were recorded ({}) does not count as another environment
    out, readme = _two_lion_claims_on(tmp_path, monkeypatch, [_AMD, {}])
    for text in ((out / "REPORT.md").read_text(), readme):
        assert "Measured on AMD EPYC 7B13, 1 thread, torch 2.14.1." in text
        assert "different environments" not in text
