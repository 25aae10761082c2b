"""Benchmark your own optimizer with ``gradlab bench``: an RMSprop submission against AdamW and SGD-Nesterov.

The submission is defined in this file and passed to the bench as ``__main__:submission`` (any
``package.module:attr`` works the same way). Smoke sizes, so it runs in seconds; drop ``--scale smoke`` and raise
``--trials``/``--studies`` for a real comparison. Writes ``bench-out/BENCH.md``, ``profile.png`` and ``results.json``.
"""

import torch

from gradlab.bench import OptimizerSubmission, Param
from gradlab.cli import main

torch.set_num_threads(1)


def make_rmsprop(params, hp):
    return torch.optim.RMSprop(params, lr=hp["lr"], alpha=1 - hp["one_minus_alpha"])


submission = OptimizerSubmission(
    "rmsprop", make_rmsprop,
    search_space={"lr": Param(1e-4, 1e-2), "one_minus_alpha": Param(0.001, 0.1)},  # log-uniform ranges
    defaults={"lr": 1e-3, "one_minus_alpha": 0.01},
    batch_size=64,
)

if __name__ == "__main__":
    code = main(["bench", "--scale", "smoke", "--submissions", "__main__:submission,adamw,sgd_nesterov",
                 "--workloads", "digits_mlp", "--trials", "2", "--studies", "1", "--clock", "process",
                 "--out", "bench-out"])
    print(f"gradlab bench exit code {code}; see bench-out/BENCH.md")
