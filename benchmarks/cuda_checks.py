"""Checks of the optimizers' CUDA-only paths (issue 14), prepared to run in one go when a GPU is lent.

    python benchmarks/cuda_checks.py             # needs CUDA: exit 0 when every check passes, 1 when one fails
    python benchmarks/cuda_checks.py --dry-run   # the same comparisons on the CPU (no graph capture, see below)

For Lion (``check_finite=False``), DiffGrad and AdaGradNorm, float32, a model of three tensors (one of them a
scalar), each against a for-loop optimizer fed the same gradients and learning rates:

1. ``capturable=True`` in a CUDA graph: three warm-up steps on a side stream (state allocation), one ``step()``
   captured in ``torch.cuda.graph``, then 20 replays, each after copying new gradients into the static ``.grad``
   tensors and writing a new learning rate into the tensor ``lr`` in place (as a scheduler does for a tensor
   ``lr``). The parameters must match the for-loop run (``allclose``, rtol 1e-5, atol 1e-6) and the step
   counters must read 23.
2. ``fused=True`` on CUDA (``torch.compile`` of the tensor-op update, Triton): 100 steps under an
   ``ExponentialLR`` schedule match the for-loop run (same tolerance), and no graph is compiled after the first step
   (``torch._dynamo`` counters): a scheduled lr never recompiles.

``--dry-run`` runs on the CPU with "cpu" added to torch.optim's capturable device types, the capture replaced by
eager steps and the fused step compiled by Inductor's C++ backend: it checks this script and the comparisons,
not the CUDA graph or Triton.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Callable

import torch
from torch import nn

from gradlab.optim import AdaGradNorm, DiffGrad, Lion, _fused

CASES = {
    "Lion": (Lion, {"lr": 1e-2, "weight_decay": 0.1, "check_finite": False}),
    "DiffGrad": (DiffGrad, {"lr": 1e-2, "weight_decay": 0.1}),
    "AdaGradNorm": (AdaGradNorm, {"lr": 0.1, "weight_decay": 0.1}),
}
RTOL, ATOL = 1e-5, 1e-6  # float32 trajectories whose steps round differently in the last bits (few ulps)


def _model(device: torch.device, seed: int = 0) -> list[nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(64, 32), (32,), ()]
    return [nn.Parameter(torch.randn(s, generator=gen).to(device)) for s in shapes]


def _grads(params: list[nn.Parameter], steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, generator=gen).to(p.device) for p in params] for _ in range(steps)]


def _excess(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max |a - b| / (ATOL + RTOL |b|): <= 1 where ``torch.allclose(a, b, RTOL, ATOL)`` holds."""
    return max(float(((x - y).abs() / (ATOL + RTOL * y.abs())).max()) for x, y in zip(a, b))


def check_capturable(name: str, device: torch.device, capture: bool) -> tuple[bool, str]:
    cls, kw = CASES[name]
    lrs = [kw["lr"] * 0.9 ** i for i in range(23)]
    grads = _grads(_model(device), 23)
    params, ref_params = _model(device), _model(device)
    lr = torch.tensor(lrs[0], device=device)
    opt = cls(params, **{**kw, "lr": lr}, capturable=True)
    ref = cls(ref_params, **kw, foreach=False)
    for p in params:
        p.grad = torch.zeros_like(p)
    graph: Callable[[], None]
    if capture:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for i in range(3):
                for p, g in zip(params, grads[i]):
                    p.grad.copy_(g)
                lr.fill_(lrs[i])
                opt.step()
        torch.cuda.current_stream().wait_stream(side)
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            opt.step()
        graph = cuda_graph.replay  # capturing records the step without running it: 3 steps done, 20 replays
    else:
        for i in range(3):
            for p, g in zip(params, grads[i]):
                p.grad.copy_(g)
            lr.fill_(lrs[i])
            opt.step()
        graph = opt.step
    for i in range(3, 23):
        for p, g in zip(params, grads[i]):
            p.grad.copy_(g)
        lr.fill_(lrs[i])
        graph()
    for i in range(23):
        ref.param_groups[0]["lr"] = lrs[i]
        for p, g in zip(ref_params, grads[i]):
            p.grad = g.clone()
        ref.step()
    if capture:
        torch.cuda.synchronize()
    excess = _excess([p.detach() for p in params], [p.detach() for p in ref_params])
    steps = {float(opt.state[p]["step"]) for p in params}
    ok = excess <= 1 and steps == {23.0}
    return ok, (f"max |diff| / (atol {ATOL:g} + rtol {RTOL:g} |loop|) = {excess:.3f} (<= 1), step counters "
                f"{sorted(steps)} (== [23.0])")


def check_fused_compiled(name: str, device: torch.device) -> tuple[bool, str]:
    from torch._dynamo.utils import counters

    cls, kw = CASES[name]
    grads = _grads(_model(device), 100)
    params, ref_params = _model(device), _model(device)
    opt, ref = cls(params, **kw, fused=True), cls(ref_params, **kw, foreach=False)
    scheds = [torch.optim.lr_scheduler.ExponentialLR(o, 0.97) for o in (opt, ref)]
    counters.clear()
    after_first = 0
    for i in range(100):
        for p, q, g in zip(params, ref_params, grads[i]):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        for s in scheds:
            s.step()
        if i == 0:
            after_first = counters["stats"]["unique_graphs"]
    later = counters["stats"]["unique_graphs"] - after_first
    excess = _excess([p.detach() for p in params], [p.detach() for p in ref_params])
    ok = excess <= 1 and later == 0
    return ok, (f"max |diff| / (atol {ATOL:g} + rtol {RTOL:g} |loop|) = {excess:.3f} (<= 1), graphs compiled after "
                f"the first step {later} (== 0), at the first {after_first}")


@contextlib.contextmanager
def _dry_run_environment():
    """CPU stand-ins: "cpu" counts as a capturable device, and the fused path is the compiled one."""
    import torch.optim.optimizer as torch_optimizer

    original = torch_optimizer._get_capturable_supported_devices
    torch_optimizer._get_capturable_supported_devices = lambda supports_xla=True: [*original(supports_xla), "cpu"]
    old = _fused.set_backend("cpu", "compile")
    try:
        yield
    finally:
        torch_optimizer._get_capturable_supported_devices = original
        _fused.set_backend("cpu", old)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="run the comparisons on the CPU, without graph capture")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("cuda_checks: no CUDA device here (use --dry-run to check the script on the CPU)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    env = _dry_run_environment() if args.dry_run else contextlib.nullcontext()
    failed = 0
    with env:
        print(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}"
              f"{' (dry run: no graph capture, Inductor C++ instead of Triton)' if args.dry_run else ''}")
        for name in CASES:
            for label, run in (("capturable in a CUDA graph", lambda: check_capturable(name, device, not args.dry_run)),
                               ("fused (compiled) under a scheduler", lambda: check_fused_compiled(name, device))):
                try:
                    ok, detail = run()
                except Exception as err:  # a check that crashes is a failed check, reported with its error
                    ok, detail = False, f"{type(err).__name__}: {err}"
                failed += not ok
                print(f"  {'PASS' if ok else 'FAIL'}  {name}: {label}: {detail}")
    print(f"{failed} check(s) failed" if failed else "all checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
