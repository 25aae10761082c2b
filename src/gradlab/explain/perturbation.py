"""Perturbation-based attributions wrapping Captum: occlusion, LIME and KernelSHAP.

* :class:`Occlusion` (Zeiler & Fergus 2014): attr_i = mean over windows W containing i of
  f(x) - f(x with W set to the baseline); Captum's ``Occlusion`` (window and stride required here).
* :class:`Lime` (Ribeiro, Singh, Guestrin 2016): fit g(z) = w . z + b to f(z * x + (1 - z) * x') over
  z ~ Bernoulli(0.5)^M with weights pi(z) = exp(-d(x, x_z)^2 / (2 w^2)). Paper-faithful defaults differ from
  Captum's: ordinary least squares instead of Lasso(alpha=0.01), the **Euclidean** distance instead of the cosine
  distance, kernel width 0.75 sqrt(M) (the lime package's tabular default) instead of 1.0, and 1000 samples instead
  of 50. Captum's defaults do not recover a linear model (research note §3e); these do.
* :class:`KernelShap` (Lundberg & Lee 2017): the Shapley kernel ``pi(z) = (M - 1) / (C(M, |z|) |z| (M - |z|))``,
  solved by least squares; default 2M + 2048 samples (the shap package's default) instead of Captum's 25.

``chunk_size`` maps to Captum's ``perturbations_per_eval``; ``seed`` seeds the sampling without touching the
global RNG.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator

import torch

from gradlab.core.validation import check_choice, check_int, check_positive
from gradlab.explain._common import TargetType, check_int_sequence, hook_guard, watch_outputs
from gradlab.explain._inputs import InputsType, as_inputs, captum_target, merge_chunks, slice_args, slice_inputs
from gradlab.explain.gradients import Attribution, _captum_attr, expand_baselines_for


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Fork the global torch RNG and seed it (no-op when ``seed`` is None)."""
    if seed is None:
        yield
        return
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(check_int("seed", seed, minimum=0))
        yield


def _check_mask(feature_mask: Any, inputs: torch.Tensor, name: str = "feature_mask",
                check_ids: bool = True) -> torch.Tensor | None:
    """An integer feature mask of one example's shape or of the batch's (first dimension 1 or N), each row holding
    the ids 0, 1, ..., M-1 (M may differ between rows; the ids are checked when ``check_ids``)."""
    if feature_mask is None:
        return None
    if not isinstance(feature_mask, torch.Tensor):
        raise TypeError(f"{name} must be an integer tensor of feature ids; got {type(feature_mask).__name__}")
    if feature_mask.is_floating_point() or feature_mask.is_complex() or feature_mask.dtype == torch.bool:
        hint = " (a boolean selection is not a feature mask: give every group its own id 0..M-1)" \
            if feature_mask.dtype == torch.bool else ""
        raise TypeError(f"{name} must be an integer tensor of feature ids; got dtype {feature_mask.dtype}{hint}")
    m = feature_mask.long()
    if m.shape == inputs.shape[1:]:
        m = m.unsqueeze(0)
    if m.ndim != inputs.ndim or m.shape[1:] != inputs.shape[1:] or m.shape[0] not in (1, inputs.shape[0]):
        raise ValueError(
            f"{name} must have the shape of one example {tuple(inputs.shape[1:])} or of the batch; "
            f"got {tuple(feature_mask.shape)}"
        )
    if not check_ids:
        return m
    for i in range(m.shape[0]):
        ids = torch.unique(m[i])
        if not torch.equal(ids, torch.arange(len(ids))):
            raise ValueError(f"feature_mask ids must be 0, 1, ..., M-1 (consecutive) in every row; row {i} holds "
                             f"{ids[:8].tolist()}{' ...' if len(ids) > 8 else ''}")
    return m


def _row_mask(mask: torch.Tensor | None, i: int) -> torch.Tensor | None:
    return None if mask is None else mask[min(i, mask.shape[0] - 1)].unsqueeze(0)


