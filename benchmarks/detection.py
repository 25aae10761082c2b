"""Detection benchmarks (gradlab.detection): GELAN against a plain CSP network of equal size, side by side.

* ``forward``: eval-mode forward time of GELAN-t (width 0.5, depth 1/3; the claims' model) vs a plain CSP network
  with the same PAN neck and head where every ELAN block (ELAN1, RepNCSPELAN4) is one CSP stage (RepNCSP, CSPNet)
  and every AConv a stride-2 3x3 Conv, its width and depth chosen so the parameter counts agree within 5 %; 64 px (batch 8)
  and 320 px (batch 1). Medians of ``torch.utils.benchmark.Timer.blocked_autorange``, ratio GELAN / CSP.
* ``map``: held-out mAP50 / mAP50-95 of both after the same short training (the claims' recipe, ``--steps``,
  ``--seeds`` initialisations; mean ratio).
* ``strip``: inference time of the stripped PGI detector vs a GELAN-t built directly (same graph; target 1.0).

    OMP_NUM_THREADS=1 python benchmarks/detection.py [--only forward,map,strip] [--steps 150] [--seeds 3] [--min-run-time 1.0]
"""

from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch.utils import benchmark

import gradlab.detection as det
from gradlab.detection.gelan import GELANSpec, LayerSpec
from gradlab.papers import _yolov9_training as yt

WIDTH, DEPTH = 0.5, 1 / 3


def csp_spec() -> GELANSpec:
    """gelan-t's layout with each ELAN block replaced by a CSP stage (RepNCSP) and AConv by a stride-2 Conv."""
    rows = []
    for row in det.gelan_spec_t().layers:
        if row.module in ("ELAN1", "RepNCSPELAN4"):
            n = row.args[3] if row.module == "RepNCSPELAN4" else 1
            rows.append(LayerSpec(row.from_, "RepNCSP", (row.args[0], n)))
        elif row.module == "AConv":
            rows.append(LayerSpec(row.from_, "Conv", (row.args[0], 3, 2)))
        else:
            rows.append(row)
    return GELANSpec(layers=tuple(rows), backbone=9, levels=(4, 6, 8), name="csp-t")


def _params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def matched_csp(nc: int = 2) -> tuple[det.GELANDetector, det.GELANDetector]:
    """(GELAN-t, plain CSP) with the CSP width searched so its parameter count is within 5 % of GELAN-t's."""
    torch.manual_seed(0)
    gelan = det.GELANDetector(det.gelan_spec_t(), nc=nc, width=WIDTH, depth=DEPTH)
    target = _params(gelan)
    best = None
    for d in (1 / 3, 2 / 3, 1.0):
        for w in [0.30 + 0.025 * i for i in range(40)]:
            n = _params(det.GELANDetector(csp_spec(), nc=nc, width=w, depth=d))
            gap = abs(n - target) / target
            if best is None or gap < best[0]:
                best = (gap, w, d)
    gap, w, d = best
    if gap > 0.05:
        raise RuntimeError(f"no CSP width/depth within 5 % of GELAN-t's {target} parameters (best {gap:.1%})")
    torch.manual_seed(0)
    csp = det.GELANDetector(csp_spec(), nc=nc, width=w, depth=d)
    csp.searched = (w, d)
    return gelan, csp


def _median(fn: Callable[[], object], label: str, min_run_time: float) -> float:
    return benchmark.Timer(stmt="fn()", globals={"fn": fn}, label=label).blocked_autorange(min_run_time=min_run_time).median


def _side_by_side(fns: dict[str, Callable[[], object]], min_run_time: float, rounds: int = 5) -> dict[str, float]:
    """Best of ``rounds`` interleaved medians per variant (interleaving spreads machine noise over all of them)."""
    best = {k: float("inf") for k in fns}
    for fn in fns.values():  # warm-up (allocator, oneDNN primitive caches)
        for _ in range(3):
            fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            best[k] = min(best[k], _median(fn, k, min_run_time / rounds))
    return best


