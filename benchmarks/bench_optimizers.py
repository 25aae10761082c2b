"""Time one optimizer ``step()`` of gradlab's Lion and DiffGrad (foreach and for-loop paths) against
``torch.optim.AdamW(foreach=True)`` on the same ~50-parameter-tensor model, side by side, and print ratios.

    OMP_NUM_THREADS=1 python benchmarks/bench_optimizers.py [--width 256] [--layers 25] [--device cpu]

Every optimizer steps on identical fresh parameters with fixed random gradients; timings come from
``torch.utils.benchmark.Timer.blocked_autorange`` (median per step). Optimizer-state bytes are measured on the
live optimizer after the first step. pytorch_optimizer's Lion/DiffGrad are included when installed.
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn
from torch.utils import benchmark

from gradlab.optim import DiffGrad, Lion


def make_params(width: int, layers: int, device: str) -> list[nn.Parameter]:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)]).to(device)  # 2 tensors per layer
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    return params


def candidates() -> dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]]:
    c: dict[str, Callable] = {
        "torch AdamW foreach (anchor)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, foreach=True),
        "torch AdamW for-loop": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, foreach=False),
        "torch AdamW fused": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=0.01, fused=True),
        "gradlab Lion foreach": lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1, foreach=True),
        "gradlab Lion for-loop": lambda ps: Lion(ps, lr=1e-4, weight_decay=0.1, foreach=False),
        "gradlab DiffGrad foreach": lambda ps: DiffGrad(ps, lr=1e-3, weight_decay=0.01, decoupled_weight_decay=True,
                                                        foreach=True),
        "gradlab DiffGrad for-loop": lambda ps: DiffGrad(ps, lr=1e-3, weight_decay=0.01, decoupled_weight_decay=True,
                                                         foreach=False),
    }
    try:
        import pytorch_optimizer as po

        c["pytorch_optimizer Lion foreach"] = lambda ps: po.Lion(ps, lr=1e-4, weight_decay=0.1, foreach=True)
        c["pytorch_optimizer DiffGrad foreach"] = lambda ps: po.DiffGrad(ps, lr=1e-3, weight_decay=0.01, foreach=True)
    except ImportError:
        pass
    return c


def state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values() if torch.is_tensor(v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=25)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--min-run-time", type=float, default=1.0)
    args = ap.parse_args()
    n_tensors = 2 * args.layers
    n_params = args.layers * (args.width * args.width + args.width)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"{n_tensors} parameter tensors, {n_params / 1e6:.2f}M parameters (float32)")
    rows = []
    for name, make in candidates().items():
        params = make_params(args.width, args.layers, args.device)
        try:
            opt = make(params)
            opt.step()  # create the state
        except (RuntimeError, ValueError, TypeError) as err:  # e.g. fused on an unsupported device
            print(f"  {name}: skipped ({err})")
            continue
        timer = benchmark.Timer(stmt="opt.step()", globals={"opt": opt}, label="optimizer step", sub_label=name,
                                description=args.device)
        m = timer.blocked_autorange(min_run_time=args.min_run_time)
        rows.append((name, m.median, state_bytes(opt)))
    anchor = next(t for n, t, _ in rows if "anchor" in n)
    anchor_bytes = next(b for n, _, b in rows if "anchor" in n)
    print(f"{'optimizer':38s} {'ms/step':>9s} {'vs AdamW-foreach':>17s} {'state MiB':>10s} {'state vs AdamW':>15s}")
    for name, t, b in rows:
        print(f"{name:38s} {1e3 * t:9.3f} {t / anchor:16.2f}x {b / 2**20:10.2f} {b / anchor_bytes:14.2f}x")


if __name__ == "__main__":
    main()
