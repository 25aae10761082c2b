"""Program simplification (dead-statement removal) and hashing (behavioural fingerprints) for the search.

Lion's search (arXiv 2302.06675, Sec. 2.2) removes redundant statements before reporting a program and hashes
programs to skip evaluating duplicates. Here

* :func:`simplify` rewrites ``interp(a, a, c)`` to ``a`` and drops every statement whose result can never reach the update ``u``: a backward liveness
  pass over the straight-line body, iterated to a fixed point because the state registers ``m``, ``v`` written in
  one step are read in the next;
* :func:`fingerprint` runs the simplified program for a few steps on fixed random probe inputs and hashes the
  updates, normalised by their largest magnitude (programs that differ only by a positive scale of the update
  are the same after learning-rate tuning). Equal fingerprints = functionally equal programs (up to rounding).
  A program whose probe update is non-finite or identically zero is rejected (:class:`InvalidProgram`).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from gradlab.optim.search.dsl import OUTPUT, STATE, InvalidProgram, Program, Statement, check_program, execute

__all__ = ["simplify", "fingerprint", "canonical_text"]


def simplify(program: Program) -> Program:
    """Return ``program`` without statements that cannot influence ``u`` (directly or through the state).

    One algebraic rewrite is applied first: ``interp(a, a, c)`` (which equals ``a`` exactly) becomes
    ``scale(a, 1)``.
    """
    stmts = tuple(Statement("scale", s.dst, (s.args[0],), 1.0) if s.op == "interp" and s.args[0] == s.args[1]
                  else s for s in program.statements)
    live_end = {OUTPUT}
    live = [True] * len(stmts)
    for _ in range(len(STATE) + 2):
        needed = set(live_end)
        live = [False] * len(stmts)
        for i in range(len(stmts) - 1, -1, -1):
            s = stmts[i]
            if s.dst in needed:
                live[i] = True
                needed.discard(s.dst)
                needed.update(s.args)
        new_live_end = {OUTPUT} | (needed & set(STATE))
        if new_live_end == live_end:
            break
        live_end = new_live_end
    return Program(tuple(s for s, keep in zip(stmts, live) if keep))


def canonical_text(program: Program) -> str:
    """The text of the simplified program (a syntactic hash key)."""
    return str(simplify(program))


_PROBE_CACHE: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}


def _probe(steps: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    key = (steps, size, seed)
    if key not in _PROBE_CACHE:
        gen = torch.Generator().manual_seed(seed)
        grads = torch.randn(steps, size, generator=gen, dtype=torch.float64) + 0.3
        w = torch.randn(size, generator=gen, dtype=torch.float64)
        _PROBE_CACHE[key] = (grads, w)
    return _PROBE_CACHE[key]


def fingerprint(program: Program, steps: int = 4, size: int = 16, seed: int = 0, decimals: int = 8) -> str:
    """Hash of the program's normalised updates on fixed probe inputs; raises ``InvalidProgram`` if degenerate."""
    prog = simplify(program)
    check_program(prog)
    grads, w = _probe(steps, size, seed)
    state: dict[str, torch.Tensor] = {}
    outs = []
    with torch.no_grad():
        for t in range(steps):
            outs.append(execute(prog, grads[t], w, state).reshape(-1).clone())
    u = torch.stack(outs)
    if not torch.isfinite(u).all():
        raise InvalidProgram("the update is not finite on the probe inputs")
    peak = float(u.abs().max())
    if peak == 0.0:
        raise InvalidProgram("the update is identically zero on the probe inputs")
    values = np.round((u / peak).numpy(), decimals) + 0.0  # + 0.0 turns -0.0 into 0.0
    return hashlib.sha1(values.tobytes()).hexdigest()
