"""Attribution throughput: gradlab.explain wrappers vs raw Captum, and batched Grad-CAM++ vs a per-sample loop.

Run: ``OMP_NUM_THREADS=1 python benchmarks/explain.py [--batch 32] [--repeats 3] [--device cpu]``.
Prints images/s for each pair side by side and the ratio ours/anchor (target: >= ~0.95 for the Captum wrappers,
i.e. the checks, probe pass and hook guard cost little; > 1 for Grad-CAM++ where batching pays).
On a shared CPU the ratios vary by +-40% between runs; use several repeats. The max|diff| of the pytorch-grad-cam
row is not zero: that library adds eps = 1e-6 to alpha's denominator, which matters when gradients are small
(an untrained model); the per-sample loop row is the exact-formula check.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import captum.attr as ca
from gradlab.explain import DeepLift, GradCAMpp, IntegratedGradients, Saliency, SmoothGrad


class SmallResNet(nn.Module):
    """A small ResNet-style CNN (distinct ReLU modules so DeepLIFT applies) for 3x32x32 inputs."""

    def __init__(self, width: int = 16, n_classes: int = 10):
        super().__init__()
        self.stem, self.r0 = nn.Conv2d(3, width, 3, padding=1), nn.ReLU()
        self.a1, self.ra, self.b1, self.r1 = nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU()
        self.down, self.r2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU()
        self.a2, self.rb, self.b2, self.r3 = nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, n_classes)

    def forward(self, x):
        h = self.r0(self.stem(x))
        h = self.r1(h + self.b1(self.ra(self.a1(h))))
        h = self.r2(self.down(h))
        h = self.r3(h + self.b2(self.rb(self.a2(h))))
        return self.fc(self.pool(h).flatten(1))


def naive_gradcampp(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample reference loop: one forward/backward and the alpha formula per image (the usual tutorial code)."""
    maps = []
    for i in range(x.shape[0]):
        store = {}
        h = layer.register_forward_hook(lambda m, a, o: store.setdefault("a", o))
        out = model(x[i : i + 1])
        h.remove()
        a = store["a"]
        (g,) = torch.autograd.grad(out[0, int(target[i])], a)
        a = a.detach()
        num = g.pow(2)
        den = 2 * g.pow(2) + a.sum((2, 3), keepdim=True) * g.pow(3)
        alpha = torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(den))
        w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
        cam = F.relu((w * a).sum(1, keepdim=True))
        maps.append(F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False))
    return torch.cat(maps)


def timed(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = SmallResNet().to(dev).eval()
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    t = torch.randint(0, 10, (args.batch,), device=dev)
    n = args.batch

    def nt_captum():
        torch.manual_seed(0)
        return ca.NoiseTunnel(ca.Saliency(model)).attribute(x, target=t, nt_type="smoothgrad", nt_samples=50,
                                                            stdevs=0.15, abs=False)

    pairs = [
        ("Saliency", lambda: Saliency(model).attribute(x, target=t), lambda: ca.Saliency(model).attribute(x, target=t, abs=False)),
        ("IntegratedGradients (50 steps)", lambda: IntegratedGradients(model).attribute(x, target=t, n_steps=50),
         lambda: ca.IntegratedGradients(model).attribute(x, target=t, n_steps=50)),
        ("SmoothGrad (50 samples)", lambda: SmoothGrad(model).attribute(x, target=t, n_samples=50, stdevs=0.15, seed=0),
         nt_captum),
        ("DeepLift", lambda: DeepLift(model).attribute(x, target=t), lambda: ca.DeepLift(model).attribute(x, target=t)),
        ("Grad-CAM++ (batched vs per-sample loop)", lambda: GradCAMpp(model, model.r3).attribute(x, target=t),
         lambda: naive_gradcampp(model, model.r3, x, t)),
    ]
    try:  # optional anchor: pytorch-grad-cam (dev-only dependency); its maps are min-max normalised per image
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        def pgc_run():
            with pgc.GradCAMPlusPlus(model=model, target_layers=[model.r3]) as cam:
                return torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t]))

        def ours_normalised():
            m = GradCAMpp(model, model.r3).attribute(x, target=t)[:, 0]
            m = m - m.amin((1, 2), keepdim=True)
            return (m / (1e-7 + m.amax((1, 2), keepdim=True))).cpu()

        pairs.append(("Grad-CAM++ vs pytorch-grad-cam", ours_normalised, pgc_run))
    except ImportError:
        print("pytorch-grad-cam not installed: skipping that anchor")
    print(f"device={dev}, batch={n}, threads={torch.get_num_threads()}, best of {args.repeats}")
    print(f"{'method':42s} {'ours img/s':>11s} {'anchor img/s':>13s} {'ratio':>7s} {'max|diff|':>10s}")
    for name, ours, anchor in pairs:
        t_o, a_o = timed(ours, args.repeats, dev)
        t_a, a_a = timed(anchor, args.repeats, dev)
        diff = float((a_o.detach() - a_a.detach()).abs().max())
        print(f"{name:42s} {n / t_o:11.1f} {n / t_a:13.1f} {t_a / t_o:7.2f} {diff:10.2e}")


if __name__ == "__main__":
    main()
