"""``ProgramOptimizer``: run an update program from the search as a ``torch.optim.Optimizer``.

Each parameter ``w`` with gradient ``g`` gets its own state registers ``m``, ``v`` (zeros at the first step); the
program computes ``u`` and the parameter moves by ``w <- w (1 - lr * wd) - lr * u`` (decoupled weight decay,
optional). The ``foreach`` path runs every statement as one ``torch._foreach_*`` call over all parameters of a
device/dtype group and equals the per-tensor loop.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from torch.optim import Optimizer

from gradlab.core.validation import check_positive, check_type
from gradlab.optim.search.dsl import DIV_EPS, OPS, OUTPUT, STATE, Program, check_program, execute

__all__ = ["ProgramOptimizer", "execute_foreach"]

TL = list[torch.Tensor]


def _div(a: TL, b: TL) -> TL:
    return torch._foreach_div(torch._foreach_mul(a, torch._foreach_sign(b)),
                              torch._foreach_add(torch._foreach_abs(b), DIV_EPS))


_FOREACH: dict[str, Callable[..., TL]] = {
    "add": torch._foreach_add,
    "sub": torch._foreach_sub,
    "mul": torch._foreach_mul,
    "div": _div,
    "interp": lambda a, b, c: torch._foreach_lerp(a, b, c),
    "scale": lambda a, c: torch._foreach_mul(a, c),
    "clip": lambda a, c: torch._foreach_clamp_max(torch._foreach_clamp_min(a, -c), c),
    "sign": torch._foreach_sign,
    "sqrt": lambda a: torch._foreach_sqrt(torch._foreach_abs(a)),
    "square": lambda a: torch._foreach_mul(a, a),
    "abs": torch._foreach_abs,
    "neg": torch._foreach_neg,
}
assert set(_FOREACH) == set(OPS)


def execute_foreach(program: Program, grads: TL, weights: TL, states: dict[str, TL]) -> TL:
    """:func:`~gradlab.optim.search.dsl.execute` over lists of tensors with ``torch._foreach_*`` ops."""
    env: dict[str, TL] = {"g": list(grads), "w": list(weights)}
    for r in STATE:
        env[r] = states[r]
    for s in program.statements:
        args = [env[a] for a in s.args]
        fn = _FOREACH[s.op]
        env[s.dst] = fn(*args, s.const) if OPS[s.op].const is not None else fn(*args)
    for r in STATE:
        states[r] = env[r]
    return env[OUTPUT]


class ProgramOptimizer(Optimizer):
    """An optimizer defined by an update :class:`~gradlab.optim.search.dsl.Program`.

    Args:
        params: parameters or param-group dicts.
        program: a valid program (checked at construction).
        lr: step size (> 0).
        weight_decay: decoupled, lr-scaled decay (>= 0).
        maximize: ascend instead of descend.
        foreach: use ``torch._foreach_*`` ops (``None``: on for CUDA tensors).
    """

    def __init__(self, params: Iterable[Any], program: Program, lr: float = 1e-3, weight_decay: float = 0.0, *,
                 maximize: bool = False, foreach: bool | None = None) -> None:
        check_type("program", program, Program)
        check_program(program, max_length=max(12, len(program)))
        check_positive("lr", lr)
        check_positive("weight_decay", weight_decay, allow_zero=True)
        check_type("maximize", maximize, bool)
        if foreach is not None:
            check_type("foreach", foreach, bool)
        self.program = program
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay, maximize=maximize, foreach=foreach))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        """Perform one update; ``closure`` (re-evaluating the loss) is optional."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads = [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse or torch.is_complex(p):
                    raise RuntimeError("ProgramOptimizer supports dense real gradients only")
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0, dtype=torch.float32)
                    for r in STATE:
                        st[r] = torch.zeros_like(p, memory_format=torch.preserve_format)
                params.append(p)
                grads.append(p.grad)
            if not params:
                continue
            lr, wd = float(group["lr"]), float(group["weight_decay"])
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type in ("cuda", "xpu") for p in params)
            if foreach:
                grouped = Optimizer._group_tensors_by_device_and_dtype([params, grads])
                for (ps, gs), _ in grouped.values():
                    gs = torch._foreach_neg(gs) if group["maximize"] else list(gs)
                    states = {r: [self.state[p][r] for p in ps] for r in STATE}
                    u = execute_foreach(self.program, gs, ps, states)
                    for r in STATE:
                        for p, t in zip(ps, states[r]):
                            self.state[p][r] = t
                        # (the lists hold new tensors; state keeps them)
                    torch._foreach_add_([self.state[p]["step"] for p in ps], 1)
                    if wd != 0:
                        torch._foreach_mul_(ps, 1 - lr * wd)
                    torch._foreach_add_(ps, u, alpha=-lr)
            else:
                for p, g in zip(params, grads):
                    st = self.state[p]
                    g = -g if group["maximize"] else g
                    regs = {r: st[r] for r in STATE}
                    u = execute(self.program, g, p, regs)
                    st.update(regs)
                    st["step"].add_(1)
                    if wd != 0:
                        p.mul_(1 - lr * wd)
                    p.add_(u, alpha=-lr)
        return loss

    def __repr__(self) -> str:
        return f"ProgramOptimizer(program=<{len(self.program)} statements>, lr={self.defaults['lr']})"
