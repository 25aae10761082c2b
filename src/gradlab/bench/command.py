"""The ``gradlab bench`` subcommand: argument parsing, the run with a progress bar, and the rich table.

Exit codes (as the rest of the CLI): 0 every trial ran, 1 some trial raised, 2 bad input (one line, listing the
valid names), 130 interrupted (finished trials are stored; rerunning resumes).

Finished trials go to the ``bench_trials`` table of ``--store`` (default: the claims' ``.gradlab/results.sqlite``)
and the plan of the run to ``bench_runs``, so ``gradlab report`` rebuilds the pages (:func:`rebuild_pages`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

SCALE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": {"workloads": ("digits_mlp", "teacher_regression"), "submissions": ("adamw", "sgd_nesterov"),
              "trials": 2, "studies": 1},
    "quick": {"workloads": ("digits_mlp", "teacher_regression", "shapes_cnn"),
              "submissions": ("adamw", "nadamw", "sgd_momentum", "sgd_nesterov"), "trials": 5, "studies": 2},
    "full": {"workloads": ("digits_mlp", "teacher_regression", "shapes_cnn", "tiny_lm"),
             "submissions": ("adamw", "nadamw", "sgd_momentum", "sgd_nesterov", "lion", "diffgrad", "adagradnorm",
                             "clip_sgd", "program_lion"), "trials": 5, "studies": 3},
}


DEFAULT_STORE = Path(".gradlab") / "results.sqlite"
"""``--store``'s default: the claims' store, relative to the working directory."""


class BenchUsageError(ValueError):
    """Bad ``gradlab bench`` input (exit code 2)."""


def _names(text: str | None, option: str) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise BenchUsageError(f"{option} names nothing (omit it for the scale's defaults)")
    return names


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` subparser to the CLI's subparsers."""
    from gradlab.cli import _positive_int, _seed

    p = sub.add_parser("bench", help="AlgoPerf-style training-algorithms benchmark (time-to-target, scores)")
    p.add_argument("--workloads", default=None, help="comma-separated workload names or package.module:attr")
    p.add_argument("--submissions", default=None, help="comma-separated submission names or package.module:attr")
    p.add_argument("--ruleset", choices=("external", "self"), default="external")
    p.add_argument("--scale", choices=tuple(SCALE_DEFAULTS), default="quick", help="default sizes (default: quick)")
    p.add_argument("--trials", type=_positive_int, default=None, help="trials per study (external tuning)")
    p.add_argument("--studies", type=_positive_int, default=None, help="studies per workload")
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="wall time (AlgoPerf) or CPU time of the process (robust on a shared machine)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", type=Path, default=Path("report") / "bench", help="output directory")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE,
                   help="SQLite store receiving each finished trial (default: .gradlab/results.sqlite)")
    p.add_argument("--force", action="store_true", help="rerun trials that are already stored")
    p.add_argument("--backend", choices=("sequential", "local", "ray"), default="sequential",
                   help="run trials in this process, in --workers local processes, or as Ray tasks")
    p.add_argument("--workers", type=_positive_int, default=1, help="worker processes (local) / Ray CPUs (ray)")
    p.add_argument("--address", default=None, help="Ray cluster address (with --backend ray)")
    p.add_argument("--cpus-per-trial", type=_positive_int, default=1,
                   help="torch threads per trial and CPUs each Ray task requests (default: 1)")
    p.add_argument("--targets", type=Path, default=None,
                   help="a targets.json (from --set-targets) whose validation targets replace the built-in ones")
    p.add_argument("--set-targets", action="store_true",
                   help="run AlgoPerf's target-setting procedure with the 4 baselines (--trials Halton trials each, "
                        "the best configuration rerun --reruns times; median best validation) and write "
                        "OUT/targets.json instead of benchmarking")
    p.add_argument("--reruns", type=_positive_int, default=3, help="reruns of the best configuration (--set-targets)")
    return p