def bench_forward(min_run_time: float, **_: object) -> None:
    gelan, csp = matched_csp()
    gelan.eval()
    csp.eval()
    print(f"\nforward (eval): GELAN-t {_params(gelan) / 1e6:.3f}M vs CSP {_params(csp) / 1e6:.3f}M "
          f"(width {csp.searched[0]:.3f}, depth {csp.searched[1]:.2f}, {(_params(csp) / _params(gelan) - 1):+.1%})")
    for size, batch in ((64, 8), (320, 1)):
        x = torch.rand(batch, 3, size, size)
        with torch.no_grad():
            t = _side_by_side({"gelan": lambda: gelan(x), "csp": lambda: csp(x)}, min_run_time)
        tg, tc = t["gelan"], t["csp"]
        print(f"  {size:4d} px batch {batch}: GELAN {1e3 * tg:8.2f} ms  CSP {1e3 * tc:8.2f} ms  GELAN/CSP {tg / tc:.3f}x")


def bench_map(steps: int, seeds: int = 3, **_: object) -> None:
    r = dict(yt.recipe_for("quick"), steps=steps, eval_every=steps)
    data = yt.datasets(r)
    print(f"\nmAP after {steps} equal steps (recipe of the YOLOv9 claims), seeds 0..{seeds - 1}:")
    res: dict[str, list] = {"GELAN-t": [], "CSP": []}
    for seed in range(seeds):
        gelan, csp = matched_csp(r["nc"])
        for name, model in (("GELAN-t", gelan), ("CSP", csp)):
            torch.manual_seed(seed)
            model = type(model)(model.spec, nc=model.nc, width=model.width, depth=model.depth)  # init from seed
            trained, curve = yt.train("plain", r, seed, data, model=model)
            ev = yt.evaluate(trained, data[2], data[3], r["nc"])
            res[name].append((ev["map50"], ev["map50_95"]))
            print(f"  seed {seed} {name:8s} mAP50 {ev['map50']:.3f}  mAP50-95 {ev['map50_95']:.3f}  "
                  f"({curve['train_seconds']:.0f} s)")
    mean = {k: [sum(v[i] for v in vals) / len(vals) for i in (0, 1)] for k, vals in res.items()}
    print(f"  mean GELAN-t mAP50 {mean['GELAN-t'][0]:.3f} / mAP50-95 {mean['GELAN-t'][1]:.3f}; CSP "
          f"{mean['CSP'][0]:.3f} / {mean['CSP'][1]:.3f}; ratio GELAN/CSP mAP50 "
          f"{mean['GELAN-t'][0] / max(mean['CSP'][0], 1e-9):.3f}x, mAP50-95 {mean['GELAN-t'][1] / max(mean['CSP'][1], 1e-9):.3f}x")


def bench_strip(min_run_time: float, **_: object) -> None:
    torch.manual_seed(0)
    pgi = det.YOLOv9PGI(det.gelan_spec_t(), nc=2, width=WIDTH, depth=DEPTH).eval()
    stripped = pgi.strip_auxiliary().eval()
    plain = det.GELANDetector(det.gelan_spec_t(), nc=2, width=WIDTH, depth=DEPTH).eval()
    x = torch.rand(8, 3, 64, 64)
    with torch.no_grad():
        t = _side_by_side({"stripped": lambda: stripped(x), "gelan": lambda: plain(x), "pgi": lambda: pgi(x)},
                          min_run_time)
    ts, tg, tp = t["stripped"], t["gelan"], t["pgi"]
    print(f"\ninference 64 px batch 8: stripped PGI {1e3 * ts:.2f} ms, GELAN-t {1e3 * tg:.2f} ms, PGI in eval "
          f"{1e3 * tp:.2f} ms; stripped/GELAN {ts / tg:.3f}x (target 1.0), PGI-eval/GELAN {tp / tg:.3f}x; "
          f"parameters {_params(stripped)} vs {_params(plain)}")


BENCHES = {"forward": bench_forward, "map": bench_map, "strip": bench_strip}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default=",".join(BENCHES))
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--min-run-time", type=float, default=1.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name in args.only.split(","):
        BENCHES[name](min_run_time=args.min_run_time, steps=args.steps, seeds=args.seeds)


if __name__ == "__main__":
    main()
