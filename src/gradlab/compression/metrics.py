"""How far a compressed model is from its float reference (the measurements of JLCM, arXiv 2309.17361).

* :func:`layer_output_errors` — per compressed layer, with the *float* network's inputs :math:`X_l` to that
  layer: :math:`\\lVert f_l(X_l; \\hat W_l) - f_l(X_l; W_l)\\rVert_F / \\lVert f_l(X_l; W_l)\\rVert_F`;
* :func:`weight_errors` — :math:`\\lVert \\hat W_l - W_l\\rVert_F / \\lVert W_l\\rVert_F`;
* :func:`prediction_kl` — mean over samples of :math:`\\mathrm{KL}(p \\,\\Vert\\, q)` between the softmax outputs of
  the reference (``p``) and the compressed model (``q``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradlab.compression.joint import relative_output_error
from gradlab.compression.model import CompressedModel, capture_layer_io, validate_inputs
from gradlab.core.validation import check_tensor, check_type

__all__ = ["layer_output_errors", "prediction_kl", "weight_errors"]


def layer_output_errors(compressed: CompressedModel, inputs: torch.Tensor | tuple[torch.Tensor, ...],
                        chunk: int = 256) -> dict[str, float]:
    """Relative output error of each compressed layer on ``inputs`` fed through the float reference."""
    check_type("compressed", compressed, CompressedModel)
    xs = validate_inputs(inputs, "inputs")
    out = {}
    for name, cw in compressed.weights.items():
        layer = compressed.reference.get_submodule(name)
        x, y = capture_layer_io(compressed.reference, name, xs, chunk)
        out[name] = relative_output_error(layer, cw.to(layer.weight.device).decode(layer.weight.dtype), x, y)
    return out


def weight_errors(compressed: CompressedModel) -> dict[str, float]:
    """Relative Frobenius error of each compressed weight."""
    check_type("compressed", compressed, CompressedModel)
    out = {}
    for name, cw in compressed.weights.items():
        w = compressed.reference.get_submodule(name).weight.detach().to(torch.float64)
        w_hat = cw.to(w.device).decode(torch.float64)
        out[name] = float((w_hat - w).norm() / w.norm().clamp_min(1e-300))
    return out


def prediction_kl(reference_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """:math:`\\frac1N\\sum_n \\mathrm{KL}(\\operatorname{softmax}(a_n) \\Vert \\operatorname{softmax}(b_n))` for
    logits ``(N, classes)``."""
    check_tensor("reference_logits", reference_logits, ndim=2, floating=True, finite=True)
    check_tensor("logits", logits, ndim=2, floating=True, finite=True)
    if reference_logits.shape != logits.shape:
        raise ValueError(f"logits must have the shape of reference_logits {tuple(reference_logits.shape)}; "
                         f"got {tuple(logits.shape)}")
    lp = F.log_softmax(reference_logits.to(torch.float64), 1)
    lq = F.log_softmax(logits.to(torch.float64), 1)
    return float((lp.exp() * (lp - lq)).sum(1).mean())
