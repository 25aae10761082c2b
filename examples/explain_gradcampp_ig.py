"""Grad-CAM++ and Integrated Gradients on a small CNN, with a saved figure.

A three-layer CNN is trained for a few epochs on block digits (``(1, 16, 8)`` images in which one 8x8 block holds
the digit and the other a fixed null pattern; the digit's block is the known ground truth). Both methods follow
Captum's call shape ``Method(model, ...).attribute(inputs, target=...)`` and return one map per example, shaped
like the input (Grad-CAM++ is upsampled from the chosen layer). The script reports how much of each map's
positive mass falls on the digit's block and saves the maps beside the images.

Run: ``python examples/explain_gradcampp_ig.py`` (writes ``explanations.png``).
"""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import nn

from gradlab.explain import GradCAMpp, IntegratedGradients, attribution_mass_in_mask, make_block_digits
from gradlab.explain.robust import train_classifier

torch.set_num_threads(1)
torch.manual_seed(0)

data = make_block_digits(seed=0, classes=(3, 8), n_train=512, n_test=64)
model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
    nn.AdaptiveAvgPool2d((4, 2)), nn.Flatten(), nn.Linear(16 * 4 * 2, data.num_classes),
)
train_classifier(model, data.x_train, data.y_train, epochs=6, lr=3e-3, seed=0)  # returns the model in eval mode
with torch.no_grad():
    acc = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
print(f"test accuracy {acc:.2f}")

x, y, mask = data.x_test[:6], data.y_test[:6], data.mask_test[:6]
cam = GradCAMpp(model, layer=model[2]).attribute(x, target=y)          # (6, 1, 16, 8), upsampled
ig = IntegratedGradients(model).attribute(x, target=y, n_steps=32)     # (6, 1, 16, 8), zero baseline

for name, attr in [("Grad-CAM++", cam), ("IntegratedGradients", ig)]:
    mass = attribution_mass_in_mask(attr.clamp(min=0), mask)
    print(f"{name:20s} share of positive attribution on the digit block: {mass.mean().item():.2f}")

fig, axes = plt.subplots(3, 6, figsize=(9, 6.5))
for j in range(6):
    for i, (title, img, cmap) in enumerate([("input", x[j, 0], "gray"), ("Grad-CAM++", cam[j, 0], "magma"),
                                            ("IG", ig[j, 0], "RdBu_r")]):
        ax = axes[i, j]
        lim = img.abs().max().item() or 1.0
        ax.imshow(img.detach(), cmap=cmap, **({"vmin": -lim, "vmax": lim} if cmap == "RdBu_r" else {}))
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_ylabel(title)
    axes[0, j].set_title(f"digit {(3, 8)[data.y_test[j].item()]}")
fig.suptitle("Grad-CAM++ (layer conv2) and Integrated Gradients on block digits")
fig.tight_layout()
fig.savefig("explanations.png", dpi=100)
print("figure written: explanations.png")
