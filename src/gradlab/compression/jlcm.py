"""JLCM: Jointly Learnable Codebooks and Mappings (Yvinec, Dapogny, Bailly; ICLR 2024, arXiv 2309.17361).

``JLCM(bits, groups, mode).fit(model, calibration_inputs)`` compresses every Linear/Conv weight of an
``nn.Module`` to ``b``-bit indices into fp16 codebooks, in three steps per layer:

1. **grouping** (:mod:`~gradlab.compression.grouping`): output neurons are re-ordered so that similarly
   distributed neurons are contiguous, and cut into ``G`` equal groups; the permutation is absorbed exactly
   into the next layer (:mod:`~gradlab.compression.permute`) — where that is impossible (the model output, a
   residual connection, ...) a warning names the layer and its groups stay in the original order;
2. **initialisation** (:mod:`~gradlab.compression.codebooks`): k-means codebooks per group
   (``mode="codebooks"``, :math:`b + 16 G 2^b/|W|` bits per weight) or one k-means codebook with an fp16 scale
   per group (``mode="scales"``, :math:`b + 16 (2^b + G)/|W|`), nearest-codeword mapping;
3. **joint learning** (:mod:`~gradlab.compression.joint`) of codebooks and mappings on the layer's outputs for
   calibration inputs fed through the float (re-ordered) network, with our proximal mapping search — each weight
   moves only between its two neighbouring codewords. The paper's mapping-gradient estimator is unpublished;
   this is our reading of its "proximal search", not the authors' formula.

After :meth:`JLCM.fit`, ``compressed_`` is the :class:`~gradlab.compression.model.CompressedModel`
(``.to_module()`` gives a normal ``nn.Module``, ``.storage()`` its bytes) and ``initial_`` the same
grouping with the k-means initialisation only (step 3 skipped), for ablations. The input model is not modified.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Iterable

import torch
from torch import nn

from gradlab.compression.codebooks import group_kmeans_codebooks, scaled_codebook
from gradlab.compression.grouping import neuron_order
from gradlab.compression.joint import JointConfig, learn_codebooks_and_mappings, relative_output_error
from gradlab.compression.model import CompressedModel, capture_layer_io, compressible_layers, run_model, \
    validate_inputs
from gradlab.compression.permute import apply_permutation, plan_reordering
from gradlab.compression.storage import CompressedWeight
from gradlab.core.seeding import torch_generator
from gradlab.core.validation import check_choice, check_int, check_type

__all__ = ["JLCM", "ReorderWarning"]


class ReorderWarning(UserWarning):
    """A layer's neurons could not be re-ordered (its permutation cannot be absorbed exactly)."""


def _max_abs_diff(a: Any, b: Any) -> tuple[float, float]:
    if isinstance(a, torch.Tensor):
        return float((a - b).abs().max()) if a.numel() else 0.0, float(a.abs().max()) if a.numel() else 0.0
    if isinstance(a, (list, tuple)):
        pairs = [_max_abs_diff(x, y) for x, y in zip(a, b)] or [(0.0, 0.0)]
        return max(p[0] for p in pairs), max(p[1] for p in pairs)
    if isinstance(a, dict):
        return _max_abs_diff(list(a.values()), [b[k] for k in a])
    return 0.0, 0.0


