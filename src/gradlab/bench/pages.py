"""The benchmark's pages: ``bench.html`` (ranking first), ``BENCH.md``, ``profile.png`` and ``results.json``.

Every file is written atomically (temp file in the same directory + ``os.replace``), keeping the mode a plain
``open(path, "w")`` would give it, so a reader never sees half a page. The pages depend only on a
:class:`~gradlab.bench.runner.BenchResult` and each workload's metric/target (:func:`workload_meta`), so
``gradlab report`` rebuilds them from the store without the workloads' code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gradlab.bench.runner import BenchResult, _safe
from gradlab.bench.scoring import performance_profile, tau_grid
from gradlab.bench.workloads import Workload
from gradlab.core.files import write_atomic

__all__ = ["markdown_table", "profile_figure", "render_html", "workload_meta", "write_outputs"]

WorkloadInfo = Sequence[Workload] | Mapping[str, Mapping[str, Any]]


def workload_meta(workloads: WorkloadInfo) -> dict[str, dict[str, Any]]:
    """``{name: {"metric", "higher_is_better", "target"}}`` of each workload (a mapping passes through)."""
    if isinstance(workloads, Mapping):
        return {k: dict(v) for k, v in workloads.items()}
    return {w.name: {"metric": w.target_metric_name, "higher_is_better": bool(w.higher_is_better),
                     "target": float(w.validation_target)} for w in workloads}


def profile_figure(result: BenchResult, title: str = ""):
    """Performance profiles rho_s(tau) by time and by steps, with each submission's score in the legend."""
    from matplotlib.figure import Figure

    taus = tau_grid()
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, vals, scores, what in ((axes[0], result.times, result.scores, "time"),
                                   (axes[1], result.steps, result.step_scores, "steps")):
        rho = performance_profile(_safe(vals), taus)
        order = np.argsort(-scores)
        for i in order:  # one colour per submission in both panels
            ax.step(taus, rho[i], where="post", lw=2, color=f"C{i % 10}",
                    label=f"{result.submissions[i]} (B={scores[i]:.3f})")
        ax.set(xlabel=r"$\tau$ (ratio to the fastest submission)", xlim=(1, 4), ylim=(-0.03, 1.03),
               title=f"performance profile by {what}-to-target")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    axes[0].set_ylabel(r"$\rho_s(\tau)$: share of workloads within $\tau$")
    fig.suptitle(title or f"{result.ruleset} tuning, {result.n_trials} trials x {result.n_studies} studies, "
                 f"{len(result.workloads)} workloads: {', '.join(result.workloads)}", fontsize=10)
    fig.tight_layout()
    return fig


def markdown_table(result: BenchResult) -> str:
    """The ranking (by time score) with per-workload times and steps to target."""
    order = np.argsort(-result.scores, kind="stable")
    head = "| rank | submission | score (time) | score (steps) | " + " | ".join(
        f"{w} s / steps" for w in result.workloads) + " |"
    lines = [head, "|" + "---|" * (4 + len(result.workloads))]
    for r, i in enumerate(order, 1):
        cells = [f"{_fmt(result.times[i, j])} / {_fmt(result.steps[i, j], 0)}" for j in range(len(result.workloads))]
        lines.append(f"| {r} | {result.submissions[i]} | {result.scores[i]:.3f} | {result.step_scores[i]:.3f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "∞"
    return f"{x:.{digits}f}" if digits else f"{x:.0f}"


def render_html(result: BenchResult, workloads: WorkloadInfo | None = None, figure: str = "profile.png") -> str:
    """The bench page (``templates/bench.html.j2``, jinja2 with autoescaping): the ranking table first, then the
    profile plot and any trial errors. ``workloads`` (optional) adds each workload's metric and target."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("gradlab.bench", "templates"),
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html", "html.j2")),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    meta = workload_meta(workloads or ())
    wls = [{"name": n, "metric": meta[n]["metric"] if n in meta else "target",
            "higher_is_better": meta[n]["higher_is_better"] if n in meta else True,
            "target": f"{meta[n]['target']:.4g}" if n in meta else "?"} for n in result.workloads]
    order = np.argsort(-result.scores, kind="stable")
    rows = []
    for r, i in enumerate(order, 1):
        cells = [{"missed": not math.isfinite(result.times[i, j]),
                  "text": f"{_fmt(result.times[i, j])} / {_fmt(result.steps[i, j], 0)}"}
                 for j in range(len(result.workloads))]
        rows.append({"rank": r, "name": result.submissions[i], "score": f"{result.scores[i]:.3f}",
                     "step_score": f"{result.step_scores[i]:.3f}", "cells": cells})
    return env.get_template("bench.html.j2").render(
        ruleset=result.ruleset, n_trials=result.n_trials, n_studies=result.n_studies, seed=result.seed,
        workloads=wls, rows=rows, figure=figure, errors=result.errors, n_done=len(result.trials),
        resumed=result.resumed)


def write_outputs(result: BenchResult, out_dir: str | Path, workloads: WorkloadInfo | None = None) -> dict[str, Path]:
    """``results.json``, ``profile.png``, ``BENCH.md`` and ``bench.html`` under ``out_dir`` (each written
    atomically); ``workloads`` (objects or :func:`workload_meta`) adds metrics and targets to the HTML page."""
    import io

    out = Path(out_dir)
    paths = {"json": out / "results.json", "figure": out / "profile.png", "markdown": out / "BENCH.md",
             "html": out / "bench.html"}
    write_atomic(paths["json"], json.dumps(result.to_json(), indent=1))
    buf = io.BytesIO()
    profile_figure(result).savefig(buf, format="png", dpi=110)
    write_atomic(paths["figure"], buf.getvalue())
    md = (f"# gradlab bench\n\n{result.ruleset} tuning, {result.n_trials} trial(s) x {result.n_studies} studies, "
          f"seed {result.seed}. Times are seconds of submission time (eval excluded) to the validation target, "
          "median over studies of the best trial; ∞ = missed.\n\n" + markdown_table(result)
          + "\n\n![performance profiles](profile.png)\n")
    if result.errors:
        md += "\n## Trial errors\n\n" + "\n".join(f"- {e}" for e in result.errors) + "\n"
    write_atomic(paths["markdown"], md)
    write_atomic(paths["html"], render_html(result, workloads, paths["figure"].name))
    return paths
