"""Time one optimizer ``step()`` of gradlab's Lion, DiffGrad and AdaGradNorm (foreach and for-loop paths) against
``torch.optim.AdamW(foreach=True)`` on the same 50-parameter-tensor models of ~1M and ~25M parameters, side by
side, and print ratios and optimizer-state bytes.

    OMP_NUM_THREADS=1 python benchmarks/optim_step.py [--sizes 1M,25M] [--device cpu]
    OMP_NUM_THREADS=1 python benchmarks/optim_step.py --width 256 --layers 25   # one custom size

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

from gradlab.optim import AdaGradNorm, DiffGrad, Lion

# 25 square layers (weight + bias = 50 tensors): width 200 -> ~1.0M parameters, width 1000 -> ~25M.
SIZES = {"1M": 200, "25M": 1000}


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
        "gradlab AdaGradNorm foreach": lambda ps: AdaGradNorm(ps, lr=1e-2, foreach=True),
        "gradlab AdaGradNorm for-loop": lambda ps: AdaGradNorm(ps, lr=1e-2, foreach=False),
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
    ap.add_argument("--sizes", default="1M,25M", help=f"comma-separated presets from {sorted(SIZES)}")
    ap.add_argument("--width", type=int, default=None, help="custom layer width (overrides --sizes)")
    ap.add_argument("--layers", type=int, default=25)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--min-run-time", type=float, default=1.0)
    args = ap.parse_args()
    if args.width is not None:
        widths = [args.width]
    else:
        unknown = [s for s in args.sizes.split(",") if s not in SIZES]
        if unknown:
            ap.error(f"--sizes: unknown preset(s) {unknown}; choose from {sorted(SIZES)}")
        widths = [SIZES[s] for s in args.sizes.split(",")]
    for width in widths:
        run_size(width, args.layers, args.device, args.min_run_time)


def run_size(width: int, layers: int, device: str, min_run_time: float) -> None:
    n_tensors = 2 * layers
    n_params = layers * (width * width + width)
    print(f"\ntorch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"{n_tensors} parameter tensors, {n_params / 1e6:.2f}M parameters (float32)")
    rows = []
    for name, make in candidates().items():
        params = make_params(width, layers, device)
        try:
            opt = make(params)
            opt.step()  # create the state
        except (RuntimeError, ValueError, TypeError) as err:  # e.g. fused on an unsupported device
            print(f"  {name}: skipped ({err})")
            continue
        timer = benchmark.Timer(stmt="opt.step()", globals={"opt": opt}, label="optimizer step", sub_label=name,
                                description=device)
        m = timer.blocked_autorange(min_run_time=min_run_time)
        rows.append((name, m.median, state_bytes(opt)))
    anchor = next(t for n, t, _ in rows if "anchor" in n)
    anchor_bytes = next(b for n, _, b in rows if "anchor" in n)
    print(f"{'optimizer':38s} {'ms/step':>9s} {'vs AdamW-foreach':>17s} {'state MiB':>10s} {'state vs AdamW':>15s}")
    for name, t, b in rows:
        print(f"{name:38s} {1e3 * t:9.3f} {t / anchor:16.2f}x {b / 2**20:10.2f} {b / anchor_bytes:14.2f}x")


if __name__ == "__main__":
    main()