def _num_features(mask: torch.Tensor | None, inputs: torch.Tensor, i: int = 0) -> int:
    """M, the number of interpretable features of example ``i`` (its mask's ids, or its scalars)."""
    return int(inputs[0].numel()) if mask is None else int(_row_mask(mask, i).max()) + 1


def _check_masks(feature_mask: Any, xs: tuple[torch.Tensor, ...], is_tuple: bool) -> tuple | None:
    """Feature masks per input (Captum's convention for tuple inputs: a tuple of masks, one per input, whose ids
    together are 0, 1, ..., M-1 in every example, so a feature may span several inputs)."""
    if not is_tuple:
        m = _check_mask(feature_mask, xs[0])
        return None if m is None else (m,)
    if feature_mask is None:
        return None
    if not isinstance(feature_mask, tuple) or len(feature_mask) != len(xs):
        raise TypeError(f"feature_mask for a tuple of {len(xs)} inputs must be a tuple of {len(xs)} integer masks "
                        f"(one per input); got {type(feature_mask).__name__}"
                        f"{f' of length {len(feature_mask)}' if isinstance(feature_mask, tuple) else ''}")
    ms = tuple(_check_mask(m, x, f"feature_mask[{j}]", check_ids=False) for j, (m, x) in enumerate(zip(feature_mask, xs)))
    rows = max(m.shape[0] for m in ms)
    for i in range(rows):
        ids = torch.unique(torch.cat([_row_mask(m, i).flatten() for m in ms]))
        if not torch.equal(ids, torch.arange(len(ids))):
            raise ValueError(f"feature_mask ids must be 0, 1, ..., M-1 (consecutive) across the inputs in every row; "
                             f"row {i} holds {ids[:8].tolist()}{' ...' if len(ids) > 8 else ''}")
    return ms


def _row_masks(masks: tuple | None, i: int, is_tuple: bool) -> Any:
    """Example ``i``'s masks as Captum takes them (``None``, one tensor, or a tuple)."""
    if masks is None:
        return None
    rows = tuple(_row_mask(m, i) for m in masks)
    return rows if is_tuple else rows[0]


def _num_features_all(masks: tuple | None, xs: tuple[torch.Tensor, ...], i: int = 0) -> int:
    """M of example ``i`` over all inputs (the mask ids, or every scalar of every input)."""
    if masks is None:
        return sum(int(x[0].numel()) for x in xs)
    return max(int(_row_mask(m, i).max()) for m in masks) + 1


def _check_windows(name: str, value: Any, xs: tuple[torch.Tensor, ...], is_tuple: bool) -> tuple:
    """Per-input values of ``sliding_window_shapes``/``strides`` for a tuple of inputs (a tuple, one per input)."""
    if not is_tuple or value is None or (name == "strides" and not isinstance(value, (tuple, list))):
        return (value,) * len(xs)
    if not isinstance(value, tuple) or len(value) != len(xs):
        raise ValueError(f"{name} for a tuple of {len(xs)} inputs must be a tuple with one entry per input; got "
                         f"{value!r}")
    return value


def _occlusion_window(x: torch.Tensor, sliding_window_shapes: Any, strides: Any, sfx: str = "") -> tuple:
    """Validate one input's window and strides (one entry per non-batch dimension)."""
    shape = tuple(x.shape[1:])
    win = (1,) * len(shape) if sliding_window_shapes is None else \
        check_int_sequence(f"sliding_window_shapes{sfx}", sliding_window_shapes, minimum=1)
    if len(win) != len(shape) or not all(1 <= w <= s for w, s in zip(win, shape)):
        raise ValueError(f"sliding_window_shapes{sfx} must give one window size in [1, dim] per input dim {shape}; "
                         f"got {win}")
    if strides is not None:
        st = (check_int(f"strides{sfx}", strides, minimum=1),) * len(shape) if not isinstance(strides, (tuple, list)) \
            else check_int_sequence(f"strides{sfx}", strides, minimum=1, length=len(shape))
        if any(s > w for s, w in zip(st, win)):
            raise ValueError(f"strides{sfx} must not exceed sliding_window_shapes{sfx} {win} (windows would skip "
                             f"inputs); got {st}")
        strides = st
    return win, strides


