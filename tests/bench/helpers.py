"""Small workloads and submissions for the bench tests (importable as ``tests.bench.helpers:NAME``)."""

from __future__ import annotations

import time

import torch
from torch import nn
from torch.nn import functional as F

from gradlab.bench.submission import OptimizerSubmission
from gradlab.bench.tuning import Param
from gradlab.bench.workloads import Workload


class LinearRegressionWorkload(Workload):
    """y = x w + 0.1 noise, 8 features, a linear model: reaches MSE 0.05 in a few dozen SGD steps."""

    name = "linreg"
    target_metric_name = "mse"
    higher_is_better = False
    validation_target = 0.05
    max_runtime_s = 5.0
    step_hint = 120
    eval_period_steps = 5

    def _make_data(self):
        g = torch.Generator().manual_seed(0)
        w = torch.randn(8, 1, generator=g)
        x = torch.randn(400, 8, generator=g)
        y = x @ w + 0.1 * torch.randn(400, 1, generator=g)
        return x[:300], y[:300], x[300:], y[300:]

    def init_model(self, seed):
        torch.manual_seed(seed)
        return nn.Linear(8, 1)

    def loss(self, outputs, targets):
        return F.mse_loss(outputs, targets)

    def metric(self, outputs, targets):
        return float(F.mse_loss(outputs, targets))


class SlowStepSubmission(OptimizerSubmission):
    """SGD whose every update takes at least ``delay`` seconds (to test the clock)."""

    def __init__(self, delay: float = 0.002) -> None:
        super().__init__("slow_sgd", lambda p, hp: torch.optim.SGD(p, lr=hp["lr"]), {"lr": Param(0.05, 0.2)},
                         {"lr": 0.1, "warmup_factor": 0.05}, batch_size=32)
        self.delay = delay

    def update_params(self, *args, **kwargs):
        time.sleep(self.delay)
        return super().update_params(*args, **kwargs)


class BrokenSubmission(OptimizerSubmission):
    """Raises in ``update_params``."""

    def __init__(self) -> None:
        super().__init__("broken", lambda p, hp: torch.optim.SGD(p, lr=hp["lr"]), {"lr": Param(0.05, 0.2)},
                         {"lr": 0.1}, batch_size=32)

    def update_params(self, *args, **kwargs):
        raise RuntimeError("deliberately broken")


def sgd_submission() -> OptimizerSubmission:
    """A plain SGD submission (a factory, as a third-party package could expose)."""
    return OptimizerSubmission("plain_sgd", lambda p, hp: torch.optim.SGD(p, lr=hp["lr"]), {"lr": Param(0.02, 0.3)},
                               {"lr": 0.1, "warmup_factor": 0.05}, batch_size=32)


NOT_A_SUBMISSION = 42
