"""Submissions of the training-algorithms benchmark: AlgoPerf's submission API in PyTorch form.

AlgoPerf (Dahl et al., 2023, arXiv 2306.07179, §4.2; ``algorithms/template/submission.py``) lets a training
algorithm define only these functions; everything else (model, data, loss, evaluation, timing) is fixed:

* ``get_batch_size(workload_name) -> int``
* ``tuning_search_space() -> {name: Param}`` (external tuning) and ``default_hyperparameters()`` (self-tuning)
* ``init_optimizer_state(workload, model, hyperparameters, rng) -> state``
* ``update_params(workload, model, hyperparameters, batch, optimizer_state, global_step, rng) -> state``: one step
* ``data_selection(workload, input_queue, optimizer_state, model, hyperparameters, global_step, rng) -> batch``
* ``prepare_for_eval(workload, model, optimizer_state, hyperparameters, global_step, rng) -> state``

PyTorch simplification: the model is an ``nn.Module`` (AlgoPerf passes a parameter container, ``model_state`` and
parameter types). ``data_selection``, ``update_params`` and ``prepare_for_eval`` run on the benchmark's clock.

:class:`OptimizerSubmission` turns any ``torch.optim.Optimizer`` factory into a submission with AlgoPerf's baseline
schedule: linear warmup over ``warmup_factor * step_hint`` steps, then cosine decay to 0 at ``step_hint``
(``algorithms/baselines/*/pytorch_nadamw_full_budget.py``). The built-ins (``BUILTIN_SUBMISSIONS``) wrap torch
AdamW, NAdamW (``torch.optim.NAdam(decoupled_weight_decay=True)``, whose momentum-decay schedule
``mu_t = beta1 (1 - 0.5 * 0.96^(t psi))`` AlgoPerf's NAdamW does not have), SGD heavy-ball and Nesterov, and
gradlab's Lion, DiffGrad, AdaGradNorm, ``coordinate_clip(SGD)`` and ``ProgramOptimizer(lion_program())``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import torch
from torch import nn

from gradlab.bench.tuning import Param, SearchSpace, check_search_space
from gradlab.bench.workloads import Batch, Workload

SUBMISSION_METHODS = ("get_batch_size", "tuning_search_space", "default_hyperparameters", "init_optimizer_state",
                      "update_params", "data_selection", "prepare_for_eval")


@runtime_checkable
class Submission(Protocol):
    """The submission API (see the module docstring); ``name`` labels it in tables."""

    name: str

    def get_batch_size(self, workload_name: str) -> int: ...

    def tuning_search_space(self) -> SearchSpace: ...

    def default_hyperparameters(self) -> dict[str, Any]: ...

    def init_optimizer_state(self, workload: Workload, model: nn.Module, hyperparameters: Mapping[str, Any],
                             rng: torch.Generator) -> Any: ...

    def update_params(self, workload: Workload, model: nn.Module, hyperparameters: Mapping[str, Any], batch: Batch,
                      optimizer_state: Any, global_step: int, rng: torch.Generator) -> Any: ...

    def data_selection(self, workload: Workload, input_queue: Iterator[Batch], optimizer_state: Any, model: nn.Module,
                       hyperparameters: Mapping[str, Any], global_step: int, rng: torch.Generator) -> Batch: ...

    def prepare_for_eval(self, workload: Workload, model: nn.Module, optimizer_state: Any,
                         hyperparameters: Mapping[str, Any], global_step: int, rng: torch.Generator) -> Any: ...


def check_submission(obj: Any) -> Submission:
    """Return ``obj`` if it has a string ``name`` and every method of the API, else raise ``TypeError``."""
    missing = [m for m in SUBMISSION_METHODS if not callable(getattr(obj, m, None))]
    if missing:
        raise TypeError(f"submission {obj!r} lacks the method(s) {', '.join(missing)} of the submission API")
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"submission {obj!r} must have a non-empty string attribute 'name'")
    return obj


def warmup_cosine(step: int, step_hint: int, warmup_factor: float) -> float:
    """The LR multiplier at ``step`` (0-based): ``(step+1)/w`` for ``step < w = max(1, warmup_factor*step_hint)``,
    then ``0.5 (1 + cos(pi * (step - w) / (step_hint - w)))``; from ``step_hint`` on it stays at its last value
    (step ``step_hint - 1``, small but > 0: optimizers such as AdaGradNorm reject ``lr = 0``)."""
    w = max(1, int(warmup_factor * step_hint))
    if step < w:
        return (step + 1) / w
    if step_hint <= w:
        return 1.0
    step = min(step, step_hint - 1)
    return 0.5 * (1.0 + math.cos(math.pi * (step - w) / (step_hint - w)))


OptimizerFactory = Callable[[list[nn.Parameter], Mapping[str, Any]], torch.optim.Optimizer]


class OptimizerSubmission:
    """A submission from a ``torch.optim`` factory ``factory(params, hyperparameters) -> Optimizer``.

    Each step: draw the next batch, ``loss = workload.loss(model(x), y)``, backward, ``optimizer.step()``, then the
    warmup-cosine schedule (``hyperparameters["warmup_factor"]``, default 0.05) scales every group's base ``lr``.

    Args:
        name: the label in tables and result files.
        factory: builds the optimizer from the parameters and the trial's hyperparameters.
        search_space: the external-tuning space (``{name: Param}``); it should include ``lr``.
        defaults: the self-tuning hyperparameters (also the fallback for keys missing in a trial).
        batch_size: the global batch size on every workload (a submission may not condition on the workload).
    """

    def __init__(self, name: str, factory: OptimizerFactory, search_space: SearchSpace,
                 defaults: Mapping[str, Any], batch_size: int = 64) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string; got {name!r}")
        if not callable(factory):
            raise TypeError(f"factory must be callable; got {type(factory).__name__}")
        self.name = name
        self.factory = factory
        self._space = check_search_space(search_space)
        if not isinstance(defaults, Mapping):
            raise TypeError(f"defaults must be a mapping; got {type(defaults).__name__}")
        self._defaults = dict(defaults)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
        self.batch_size = batch_size

    def __repr__(self) -> str:
        return f"OptimizerSubmission({self.name!r})"

    def get_batch_size(self, workload_name: str) -> int:
        return self.batch_size

    def tuning_search_space(self) -> SearchSpace:
        return dict(self._space)

    def default_hyperparameters(self) -> dict[str, Any]:
        return dict(self._defaults)

    def init_optimizer_state(self, workload, model, hyperparameters, rng):
        hp = {**self._defaults, **hyperparameters}
        opt = self.factory(list(model.parameters()), hp)
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"{self.name}: factory must return a torch.optim.Optimizer; got {type(opt).__name__}")
        base = [g["lr"] for g in opt.param_groups]
        warm = float(hp.get("warmup_factor", 0.05))
        state = {"optimizer": opt, "base_lr": base, "warmup_factor": warm}
        self._set_lr(state, workload, 0)
        return state

    @staticmethod
    def _set_lr(state: dict[str, Any], workload: Workload, step: int) -> None:
        mult = warmup_cosine(step, workload.step_hint, state["warmup_factor"])
        for g, lr in zip(state["optimizer"].param_groups, state["base_lr"]):
            g["lr"] = lr * mult

    def update_params(self, workload, model, hyperparameters, batch, optimizer_state, global_step, rng):
        opt = optimizer_state["optimizer"]
        x, y = batch
        model.train()
        opt.zero_grad(set_to_none=True)
        workload.loss(model(x), y).backward()
        opt.step()
        self._set_lr(optimizer_state, workload, global_step + 1)
        return optimizer_state

    def data_selection(self, workload, input_queue, optimizer_state, model, hyperparameters, global_step, rng):
        return next(input_queue)

    def prepare_for_eval(self, workload, model, optimizer_state, hyperparameters, global_step, rng):
        return optimizer_state


# --- built-in submissions --------------------------------------------------------------------------------------
_WARM = Param(0.02, 0.1, "linear")
_WD = Param(1e-5, 1e-2, "log")
_ADAM_SPACE = {"lr": Param(3e-4, 3e-2), "one_minus_beta1": Param(0.03, 0.3), "weight_decay": _WD,
               "warmup_factor": _WARM}
_ADAM_DEFAULTS = {"lr": 3e-3, "one_minus_beta1": 0.1, "weight_decay": 1e-4, "warmup_factor": 0.05}
_SGD_SPACE = {"lr": Param(1e-2, 1.0), "one_minus_momentum": Param(0.02, 0.3), "weight_decay": _WD,
              "warmup_factor": _WARM}
_SGD_DEFAULTS = {"lr": 0.1, "one_minus_momentum": 0.1, "weight_decay": 1e-4, "warmup_factor": 0.05}


def _adamw(params, hp):
    return torch.optim.AdamW(params, lr=hp["lr"], betas=(1 - hp["one_minus_beta1"], 0.999),
                             weight_decay=hp["weight_decay"] / hp["lr"])


def _nadamw(params, hp):
    return torch.optim.NAdam(params, lr=hp["lr"], betas=(1 - hp["one_minus_beta1"], 0.999),
                             weight_decay=hp["weight_decay"] / hp["lr"], decoupled_weight_decay=True)


def _sgd(nesterov: bool) -> OptimizerFactory:
    def make(params, hp):
        return torch.optim.SGD(params, lr=hp["lr"], momentum=1 - hp["one_minus_momentum"], nesterov=nesterov,
                               weight_decay=hp["weight_decay"])
    return make


def _lion(params, hp):
    from gradlab.optim import Lion

    return Lion(params, lr=hp["lr"], betas=(1 - hp["one_minus_beta1"], 0.99), weight_decay=hp["weight_decay"] / hp["lr"])


def _diffgrad(params, hp):
    from gradlab.optim import DiffGrad

    return DiffGrad(params, lr=hp["lr"], betas=(1 - hp["one_minus_beta1"], 0.999), weight_decay=hp["weight_decay"])


def _adagradnorm(params, hp):
    from gradlab.optim import AdaGradNorm

    return AdaGradNorm(params, lr=hp["lr"], weight_decay=hp["weight_decay"])


def _clip_sgd(params, hp):
    from gradlab.optim import coordinate_clip

    return coordinate_clip(_sgd(False)(params, hp), fraction=hp["clip_fraction"])


def _program_lion(params, hp):
    from gradlab.optim.search.dsl import lion_program
    from gradlab.optim.search.optimizer import ProgramOptimizer

    return ProgramOptimizer(params, lion_program(1 - hp["one_minus_beta1"], 0.99), lr=hp["lr"],
                            weight_decay=hp["weight_decay"] / hp["lr"])


def builtin_submissions() -> dict[str, Callable[[], OptimizerSubmission]]:
    """Name -> constructor of each built-in submission. Weight decay is given as the decoupled per-step amount
    ``lr * wd`` for AdamW/NAdamW/Lion (``weight_decay`` in the search space is that product) and as L2 otherwise."""
    lion_space = {**_ADAM_SPACE, "lr": Param(3e-5, 3e-3)}
    lion_defaults = {**_ADAM_DEFAULTS, "lr": 3e-4}
    agn_space = {"lr": Param(0.03, 3.0), "weight_decay": _WD, "warmup_factor": _WARM}
    agn_defaults = {"lr": 0.3, "weight_decay": 1e-4, "warmup_factor": 0.05}
    clip_space = {**_SGD_SPACE, "clip_fraction": Param(0.01, 0.2, "linear")}
    clip_defaults = {**_SGD_DEFAULTS, "clip_fraction": 0.1}
    specs = {
        "adamw": (_adamw, _ADAM_SPACE, _ADAM_DEFAULTS),
        "nadamw": (_nadamw, _ADAM_SPACE, _ADAM_DEFAULTS),
        "sgd_momentum": (_sgd(False), _SGD_SPACE, _SGD_DEFAULTS),
        "sgd_nesterov": (_sgd(True), _SGD_SPACE, _SGD_DEFAULTS),
        "lion": (_lion, lion_space, lion_defaults),
        "diffgrad": (_diffgrad, _ADAM_SPACE, _ADAM_DEFAULTS),
        "adagradnorm": (_adagradnorm, agn_space, agn_defaults),
        "clip_sgd": (_clip_sgd, clip_space, clip_defaults),
        "program_lion": (_program_lion, lion_space, lion_defaults),
    }
    return {name: (lambda n=name, s=spec: OptimizerSubmission(n, s[0], s[1], s[2])) for name, spec in specs.items()}


BASELINES = ("adamw", "nadamw", "sgd_momentum", "sgd_nesterov")
"""AlgoPerf's target-setting optimizers."""