class Occlusion(Attribution):
    """Occlusion: ``Occlusion(model).attribute(x, target, sliding_window_shapes=(1, 4, 4), strides=(1, 2, 2))``."""

    needs_input_gradient = False

    def attribute(
        self,
        inputs: InputsType,
        target: TargetType = None,
        sliding_window_shapes: tuple[int, ...] | None = None,
        strides: int | tuple[int, ...] | None = None,
        baselines: Any = None,
        chunk_size: int | None = None,
        additional_forward_args: Any = None,
    ) -> InputsType:
        """Return the occlusion map shaped like ``inputs``.

        ``sliding_window_shapes`` has one entry per non-batch dimension (default: every scalar alone);
        ``strides`` is one int for every dimension or one per dimension, each in [1, window] (default 1).
        For a tuple of inputs (a tuple of maps is returned) both are tuples with one entry per input, as in
        Captum, and so are ``baselines``; ``additional_forward_args`` are passed to the model after the inputs.
        """
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        wins = _check_windows("sliding_window_shapes", sliding_window_shapes, xs, is_tuple)
        sts = _check_windows("strides", strides, xs, is_tuple)
        checked = [_occlusion_window(x, w, s, f"[{j}]" if is_tuple else "")
                   for j, (x, w, s) in enumerate(zip(xs, wins, sts))]
        if is_tuple:
            win = tuple(c[0] for c in checked)
            strides = tuple((1,) * len(c[0]) if c[1] is None else c[1] for c in checked)
        else:
            win, strides = checked[0]
        b = expand_baselines_for(baselines, xs, is_tuple)
        with hook_guard(self.model), watch_outputs(self.model) as f:
            occ = _captum_attr().Occlusion(f)
            a = occ.attribute(
                as_inputs(xs, is_tuple), sliding_window_shapes=win, strides=strides, baselines=as_inputs(b, is_tuple),
                target=captum_target(t), additional_forward_args=args, perturbations_per_eval=1 if cs is None else cs,
            )
        if is_tuple:
            return tuple(p.detach().to(x.dtype) for p, x in zip(a, xs))
        return a.detach().to(xs[0].dtype)