def run_command(args: argparse.Namespace, console: Any) -> int:
    """Run ``gradlab bench``; raise :class:`BenchUsageError` on bad input."""
    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from gradlab.bench.loading import UnknownNameError, load_submission, load_workload
    from gradlab.bench.pages import write_outputs
    from gradlab.bench.runner import run_bench, run_record
    from gradlab.bench.store import BenchStore, BenchStoreError

    defaults = SCALE_DEFAULTS[args.scale]
    if args.out.exists() and not args.out.is_dir():
        raise BenchUsageError(f"--out {args.out} exists and is not a directory")
    try:
        workloads = [load_workload(n) for n in (_names(args.workloads, "--workloads") or defaults["workloads"])]
        submissions = [load_submission(n) for n in (_names(args.submissions, "--submissions")
                                                    or defaults["submissions"])]
    except (UnknownNameError, TypeError) as err:
        raise BenchUsageError(str(err)) from None
    for kind, names in (("--workloads", [w.name for w in workloads]), ("--submissions", [s.name for s in submissions])):
        if len(set(names)) != len(names):
            raise BenchUsageError(f"{kind} names a {kind[2:-1]} twice: {', '.join(names)}")
    if args.address and args.backend != "ray":
        raise BenchUsageError("--address applies to --backend ray only")
    if args.backend == "ray" and not args.address and args.cpus_per_trial > args.workers:
        raise BenchUsageError(f"--cpus-per-trial {args.cpus_per_trial} exceeds the {args.workers} CPU(s) of the "
                              "local Ray instance (--workers): no trial could be scheduled")
    if args.targets is not None:
        from gradlab.bench.targets import apply_targets, load_targets

        try:
            targets = load_targets(args.targets)
        except ValueError as err:
            raise BenchUsageError(str(err)) from None
        apply_targets(workloads, targets)
    if args.set_targets:
        return _set_targets(args, workloads, console)
    trials = args.trials or defaults["trials"]
    studies = args.studies or defaults["studies"]
    if args.ruleset == "self" and args.trials:
        raise BenchUsageError("--trials applies to --ruleset external only (self-tuning runs one trial per study)")
    try:
        store = BenchStore(args.store)
    except BenchStoreError as err:
        raise BenchUsageError(f"--store: {err}") from None
    torch.set_num_threads(args.cpus_per_trial)
    console.print(f"bench: {len(workloads)} workload(s) x {len(submissions)} submission(s), {args.ruleset} tuning, "
                  f"{trials if args.ruleset == 'external' else 1} trial(s) x {studies} studies -> {args.out}")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("trials", total=None)

        def on_progress(done: int, total: int, key: str) -> None:
            progress.update(task, completed=done, total=total, description=f"trials {key[:50]}")

        result = run_bench(workloads, submissions, ruleset=args.ruleset, n_trials=trials, n_studies=studies,
                           seed=args.seed, store=store, force=args.force, progress=on_progress,
                           clock=args.clock, backend=args.backend, workers=args.workers, address=args.address,
                           cpus_per_trial=args.cpus_per_trial)
    paths = write_outputs(result, args.out, workloads)
    store.put_run(args.out, run_record(result, workloads))
    table = Table(title=f"gradlab bench ({args.ruleset} tuning): ranking by benchmark score")
    for col in ("rank", "submission", "score (time)", "score (steps)", *[f"{w} s / steps" for w in result.workloads]):
        table.add_column(col, justify="right" if col != "submission" else "left")
    order = sorted(range(len(result.submissions)), key=lambda i: -result.scores[i])
    for r, i in enumerate(order, 1):
        cells = []
        for j in range(len(result.workloads)):
            t, s = result.times[i, j], result.steps[i, j]
            cells.append("∞" if t == float("inf") else f"{t:.3f} / {s:.0f}")
        table.add_row(str(r), result.submissions[i], f"{result.scores[i]:.3f}", f"{result.step_scores[i]:.3f}", *cells)
    console.print(table)
    console.print(f"{len(result.trials)} trials ({result.resumed} resumed from {args.store}); "
                  f"wrote {paths['html']}, {paths['markdown']}, {paths['figure']}, {paths['json']}")
    if result.errors:
        console.print(f"[red]{len(result.errors)} trial(s) raised[/]; first: {result.errors[0]}")
        return 1
    return 0


def _set_targets(args: argparse.Namespace, workloads: list, console: Any) -> int:
    """``--set-targets``: :func:`gradlab.bench.targets.set_targets` with the 4 baselines -> ``OUT/targets.json``."""
    import torch

    from gradlab.bench.submission import BASELINES, builtin_submissions
    from gradlab.bench.targets import set_targets, write_targets

    if args.submissions is not None:
        raise BenchUsageError("--set-targets uses AlgoPerf's 4 target-setting baselines; omit --submissions")
    torch.set_num_threads(1)
    subs = builtin_submissions()
    n_trials = args.trials or 5
    console.print(f"set-targets: {len(workloads)} workload(s) x {len(BASELINES)} baselines x {n_trials} trials, best "
                  f"configuration rerun {args.reruns}x -> {args.out / 'targets.json'}")
    clock = args.clock
    records = set_targets(workloads, [subs[n]() for n in BASELINES], n_trials=n_trials, n_reruns=args.reruns,
                          seed=args.seed, clock=clock)
    path = write_targets(args.out / "targets.json", records)
    for name, rec in records.items():
        console.print(f"{name}: target {rec['metric']} {rec['target']:.4g} (best configuration: {rec['submission']}; "
                      f"rerun best values {', '.join(f'{v:.4g}' for v in rec['rerun_best_validation'])})")
    console.print(f"wrote {path}; use it with --targets {path}")
    return 0


def rebuild_pages(store_path: Path, out_dir: Path) -> Path | None:
    """Rebuild the most recent benchmark's pages from the store into ``out_dir`` (``gradlab report``); ``None``
    when the store holds no benchmark. Nothing runs and no workload or submission is imported."""
    from gradlab.bench.store import BenchStore, BenchStoreError

    try:
        store = BenchStore(store_path, create=False)
    except BenchStoreError:
        return None
    runs = store.runs()
    if not runs:
        return None
    from gradlab.bench.pages import write_outputs
    from gradlab.bench.runner import result_from_record

    _, record, _ = runs[-1]
    result = result_from_record(record, store)
    return write_outputs(result, out_dir, record.get("workload_meta") or None)["html"]
