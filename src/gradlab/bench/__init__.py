"""``gradlab bench``: an AlgoPerf-style training-algorithms benchmark that runs on one CPU core.

Follows the design of AlgoPerf (Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv 2306.07179;
rules v0.6 of ``mlcommons/algorithmic-efficiency``), re-implemented for PyTorch modules and second-scale workloads:

* :mod:`~gradlab.bench.workloads`: the Workload API and built-in workloads (generated or bundled data);
* :mod:`~gradlab.bench.submission`: the submission API and built-in submissions (torch and gradlab optimizers);
* :mod:`~gradlab.bench.tuning`: search spaces, scrambled-Halton external tuning, self-tuning, per-workload time;
* :mod:`~gradlab.bench.timing`: one trial under the timing protocol (eval off the clock);
* :mod:`~gradlab.bench.scoring`: performance profiles and the benchmark score;
* :mod:`~gradlab.bench.runner`: planning, running (resumable) and aggregating trials; the run's record;
* :mod:`~gradlab.bench.store`: finished trials and run records in the SQLite store (``bench_trials``, ``bench_runs``);
* :mod:`~gradlab.bench.pages`: ``bench.html``, ``BENCH.md``, ``profile.png`` and ``results.json``;
* :mod:`~gradlab.bench.targets`: AlgoPerf's target-setting procedure (``gradlab bench --set-targets``);
* :mod:`~gradlab.bench.loading`: names, ``package.module:attr`` paths and entry points.

Bring your own optimizer (``mypkg/opt.py``) and ask which optimizer to use on your workload::

    import torch
    from gradlab.bench import OptimizerSubmission, Param

    def make(params, hp):
        return torch.optim.RMSprop(params, lr=hp["lr"], momentum=1 - hp["one_minus_momentum"])

    rmsprop = OptimizerSubmission("rmsprop", make, {"lr": Param(1e-4, 1e-2),
                                                     "one_minus_momentum": Param(0.01, 0.3)},
                                  defaults={"lr": 1e-3, "one_minus_momentum": 0.1})

then ``gradlab bench --submissions mypkg.opt:rmsprop,adamw --workloads digits_mlp,mypkg.work:MyWorkload``
(a workload subclasses :class:`Workload`), or in Python ``run_bench([DigitsMLP()], [rmsprop, ...])``.
"""

import importlib
from typing import Any

_EXPORTS = {
    "loading": ("available_submissions", "available_workloads", "load_submission", "load_workload"),
    "pages": ("write_outputs",),
    "runner": ("BenchResult", "TrialSpec", "plan_trials", "result_from_record", "run_bench", "run_record"),
    "store": ("BenchStore",),
    "scoring": ("benchmark_scores", "performance_profile", "performance_ratios"),
    "submission": ("BASELINES", "OptimizerSubmission", "Submission", "builtin_submissions", "check_submission",
                   "warmup_cosine"),
    "targets": ("apply_targets", "load_targets", "set_targets", "write_targets"),
    "timing": ("TrialResult", "run_trial"),
    "tuning": ("Param", "halton_points", "study_plan", "workload_time"),
    "workloads": ("BUILTIN_WORKLOADS", "DigitsMLP", "DigitsWideMLP", "GraphGNN", "ShapesCNN", "TeacherRegression",
                  "TeacherWideRegression", "TinyLM", "Workload"),
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    """Import lazily, so that the CLI's ``bench`` subparser does not import torch for ``gradlab list``."""
    if name in _WHERE:
        return getattr(importlib.import_module(f"gradlab.bench.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'gradlab.bench' has no attribute {name!r}")


__all__ = ["BASELINES", "BUILTIN_WORKLOADS", "BenchResult", "BenchStore", "DigitsMLP", "DigitsWideMLP", "GraphGNN",
           "OptimizerSubmission", "Param", "ShapesCNN", "Submission", "TeacherRegression", "TeacherWideRegression",
           "TinyLM", "TrialResult", "TrialSpec", "Workload", "apply_targets", "available_submissions",
           "available_workloads", "benchmark_scores", "builtin_submissions", "check_submission", "halton_points",
           "load_submission", "load_targets", "load_workload", "performance_profile", "performance_ratios",
           "plan_trials", "result_from_record", "run_bench", "run_record", "run_trial", "set_targets", "study_plan", "warmup_cosine", "workload_time",
           "write_outputs", "write_targets"]