class Lime(Attribution):
    """LIME with ordinary least squares and a Euclidean exponential kernel (see the module docstring)."""

    needs_input_gradient = False

    def attribute(
        self,
        inputs: InputsType,
        target: TargetType = None,
        n_samples: int = 1000,
        feature_mask: torch.Tensor | None = None,
        baselines: Any = None,
        kernel_width: float | None = None,
        distance: str = "euclidean",
        interpretable_model: str = "ols",
        alpha: float = 0.01,
        seed: int | None = None,
        chunk_size: int | None = None,
        additional_forward_args: Any = None,
    ) -> InputsType:
        """Return LIME coefficients broadcast to ``inputs``' shape (features = scalars or ``feature_mask`` groups).

        Args:
            kernel_width: w of pi = exp(-d^2 / (2 w^2)); default 0.75 sqrt(M) (M of each example's mask).
            distance: ``"euclidean"`` (original LIME) or ``"cosine"`` (Captum's default).
            interpretable_model: ``"ols"`` (default), ``"lasso"`` (Captum's default, with ``alpha``) or ``"ridge"``.
            additional_forward_args: passed to the model after the inputs, not attributed.

        A tuple of inputs gives a tuple of coefficient maps; ``feature_mask`` and ``baselines`` are then tuples
        with one entry per input (the mask ids numbered jointly across the inputs, as in Captum) and the distance
        is taken over all inputs concatenated.
        """
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        x = xs[0]
        n_samples = check_int("n_samples", n_samples, minimum=2)
        check_choice("distance", distance, ("euclidean", "cosine"))
        check_choice("interpretable_model", interpretable_model, ("ols", "lasso", "ridge"))
        if interpretable_model != "ols":
            check_positive("alpha", alpha, allow_zero=True)
        mask = _check_masks(feature_mask, xs, is_tuple)
        width = None if kernel_width is None else check_positive("kernel_width", kernel_width)
        ca = _captum_attr()
        from captum._utils.models.linear_model import SkLearnLasso, SkLearnLinearRegression, SkLearnRidge

        model_cls = {"ols": SkLearnLinearRegression, "lasso": SkLearnLasso, "ridge": SkLearnRidge}[interpretable_model]
        b = expand_baselines_for(baselines, xs, is_tuple)
        out = []
        with hook_guard(self.model), watch_outputs(self.model) as f, seeded(seed, x.device):
            for i in range(x.shape[0]):
                interp = model_cls() if interpretable_model == "ols" else model_cls(alpha=alpha)
                w_i = 0.75 * math.sqrt(_num_features_all(mask, xs, i)) if width is None else width
                lime = ca.Lime(
                    f, interpretable_model=interp,
                    similarity_func=ca._core.lime.get_exp_kernel_similarity_function(distance, w_i),
                )
                a = lime.attribute(
                    slice_inputs(xs, slice(i, i + 1), is_tuple), target=captum_target(t, slice(i, i + 1)),
                    baselines=slice_inputs(b, slice(i, i + 1), is_tuple), feature_mask=_row_masks(mask, i, is_tuple),
                    additional_forward_args=slice_args(args, slice(i, i + 1)),
                    n_samples=n_samples, perturbations_per_eval=1 if cs is None else cs, return_input_shape=True,
                )
                out.append(a)
        merged = merge_chunks(out, is_tuple, False)
        if is_tuple:
            return tuple(p.to(xx.dtype) for p, xx in zip(merged, xs))
        return merged.to(x.dtype)


class KernelShap(Attribution):
    """KernelSHAP (Shapley-kernel weighted least squares) wrapping ``captum.attr.KernelShap``."""

    needs_input_gradient = False

    def attribute(
        self,
        inputs: InputsType,
        target: TargetType = None,
        n_samples: int | None = None,
        feature_mask: torch.Tensor | None = None,
        baselines: Any = None,
        seed: int | None = None,
        chunk_size: int | None = None,
        additional_forward_args: Any = None,
    ) -> InputsType:
        """Return Shapley-value estimates broadcast to ``inputs``' shape; ``n_samples`` defaults to 2M + 2048
        (M of each example's mask). A tuple of inputs gives a tuple of maps (``feature_mask`` and ``baselines``
        one entry per input, the mask ids numbered jointly, as in Captum); ``additional_forward_args`` are passed
        to the model after the inputs."""
        xs, is_tuple, t, cs, args = self._prepare_call(inputs, target, chunk_size, additional_forward_args)
        x = xs[0]
        mask = _check_masks(feature_mask, xs, is_tuple)
        n = None if n_samples is None else check_int("n_samples", n_samples, minimum=2)
        b = expand_baselines_for(baselines, xs, is_tuple)
        out = []
        with hook_guard(self.model), watch_outputs(self.model) as f, seeded(seed, x.device):
            ks = _captum_attr().KernelShap(f)
            for i in range(x.shape[0]):
                a = ks.attribute(
                    slice_inputs(xs, slice(i, i + 1), is_tuple), target=captum_target(t, slice(i, i + 1)),
                    baselines=slice_inputs(b, slice(i, i + 1), is_tuple), feature_mask=_row_masks(mask, i, is_tuple),
                    additional_forward_args=slice_args(args, slice(i, i + 1)),
                    n_samples=2 * _num_features_all(mask, xs, i) + 2048 if n is None else n, perturbations_per_eval=1 if cs is None else cs, return_input_shape=True,
                )
                out.append(a)
        merged = merge_chunks(out, is_tuple, False)
        if is_tuple:
            return tuple(p.to(xx.dtype) for p, xx in zip(merged, xs))
        return merged.to(x.dtype)


__all__ = ["Occlusion", "Lime", "KernelShap", "seeded"]
