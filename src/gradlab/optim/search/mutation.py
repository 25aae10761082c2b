"""Random mutations of update programs: insert, delete and modify a statement (Lion's search, Sec. 2.2)."""

from __future__ import annotations

import math

import numpy as np

from gradlab.optim.search.dsl import (OPS, READABLE, WRITABLE, InvalidProgram, Program, Statement,
                                      check_program)
from gradlab.optim.search.simplify import fingerprint

__all__ = ["random_constant", "perturb_constant", "random_statement", "mutate", "mutate_valid"]

MUTATIONS = ("insert", "delete", "modify")


def random_constant(domain: str | None, rng: np.random.Generator) -> float | None:
    """A fresh constant of the domain, rounded to 3 significant digits."""
    if domain is None:
        return None
    if domain == "unit":
        c = 1.0 / (1.0 + math.exp(-rng.normal(0.0, 2.5)))
        c = min(max(c, 1e-3), 0.999)
    elif domain == "positive":
        c = math.exp(rng.normal(0.0, 2.0))
    else:
        c = float(rng.choice([-1.0, 1.0])) * math.exp(rng.normal(0.0, 1.0))
    return float(f"{c:.3g}")


def perturb_constant(domain: str | None, c: float | None, rng: np.random.Generator) -> float | None:
    """A nearby constant (logit-space step for ``unit``, log-space step for the others)."""
    if domain is None or c is None:
        return random_constant(domain, rng)
    if domain == "unit":
        logit = math.log(c / (1 - c)) + rng.normal(0.0, 1.0)
        new = min(max(1.0 / (1.0 + math.exp(-logit)), 1e-3), 0.999)
    elif domain == "positive":
        new = c * math.exp(rng.normal(0.0, 1.0))
    else:
        new = c * math.exp(rng.normal(0.0, 0.7)) * (-1.0 if rng.random() < 0.1 else 1.0)
    return float(f"{new:.3g}")


def random_statement(rng: np.random.Generator, dst: str | None = None) -> Statement:
    """A statement with a random op, destination, arguments and constant."""
    op = OPS[str(rng.choice(sorted(OPS)))]
    args = tuple(str(rng.choice(READABLE)) for _ in range(op.arity))
    return Statement(op.name, dst or str(rng.choice(WRITABLE)), args, random_constant(op.const, rng))


def mutate(program: Program, rng: np.random.Generator, max_length: int = 12) -> Program:
    """Apply one random mutation (the result may be invalid; see :func:`mutate_valid`)."""
    stmts = list(program.statements)
    kind = str(rng.choice(MUTATIONS))
    if kind == "insert" and len(stmts) < max_length:
        stmts.insert(int(rng.integers(0, len(stmts) + 1)), random_statement(rng))
    elif kind == "delete" and len(stmts) > 1:
        del stmts[int(rng.integers(0, len(stmts)))]
    else:
        i = int(rng.integers(0, len(stmts)))
        s = stmts[i]
        what = str(rng.choice(["op", "arg", "dst", "const"]))
        if what == "op":
            op = OPS[str(rng.choice(sorted(OPS)))]
            args = tuple(s.args[k] if k < len(s.args) else str(rng.choice(READABLE)) for k in range(op.arity))
            const = s.const if (op.const == OPS[s.op].const and s.const is not None) else random_constant(op.const, rng)
            stmts[i] = Statement(op.name, s.dst, args, const)
        elif what == "arg" and s.args:
            k = int(rng.integers(0, len(s.args)))
            args = list(s.args)
            args[k] = str(rng.choice(READABLE))
            stmts[i] = Statement(s.op, s.dst, tuple(args), s.const)
        elif what == "dst":
            stmts[i] = Statement(s.op, str(rng.choice(WRITABLE)), s.args, s.const)
        else:
            stmts[i] = Statement(s.op, s.dst, s.args, perturb_constant(OPS[s.op].const, s.const, rng))
    return Program(tuple(stmts))


def mutate_valid(program: Program, rng: np.random.Generator, max_length: int = 12,
                 max_tries: int = 100) -> tuple[Program, str]:
    """Mutate until the child passes the static check and the probe (invalid-program pruning).

    Returns the child and its fingerprint; if ``max_tries`` mutations all fail, returns the parent.
    """
    for _ in range(max_tries):
        child = mutate(program, rng, max_length)
        try:
            check_program(child, max_length)
            return child, fingerprint(child)
        except InvalidProgram:
            continue
    return program, fingerprint(program)
