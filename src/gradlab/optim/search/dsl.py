"""A small typed language of optimizer update programs (the search space of Lion's program search).

Chen et al., "Symbolic Discovery of Optimization Algorithms" (arXiv 2302.06675), Sec. 2, search over programs
that map the weight ``w``, the gradient ``g`` and persistent state to an update. Here a program is a straight
line of statements ``dst = op(args..., const)`` over *vector* registers (same shape as ``w``) and at most one
*scalar* constant per statement:

* read-only inputs: ``g`` (gradient), ``w`` (weight);
* persistent state: ``m``, ``v`` (zeros before the first step, carried from step to step);
* temporaries: ``t0, t1, t2`` (undefined at the start of each step);
* output: ``u``; the optimizer then applies ``w <- w - lr * u``.

Each op has a type signature (number of vector arguments and the domain of its constant), which is what the
static check (:func:`check_program`) verifies before anything runs. SGD with momentum is
``m = interp(m, g, 0.1); u = scale(m, 1.0)``; Lion is ``t0 = interp(m, g, 0.9); u = sign(t0);
m = interp(m, g, 0.01)`` (``interp(a, b, c) = (1 - c) a + c b``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = [
    "INPUTS", "STATE", "TEMPS", "OUTPUT", "READABLE", "WRITABLE", "OPS", "Op", "Statement", "Program",
    "InvalidProgram", "check_program", "execute", "to_source", "sgd_momentum_program", "lion_program",
]

INPUTS = ("g", "w")
STATE = ("m", "v")
TEMPS = ("t0", "t1", "t2")
OUTPUT = "u"
READABLE = INPUTS + STATE + TEMPS + (OUTPUT,)
WRITABLE = STATE + TEMPS + (OUTPUT,)
DIV_EPS = 1e-8

Tensor = torch.Tensor


@dataclass(frozen=True)
class Op:
    """An operation: ``arity`` vector arguments, an optional constant in ``const`` domain, and its function."""

    name: str
    arity: int
    const: str | None  # None | "unit" (0 < c < 1) | "positive" (c > 0) | "real"
    fn: Callable[..., Tensor]
    fmt: str  # how :func:`to_source` writes it; {0},{1} args, {c} constant, {k} = 1 - c


def _safe_div(a: Tensor, b: Tensor) -> Tensor:
    return a * torch.sign(b) / (b.abs() + DIV_EPS)


OPS: dict[str, Op] = {op.name: op for op in (
    Op("add", 2, None, lambda a, b: a + b, "{0} + {1}"),
    Op("sub", 2, None, lambda a, b: a - b, "{0} - {1}"),
    Op("mul", 2, None, lambda a, b: a * b, "{0} * {1}"),
    Op("div", 2, None, _safe_div, "{0} / ({1} + eps)"),
    Op("interp", 2, "unit", lambda a, b, c: torch.lerp(a, b, c), "{k} * {0} + {c} * {1}"),
    Op("scale", 1, "real", lambda a, c: a * c, "{c} * {0}"),
    Op("clip", 1, "positive", lambda a, c: a.clamp(-c, c), "clip({0}, -{c}, {c})"),
    Op("sign", 1, None, torch.sign, "sign({0})"),
    Op("sqrt", 1, None, lambda a: a.abs().sqrt(), "sqrt(abs({0}))"),
    Op("square", 1, None, torch.square, "{0} ** 2"),
    Op("abs", 1, None, torch.abs, "abs({0})"),
    Op("neg", 1, None, torch.neg, "-{0}"),
)}


@dataclass(frozen=True)
class Statement:
    """``dst = op(*args, const)``."""

    op: str
    dst: str
    args: tuple[str, ...]
    const: float | None = None

    def __str__(self) -> str:
        parts = list(self.args) + ([_fmt_const(self.const)] if self.const is not None else [])
        return f"{self.dst} = {self.op}({', '.join(parts)})"


@dataclass(frozen=True)
class Program:
    """A straight-line update program; the statements run once per optimizer step."""

    statements: tuple[Statement, ...]

    def __str__(self) -> str:
        return "\n".join(str(s) for s in self.statements)

    def __len__(self) -> int:
        return len(self.statements)


class InvalidProgram(ValueError):
    """Raised by :func:`check_program` for a program that violates the typing or data-flow rules."""


def _fmt_const(c: float) -> str:
    return f"{c:.4g}"


def _const_ok(domain: str | None, c: float | None) -> bool:
    if domain is None:
        return c is None
    if c is None or not math.isfinite(c):
        return False
    if domain == "unit":
        return 0.0 < c < 1.0
    if domain == "positive":
        return c > 0.0
    return True


def check_program(program: Program, max_length: int = 12) -> None:
    """Static ("abstract") execution: raise :class:`InvalidProgram` unless the program is well typed.

    Rules: known ops with the right number of vector arguments and a constant in the op's domain; arguments are
    registers that are defined when read (temporaries and ``u`` only after being written in this step); only
    writable registers are written; ``u`` is written; ``u`` depends on ``g`` (directly or through the state,
    across steps); at most ``max_length`` statements.
    """
    if not isinstance(program, Program):
        raise InvalidProgram(f"expected a Program; got {type(program).__name__}")
    if not 1 <= len(program.statements) <= max_length:
        raise InvalidProgram(f"a program has 1..{max_length} statements; got {len(program.statements)}")
    defined = set(INPUTS) | set(STATE)
    for i, s in enumerate(program.statements):
        op = OPS.get(s.op)
        if op is None:
            raise InvalidProgram(f"statement {i}: unknown op {s.op!r}")
        if len(s.args) != op.arity:
            raise InvalidProgram(f"statement {i}: {s.op} takes {op.arity} vector arguments; got {len(s.args)}")
        if not _const_ok(op.const, s.const):
            raise InvalidProgram(f"statement {i}: constant {s.const!r} outside the {op.const} domain of {s.op}")
        for a in s.args:
            if a not in defined:
                raise InvalidProgram(f"statement {i}: {a!r} is read before it is defined")
        if s.dst not in WRITABLE:
            raise InvalidProgram(f"statement {i}: cannot write to {s.dst!r}")
        defined.add(s.dst)
    if OUTPUT not in defined:
        raise InvalidProgram("the program never writes the update u")
    if "g" not in _dependencies(program, OUTPUT):
        raise InvalidProgram("the update u does not depend on the gradient g")


def _dependencies(program: Program, target: str) -> set[str]:
    """Inputs and state that ``target`` at the end of a step depends on, following state across steps."""
    start: dict[str, set[str]] = {r: {r} for r in INPUTS + STATE}
    cur: dict[str, set[str]] = {}
    for _ in range(len(STATE) + 2):
        cur = {k: set(v) for k, v in start.items()}
        for s in program.statements:
            cur[s.dst] = set().union(*(cur.get(a, set()) for a in s.args))
        # a state register read at the next step carries what it depended on at the end of this step
        nxt = {r: (start[r] | cur[r]) if r in STATE else start[r] for r in start}
        if nxt == start:
            break
        start = nxt
    return cur.get(target, set())


def execute(program: Program, g: Tensor, w: Tensor, state: dict[str, Tensor]) -> Tensor:
    """Run one step: return the update ``u``; ``state`` (``m``, ``v``) is updated in place (dict entries)."""
    env: dict[str, Tensor] = {"g": g, "w": w}
    for r in STATE:
        if r not in state:
            state[r] = torch.zeros_like(w)
        env[r] = state[r]
    for s in program.statements:
        op = OPS[s.op]
        args = [env[a] for a in s.args]
        env[s.dst] = op.fn(*args, s.const) if op.const is not None else op.fn(*args)
    for r in STATE:
        state[r] = env[r]
    return env[OUTPUT]


def to_source(program: Program, name: str = "update") -> str:
    """Readable Python-like code of the program, with the update rule ``w <- w - lr * u`` spelled out."""
    lines = [f"def {name}(w, g, m, v, lr):", "    # m, v: optimizer state (zeros at step 0); eps = 1e-8"]
    for s in program.statements:
        op = OPS[s.op]
        c = s.const
        text = op.fmt.format(*s.args, c=_fmt_const(c) if c is not None else "",
                             k=_fmt_const(1 - c) if c is not None else "")
        lines.append(f"    {s.dst} = {text}")
    lines.append("    w = w - lr * u")
    lines.append("    return w, m, v")
    return "\n".join(lines)


def sgd_momentum_program(momentum: float = 0.9) -> Program:
    """SGD with (EMA-form) momentum: ``m = momentum * m + (1 - momentum) * g; u = m``."""
    return Program((Statement("interp", "m", ("m", "g"), 1 - momentum), Statement("scale", "u", ("m",), 1.0)))


def lion_program(beta1: float = 0.9, beta2: float = 0.99) -> Program:
    """Lion without weight decay: ``u = sign(beta1 m + (1 - beta1) g); m = beta2 m + (1 - beta2) g``."""
    return Program((
        Statement("interp", "t0", ("m", "g"), 1 - beta1),
        Statement("sign", "u", ("t0",)),
        Statement("interp", "m", ("m", "g"), 1 - beta2),
    ))
