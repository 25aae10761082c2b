"""Lion's *system*: regularized-evolution search over optimizer update programs (arXiv 2302.06675, Sec. 2).

* :mod:`.dsl` — the typed program language (vector ops ``interp``, ``sign``, ``sqrt``, ``clip``, ...), static
  checking, execution and pretty-printing;
* :mod:`.simplify` — dead-statement removal and behavioural hashing;
* :mod:`.mutation` — insert / delete / modify mutations with invalid-program pruning;
* :mod:`.tasks` — proxy tasks scored at a tuned learning rate (vectorised over the grid);
* :mod:`.evolution` — regularized evolution with funnel selection and a pluggable executor;
* :mod:`.optimizer` — :class:`ProgramOptimizer`, a ``torch.optim.Optimizer`` that runs a found program.
"""

from gradlab.optim.search.dsl import (OPS, InvalidProgram, Program, Statement, check_program, execute,
                                      lion_program, sgd_momentum_program, to_source)
from gradlab.optim.search.evolution import (Candidate, SearchResult, evaluate_funnel, regularized_evolution,
                                            resolve_map)
from gradlab.optim.search.mutation import mutate, mutate_valid
from gradlab.optim.search.optimizer import ProgramOptimizer
from gradlab.optim.search.simplify import fingerprint, simplify
from gradlab.optim.search.tasks import ProxyTask, TaskResult, default_funnel, evaluate_on_task

__all__ = [
    "OPS", "InvalidProgram", "Program", "Statement", "check_program", "execute", "lion_program",
    "sgd_momentum_program", "to_source", "Candidate", "SearchResult", "evaluate_funnel", "regularized_evolution",
    "resolve_map", "mutate", "mutate_valid", "ProgramOptimizer", "fingerprint", "simplify", "ProxyTask",
    "TaskResult", "default_funnel", "evaluate_on_task",
]