class JLCM:
    """Jointly learnable codebooks and mappings (see the module docstring).

    Args:
        bits: index width ``b`` in 1…8 (``2^b`` codewords).
        groups: number of neuron groups ``G`` per layer (a layer with fewer output neurons uses one per neuron).
        mode: ``"codebooks"`` (a codebook per group) or ``"scales"`` (shared codebook, a scale per group).
        steps: joint-learning steps per layer (0 = k-means initialisation only).
        lr: Adam learning rate of the mapping relaxation.
        codebook_lr: Adam learning rate of the codebooks relative to the layer's weight RMS (``scales`` mode: of
            the normalised codebook and the log-scales).
        reg_weight: weight :math:`\\lambda` of the rounding regulariser (the reconstruction term is 1 at init).
        warmup: fraction of the steps before the regulariser starts.
        beta: start and end of the regulariser's annealed exponent.
        batch_size: calibration rows per step (``None`` = all).
        reorder: re-order neurons (False keeps the original order: contiguous groups only).
        n_init: k-means++ restarts.
        layers: names of the layers to compress (default: every Linear/Conv layer).
        seed: seed of k-means and minibatch draws.
        chunk: rows per forward pass when running calibration inputs through the model.
    """

    def __init__(self, bits: int = 2, groups: int = 8, mode: str = "codebooks", *, steps: int = 400,
                 lr: float = 3e-2, codebook_lr: float = 2e-3, reg_weight: float = 4.0, warmup: float = 0.2,
                 beta: tuple[float, float] = (8.0, 2.0), batch_size: int | None = None, reorder: bool = True,
                 n_init: int = 4, layers: Iterable[str] | None = None, seed: int = 0, chunk: int = 256) -> None:
        self.bits = check_int("bits", bits, minimum=1, maximum=8)
        self.groups = check_int("groups", groups, minimum=1)
        self.mode = check_choice("mode", mode, ("codebooks", "scales"))
        self.config = JointConfig(steps=steps, lr=lr, codebook_lr=codebook_lr, reg_weight=reg_weight,
                                  warmup=warmup, beta=tuple(beta) if isinstance(beta, list) else beta,
                                  batch_size=batch_size)
        self.reorder = check_type("reorder", reorder, bool)
        self.n_init = check_int("n_init", n_init, minimum=1)
        if layers is not None and isinstance(layers, str):
            raise TypeError("layers must be a list of layer names, not a string")
        self.layers = None if layers is None else list(layers)
        self.seed = check_int("seed", seed, minimum=0)
        self.chunk = check_int("chunk", chunk, minimum=1)
        self.compressed_: CompressedModel | None = None
        self.initial_: CompressedModel | None = None
        self.permutations_: dict[str, torch.Tensor] = {}
        self.not_reordered_: dict[str, str] = {}
        self.layer_errors_: dict[str, dict[str, float]] = {}

    def __repr__(self) -> str:
        return f"JLCM(bits={self.bits}, groups={self.groups}, mode={self.mode!r}, steps={self.config.steps})"

    def _init_tables(self, w: torch.Tensor, groups: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        if self.mode == "codebooks":
            idx, books = group_kmeans_codebooks(w, self.bits, groups, n_init=self.n_init, generator=gen)
            return idx, books, None
        return scaled_codebook(w, self.bits, groups, n_init=self.n_init, generator=gen)

    def _store(self, idx: torch.Tensor, shape: torch.Size, books: torch.Tensor,
               scales: torch.Tensor | None) -> CompressedWeight:
        if self.mode == "codebooks":
            return CompressedWeight.from_indices(idx.view(shape), self.bits, "codebooks", codebooks=books)
        return CompressedWeight.from_indices(idx.view(shape), self.bits, "scales", codebooks=books, scales=scales)

    def fit(self, model: nn.Module, calibration_inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> "JLCM":
        """Compress ``model`` (not modified) using ``calibration_inputs`` (a tensor or a tuple of the model's
        positional inputs, batch first). Sets ``compressed_``, ``initial_``, ``permutations_``,
        ``not_reordered_`` and ``layer_errors_``; returns ``self``."""
        check_type("model", model, nn.Module)
        names = compressible_layers(model, self.layers)
        inputs = validate_inputs(calibration_inputs)
        reference = copy.deepcopy(model)
        was_training = reference.training
        reference.eval()

        self.permutations_, self.not_reordered_, self.layer_errors_ = {}, {}, {}
        if self.reorder:
            plans = plan_reordering(reference, names)
            for n in names:
                plan = plans[n]
                if not plan.possible:
                    self.not_reordered_[n] = plan.reason
                    warnings.warn(f"JLCM: layer '{n}' is not re-ordered: {plan.reason}; its groups are contiguous "
                                  "neurons in the original order", ReorderWarning, stacklevel=2)
                    continue
                perm = neuron_order(reference.get_submodule(n).weight.detach())
                apply_permutation(reference, plan, perm)
                self.permutations_[n] = perm
            if self.permutations_:
                probe = tuple(t[: min(64, t.shape[0])] for t in inputs)
                diff, scale = _max_abs_diff(run_model(model, probe, self.chunk),
                                            run_model(reference, probe, self.chunk))
                if not diff <= 1e-4 * (1.0 + scale):
                    raise RuntimeError(f"re-ordering changed the model's outputs (max abs diff {diff:.3g}); "
                                       "please report this model structure")
        else:
            self.not_reordered_ = {n: "reorder=False" for n in names}

        final, initial = {}, {}
        for n in names:
            layer = reference.get_submodule(n)
            w = layer.weight.detach()
            wf = w.reshape(w.shape[0], -1)
            groups = min(self.groups, w.shape[0])
            gen = torch_generator(self.seed, device=w.device)
            idx0, books0, scales0 = self._init_tables(wf, groups, gen)
            initial[n] = self._store(idx0, w.shape, books0, scales0)
            errs: dict[str, float] = {}
            if self.config.steps > 0:
                x, y = capture_layer_io(reference, n, inputs, self.chunk)
                res = learn_codebooks_and_mappings(layer, x, y, mode=self.mode, groups=groups, codebooks=books0,
                                                   scales=scales0, config=self.config, generator=gen)
                final[n] = self._store(res.indices, w.shape, res.codebooks, res.scales)
                errs = {"init": relative_output_error(layer, initial[n].decode(w.dtype).to(w.device), x, y),
                        "final": relative_output_error(layer, final[n].decode(w.dtype).to(w.device), x, y),
                        "first_loss": res.losses[0], "last_loss": res.losses[-1]}
                del x, y
            else:
                final[n] = initial[n]
            self.layer_errors_[n] = errs
        reference.train(was_training)
        info = {"bits": self.bits, "groups": self.groups, "mode": self.mode, "steps": self.config.steps,
                "not_reordered": dict(self.not_reordered_)}
        self.initial_ = CompressedModel(reference, initial, method="jlcm-init", info=info)
        self.compressed_ = CompressedModel(reference, final, method="jlcm", info={**info,
                                                                                  "layer_errors": self.layer_errors_})
        return self

    def _fitted(self) -> CompressedModel:
        if self.compressed_ is None:
            raise RuntimeError("JLCM is not fitted yet: call fit(model, calibration_inputs) first")
        return self.compressed_

    def to_module(self) -> nn.Module:
        """The compressed model as a normal ``nn.Module`` (weights decoded from the stored form)."""
        return self._fitted().to_module()

    def storage_bytes(self) -> int:
        """Total bytes of the compressed model (see :meth:`CompressedModel.storage`)."""
        return self._fitted().storage_bytes()
