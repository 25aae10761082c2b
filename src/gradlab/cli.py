"""The ``gradlab`` command line: ``list``, ``show``, ``reproduce``, ``bench`` and ``report``.

Exit codes: 0 success (``reproduce``: every selected claim passed), 1 some claim did not reproduce (failed or
inconclusive), 2 bad input (unknown paper key, bad scale, bad number of workers, an unusable path or store),
3 a claim crashed (raised or timed out) or the run itself failed, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from gradlab.claims.types import SCALES

DEFAULT_STORE = Path(".gradlab") / "results.sqlite"
DEFAULT_OUT = Path("report")
_STYLE = {"passed": "green", "failed": "red", "inconclusive": "blue", "error": "magenta", "timeout": "magenta",
          "reproduced": "green", "partial": "yellow", "not reproduced": "red", "not run": "dim",
          "not implemented": "dim"}
EXIT_OK, EXIT_NOT_REPRODUCED, EXIT_USAGE, EXIT_CRASH, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class UsageError(Exception):
    """Bad command-line input: reported with exit code 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from gradlab import __version__

    parser = argparse.ArgumentParser(prog="gradlab", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gradlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors (and debug log messages)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print the library's log messages (logger 'gradlab', level INFO) to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    lst = sub.add_parser("list", help="list all seed papers and whether their claims are implemented")
    lst.add_argument("--json", action="store_true", help="print the list as JSON")

    show = sub.add_parser("show", help="one paper: statement, components, claims, latest results and figures")
    show.add_argument("key", help="paper key (see `gradlab list`)")
    show.add_argument("--store", type=Path, default=DEFAULT_STORE)
    show.add_argument("--json", action="store_true", help="print as JSON")

    rep = sub.add_parser("reproduce", help="run the papers' claims and write the report")
    rep.add_argument("--scale", choices=SCALES, default="quick", help="run size (default: quick)")
    rep.add_argument("--only", default="", help="comma-separated paper keys (default: all)")
    rep.add_argument("--backend", choices=("local", "ray"), default="local")
    rep.add_argument("--address", default=None, help="Ray cluster address (with --backend ray)")
    rep.add_argument("--workers", type=_positive_int, default=1, help="claims run at once (default: 1)")
    rep.add_argument("--seed", type=_seed, default=0)
    rep.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report directory (default: report/)")
    rep.add_argument("--store", type=Path, default=DEFAULT_STORE, help="SQLite store (default: .gradlab/results.sqlite)")
    rep.add_argument("--force", action="store_true", help="rerun claims that already have a stored result")

    from gradlab.bench.command import add_parser as add_bench_parser

    add_bench_parser(sub)

    rpt = sub.add_parser("report", help="rebuild the report from the store without running anything")
    rpt.add_argument("--out", type=Path, default=DEFAULT_OUT)
    rpt.add_argument("--store", type=Path, default=DEFAULT_STORE)
    rpt.add_argument("--readme", type=Path, default=None, help="also update the table block in this README")
    return parser


def _entry_status(entry) -> str:
    return "import error" if entry.import_error else ("implemented" if entry.implemented else "not implemented")


def cmd_list(args: argparse.Namespace, console: Console) -> int:
    import json

    from gradlab.claims.registry import load_registry

    registry = load_registry()
    if args.json:
        out = [{"key": key, "title": e.paper.title, "cluster": e.paper.cluster, "arxiv": e.paper.arxiv,
                "statement": e.paper.statement, "components": list(e.paper.components), "module": e.module,
                "claims": [c.id for c in e.claims], "status": _entry_status(e)}
               for key, e in registry.papers.items()]
        sys.stdout.write(json.dumps(out, indent=1) + "\n")
        return 0
    table = Table(title=f"gradlab: {len(registry.papers)} seed papers")
    for col in ("key", "paper", "cluster", "claims", "components", "status"):
        table.add_column(col)
    for key, entry in registry.papers.items():
        status = _entry_status(entry)
        comps = ", ".join(c.removeprefix("gradlab.") for c in entry.paper.components)
        table.add_row(key, entry.paper.short_title, entry.paper.cluster, str(len(entry.claims)), comps,
                      f"[{'green' if entry.implemented else 'dim'}]{status}[/]")
    console.print(table)
    return 0


def cmd_show(args: argparse.Namespace, console: Console) -> int:
    import json

    from gradlab.claims.registry import load_registry
    from gradlab.claims.report import collect, paper_status
    from gradlab.claims.store import ResultStore, StoreError

    registry = load_registry()
    if args.key not in registry.papers:
        raise UsageError(f"unknown paper key {args.key!r}. Valid keys: {', '.join(registry.papers)}")
    entry = registry.papers[args.key]
    store = None
    if args.store.exists():
        try:
            store = ResultStore(args.store, create=False)
        except StoreError as err:
            raise UsageError(f"--store: {err}") from None
    claims = []
    lines = {l.entry.paper.key: l for l in collect(registry, store)} if store is not None else {}
    line = lines.get(args.key)
    for spec in entry.claims:
        cl = next((c for c in line.claims if c.claim_id == spec.id), None) if line else None
        row = cl.row if cl else None
        claims.append({"id": spec.id, "title": spec.title, "status": row.status if row else "not run",
                       "criterion": row.criterion if row else "", "scale": row.scale if row else None,
                       "duration_s": row.duration_s if row else None,
                       "headline": row.headline if row else [], "preconditions": row.preconditions if row else {},
                       "figures": [str(store.figure_path(r)) for r in row.figures.values()] if row and store else [],
                       "note": cl.note if cl else ""})
    p = entry.paper
    status = paper_status(entry, [c["status"] for c in claims])
    info = {"key": p.key, "title": p.title, "cluster": p.cluster, "arxiv": p.arxiv, "statement": p.statement,
            "components": list(p.components), "status": status, "claims": claims,
            "revisions": [r.__dict__ for r in p.revisions]}
    if args.json:
        sys.stdout.write(json.dumps(info, indent=1) + "\n")
        return 0
    console.print(f"[bold]{escape(p.key)}[/] — {escape(p.title)}" + (f" (arXiv {p.arxiv})" if p.arxiv else ""))
    if p.statement:
        console.print(f"[italic]{escape(p.statement)}[/]")
    console.print(f"status: [{_STYLE.get(status, 'white')}]{status}[/]; components: "
                  + (", ".join(p.components) or "none"))
    for c in claims:
        console.print(f"\n[bold]{escape(c['id'])}[/]: {escape(c['title'])}\n  "
                      f"[{_STYLE.get(c['status'], 'white')}]{c['status']}[/] {escape(c['note'])}")
        if c["criterion"]:
            console.print(f"  criterion: {escape(c['criterion'])}")
        for h in c["headline"]:
            console.print(f"  {'✓' if h.get('ok') else '✗'} {escape(h['label'])} {h['value']} {h['op']} {h['bound']}")
        for name, pre in c["preconditions"].items():
            if not pre.get("ok"):
                console.print(f"  [blue]precondition failed:[/] {escape(name)}")
        for f in c["figures"]:
            console.print(f"  figure: {escape(f)}")
    return 0


class _ProgressObserver:
    """Renders runner events as rich progress bars: one overall bar, one bar per running claim."""

    def __init__(self, progress: Progress, total: int) -> None:
        self.progress = progress
        self.overall = progress.add_task("claims", total=total)
        self.bars: dict[str, TaskID] = {}

    def __call__(self, event) -> None:
        cid = event.task.id
        if event.kind == "setup_start":
            self.bars[cid] = self.progress.add_task(f"  {cid}", total=1.0)
            return
        if event.kind == "setup_progress" and cid in self.bars:
            self.progress.update(self.bars[cid], completed=event.fraction, description=f"  {cid} {event.message[:40]}")
            return
        if event.kind == "setup_done":
            if cid in self.bars:
                self.progress.remove_task(self.bars.pop(cid))
            style = "dim" if event.message == "done" else "red"
            took = f"{event.seconds:.0f} s, " if event.seconds is not None else ""
            self.progress.console.print(f"[{style}]{'setup ' + event.message:>18}[/] {escape(event.task.setup.name)} "
                                        f"({took}shared by the claims that need it)")
            return
        if event.kind == "start":
            self.bars[cid] = self.progress.add_task(f"  {cid}", total=1.0)
        elif event.kind == "progress" and cid in self.bars:
            self.progress.update(self.bars[cid], completed=event.fraction,
                                 description=f"  {cid} {event.message[:40]}")
        elif event.kind in ("done", "skip"):
            if cid in self.bars:
                self.progress.remove_task(self.bars.pop(cid))
            status = event.row.status if event.row else "?"
            if event.row is not None and event.row.scale == "smoke" and status in ("passed", "failed", "inconclusive"):
                status = f"smoke {status}"  # a smoke run proves the code path; its verdict is not evidence
            verb = "cached" if event.kind == "skip" else f"{event.row.duration_s:.0f} s"
            style = "dim" if status.startswith("smoke ") else _STYLE.get(status, "white")
            self.progress.console.print(f"[{style}]{status:>18}[/] {cid} ({verb})")
            self.progress.advance(self.overall)


def cmd_reproduce(args: argparse.Namespace, console: Console) -> int:
    from gradlab.claims.registry import load_registry
    from gradlab.claims.report import build_report
    from gradlab.claims.runner import plan, run_tasks
    from gradlab.claims.store import ResultStore

    from gradlab.claims.store import StoreError

    if args.address and args.backend != "ray":
        raise UsageError("--address needs --backend ray")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    registry = load_registry()
    only = [k.strip() for k in args.only.split(",") if k.strip()]
    if getattr(args, "_only_given", False) and not only:
        raise UsageError("--only names no paper key (omit --only to run all papers)")
    try:
        keys = registry.resolve_keys(only or None)
    except ValueError as err:
        raise UsageError(str(err)) from None
    try:
        store = ResultStore(args.store)
    except StoreError as err:
        raise UsageError(f"--store: {err}") from None
    tasks = plan(registry, keys, args.scale, args.seed)
    missing = [k for k in keys if not registry.papers[k].claims]
    if missing:
        console.print(f"[dim]{len(missing)} selected paper(s) have no claims yet (not implemented): {', '.join(missing)}[/]")
    console.print(f"running {len(tasks)} claim(s) at scale [bold]{args.scale}[/], seed {args.seed}, "
                  f"backend {args.backend}, {args.workers} worker(s)")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        observer = _ProgressObserver(progress, len(tasks))
        rows = run_tasks(tasks, store, backend=args.backend, workers=args.workers, force=args.force,
                         address=args.address, observer=observer)
    lines = build_report(registry, store, args.out)
    table = Table(title=f"claims at scale {args.scale}")
    table.add_column("claim", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("time", no_wrap=True, justify="right")
    table.add_column("decisive numbers", no_wrap=True, overflow="ellipsis", max_width=80)
    from gradlab.claims.report import _row_summary

    for row in rows:
        status = row.status
        style = _STYLE.get(status, "white")
        if row.scale == "smoke" and status in ("passed", "failed", "inconclusive"):
            status, style = f"smoke {status}", "dim"
        table.add_row(row.claim_id, f"[{style}]{status}[/]", f"{row.duration_s:.0f} s",
                      escape(_row_summary(row)))
    console.print(table)
    selected = [l for l in lines if l.entry.paper.key in keys]
    counts: dict[str, int] = {}
    for line in selected:
        counts[line.status] = counts.get(line.status, 0) + 1
    console.print("papers: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    console.print(f"report: {args.out / 'index.html'} and {args.out / 'REPORT.md'}")
    if args.scale == "smoke":
        console.print("[dim]smoke scale proves the code paths only; its verdicts are not evidence (use quick/full)[/]")
    if any(r.status in ("error", "timeout") for r in rows):
        return EXIT_CRASH
    return EXIT_OK if rows and all(r.passed for r in rows) or not tasks else EXIT_NOT_REPRODUCED


def cmd_report(args: argparse.Namespace, console: Console) -> int:
    from gradlab.claims.registry import load_registry
    from gradlab.claims.report import build_report, update_readme
    from gradlab.claims.store import ResultStore

    from gradlab.claims.store import StoreError

    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} exists and is not a directory")
    try:
        store = ResultStore(args.store, create=False)
    except StoreError as err:
        raise UsageError(f"--store: {err}") from None
    registry = load_registry()
    lines = build_report(registry, store, args.out)
    if args.readme is not None:
        try:
            changed = update_readme(args.readme, lines)
        except (OSError, ValueError) as err:
            raise UsageError(str(err)) from None
        console.print(f"README table {'updated' if changed else 'unchanged'}: {args.readme}")
    console.print(f"report: {args.out / 'index.html'} and {args.out / 'REPORT.md'} ({len(lines)} papers)")
    from gradlab.bench.command import rebuild_pages

    bench_html = rebuild_pages(args.store, args.out / "bench")
    if bench_html is not None:
        console.print(f"bench: {bench_html} (rebuilt from the store's latest benchmark)")
    return 0


def _configure_logging(verbose: bool, debug: bool) -> None:
    """Route the ``gradlab`` logger to stderr at INFO (``--verbose``) or DEBUG (``--debug``); silent otherwise."""
    if not (verbose or debug):
        return
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("gradlab")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args._only_given = any(a == "--only" or a.startswith("--only=") for a in argv)
    _configure_logging(verbose=args.verbose, debug=args.debug)
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        if args.command == "list":
            return cmd_list(args, console)
        if args.command == "show":
            return cmd_show(args, console)
        if args.command == "reproduce":
            return cmd_reproduce(args, console)
        if args.command == "bench":
            from gradlab.bench.command import BenchUsageError, run_command

            try:
                return run_command(args, console)
            except BenchUsageError as err:
                raise UsageError(str(err)) from None
        return cmd_report(args, console)
    except UsageError as err:
        Console(stderr=True, soft_wrap=True).print(f"[red]gradlab {args.command}: error:[/] {escape(str(err))}",
                                                   highlight=False)
        return EXIT_USAGE
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: finished results are stored; rerun to continue[/]")
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - a crash of the run itself: one line unless --debug
        if args.debug:
            raise
        Console(stderr=True, soft_wrap=True).print(f"[red]gradlab {args.command}: crashed:[/] {escape(type(err).__name__)}: "
                                   f"{escape(str(err))} (rerun with --debug for the traceback)", highlight=False)
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
