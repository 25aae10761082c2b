"""One benchmark trial with AlgoPerf's timing protocol (``submission_runner.train_once``; research notes §6.3).

The clock accumulates the time of ``data_selection``, ``update_params`` and ``prepare_for_eval`` only: wall time
(``clock="wall"``, ``time.perf_counter``, AlgoPerf's measure) or the CPU time of the process (``clock="process"``,
``time.process_time``: all threads of this process, blind to other jobs descheduling it on a shared machine, but
also to time a submission spends waiting, e.g. sleeping or on I/O). Every ``workload.eval_period_steps`` steps (and at the last step) ``prepare_for_eval``
runs on the clock, then the workload is evaluated *off* the clock. Training stops at the first eval that reaches
the validation target, when the clock passes ``budget_factor * workload.max_runtime_s`` (no eval is logged past
the budget), after ``budget_factor * workload.max_steps`` steps, or when the eval loss is not finite (divergence).

``time_to_target`` is the clock at the first eval reaching the target, else ``inf``; ``steps_to_target`` is that
eval's step (deterministic for a seed), else ``inf``. The resolution of both is one eval period.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import torch

from gradlab.bench.submission import Submission, check_submission
from gradlab.bench.workloads import Workload
from gradlab.core.validation import check_choice, check_int, check_positive

EvalFn = Callable[[Workload, torch.nn.Module], Mapping[str, float]]


def _inf_to_json(x: float) -> float | str:
    return x if math.isfinite(x) else str(x)


def _json_to_float(x: Any) -> float:
    return float(x)


@dataclass
class TrialResult:
    """The log of one trial: its eval measurements and the extracted time/steps to target."""

    workload: str
    submission: str
    hyperparameters: dict[str, Any]
    seed: int
    budget_factor: float
    clock: str = "wall"
    evals: list[dict[str, float]] = field(default_factory=list)  # {"step", "clock_s", "metric", "loss"}
    time_to_target: float = math.inf
    steps_to_target: float = math.inf
    steps: int = 0
    clock_s: float = 0.0
    eval_s: float = 0.0
    diverged: bool = False
    error: str = ""

    @property
    def reached(self) -> bool:
        return math.isfinite(self.time_to_target)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["time_to_target"] = _inf_to_json(self.time_to_target)
        d["steps_to_target"] = _inf_to_json(self.steps_to_target)
        d["evals"] = [{k: _inf_to_json(float(v)) for k, v in e.items()} for e in self.evals]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TrialResult":
        kw = dict(d)
        kw["time_to_target"] = _json_to_float(kw["time_to_target"])
        kw["steps_to_target"] = _json_to_float(kw["steps_to_target"])
        kw["evals"] = [{k: float(v) for k, v in e.items()} for e in kw.get("evals", [])]
        return cls(**kw)


def _default_eval(workload: Workload, model: torch.nn.Module) -> Mapping[str, float]:
    return workload.evaluate(model)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def run_trial(workload: Workload, submission: Submission, hyperparameters: Mapping[str, Any], seed: int, *,
              budget_factor: float = 1.0, eval_fn: EvalFn | None = None, clock: str = "wall") -> TrialResult:
    """Train ``submission`` on ``workload`` with ``hyperparameters`` and return the :class:`TrialResult`.

    ``seed`` seeds the model initialisation, the data order and the submission's ``rng``. ``eval_fn(workload,
    model)`` replaces :meth:`Workload.evaluate` (it is never timed). Exceptions of the submission propagate.
    """
    if not isinstance(workload, Workload):
        raise TypeError(f"workload must be a Workload; got {type(workload).__name__}")
    check_submission(submission)
    if not isinstance(hyperparameters, Mapping):
        raise TypeError(f"hyperparameters must be a mapping; got {type(hyperparameters).__name__}")
    check_int("seed", seed, minimum=0)
    check_positive("budget_factor", budget_factor)
    check_choice("clock", clock, tuple(CLOCKS))
    now = CLOCKS[clock]
    evaluate = eval_fn or _default_eval
    hp = dict(hyperparameters)
    result = TrialResult(workload.name, submission.name, hp, seed, float(budget_factor), clock)
    max_clock = budget_factor * workload.max_runtime_s
    max_steps = max(1, int(budget_factor * workload.max_steps))
    period = workload.eval_period_steps

    model = workload.init_model(seed)
    rng = torch.Generator().manual_seed(seed + 1)
    batch_size = submission.get_batch_size(workload.name)
    queue = workload.input_queue(int(batch_size), seed + 2)
    state = submission.init_optimizer_state(workload, model, hp, rng)
    elapsed = 0.0
    step = 0
    while step < max_steps:
        t0 = now()
        batch = submission.data_selection(workload, queue, state, model, hp, step, rng)
        state = submission.update_params(workload, model, hp, batch, state, step, rng)
        elapsed += now() - t0
        step += 1
        if step % period and step < max_steps:
            if elapsed > max_clock:
                break
            continue
        t0 = now()
        state = submission.prepare_for_eval(workload, model, state, hp, step, rng)
        elapsed += now() - t0
        if elapsed > max_clock:
            break
        e0 = time.perf_counter()
        res = evaluate(workload, model)
        result.eval_s += time.perf_counter() - e0
        metric, loss = float(res["metric"]), float(res["loss"])
        result.evals.append({"step": float(step), "clock_s": elapsed, "metric": metric, "loss": loss})
        if workload.has_reached_target(metric):
            result.time_to_target, result.steps_to_target = elapsed, float(step)
            break
        if not math.isfinite(loss):
            result.diverged = True
            break
    result.steps, result.clock_s = step, elapsed
    return result
