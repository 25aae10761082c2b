"""abc-parametrisations (SP, NTK, mean-field, muP) applied to any ``nn.Module`` as optimizer param groups.

Yang & Hu, *Feature Learning in Infinite-Width Neural Networks* (Tensor Programs IV, ICML 2021, arXiv 2011.14522);
the Adam table is from Tensor Programs V (Yang et al. 2022, arXiv 2203.03466).

An abc-parametrisation of a network of width ``n`` writes each weight as ``W^l = n^{-a_l} w^l`` with trainable
``w^l_{ij} ~ N(0, n^{-2 b_l})`` and SGD learning rate ``eta n^{-c}``. Layers have three roles: *input* (finite
fan-in, width fan-out), *hidden* (width x width) and *output* (width fan-in, finite fan-out). Named presets:

    =========  ======================  =====================  ======
    name       a (input/hidden/out)    b (input/hidden/out)   c
    =========  ======================  =====================  ======
    sp         0 / 0 / 0               0 / 1/2 / 1/2          0
    ntk        0 / 1/2 / 1/2           0 / 0 / 0              0
    mf         0 / 1/2 / 1             0 / 0 / 0              -1
    mup        -1/2 / 0 / 1/2          1/2 / 1/2 / 1/2        0
    =========  ======================  =====================  ======

(``mf`` is the mean-field parametrisation ``f = (1/n) sum_i a_i phi(w_i x)`` with lr ``eta n``; it is the shift
``theta = 1/2`` of ``mup`` by the symmetry ``(a, b, c) -> (a + theta, b - theta, c - 2 theta)``, so both train
identically.) The *multiplier* ``n^{-a}`` never has to be put into the forward pass: SGD on ``w`` with lr
``eta n^{-c}`` is SGD on ``W`` with lr ``eta n^{-(c + 2a)}`` and ``W ~ N(0, n^{-2(a+b)})``; Adam (scale-invariant
in the gradient) gives lr ``eta n^{-(c + a)}``. :func:`abc_param_groups` therefore only re-initialises the weights
in place and returns ``torch.optim`` param groups with per-layer learning rates, for any model.

Stability/feature learning (TP4, Def. 3.2 and Thm 3.3, SGD): with
``r = min(a_{L+1} + b_{L+1}, 2 a_{L+1} + c) + c - 1 + min_{l <= L}(2 a_l + 1[l = 1])`` the parametrisation is
stable iff ``a_1 + b_1 = 0``, ``a_l + b_l = 1/2`` (hidden), ``a_{L+1} + b_{L+1} >= 1/2`` and ``r >= 0``; it is
nontrivial iff ``a_{L+1} + b_{L+1} + r = 1`` or ``2 a_{L+1} + c = 1``; and it learns features iff ``r = 0``
(kernel regime iff ``r > 0``).

Widths. With a *base* model (and optionally a *delta* model of another width), every parameter dimension that
differs between the two is "infinite", as in the ``mup`` package's ``set_base_shapes``; the width ratio
``m = n / n_base`` replaces ``n`` so that at the base width every parametrisation coincides with SP. Without a base
model the first weight-bearing module is the input layer, the last is the output layer, and absolute widths are
used (``m = n``).

Hidden layers whose fan-in and fan-out grow by different factors (``m_in != m_out``). The abc exponents assume
one width ``n``; a hidden weight's init and multiplier use its fan-in (``n = m_in``, the ``1/sqrt(fan_in)`` of
SP/NTK). Under muP with SGD (and every parametrisation SGD-equivalent to it, such as ``mf``) the feature update
``Delta W x`` of a hidden layer is ``Theta(1)`` only if its learning rate scales like ``m_out / m_in`` (the
backpropagated gradient per output coordinate is ``Theta(1/m_out)`` and ``x^T x`` is ``Theta(m_in)``); this is the
rule of ``mup.MuSGD`` (matrix-like parameters: ``lr * fan_out_mult / fan_in_mult``), used here. With Adam the
update is scale-free in the gradient and muP's hidden rate is ``lr / m_in`` (``mup.MuAdam``) for any ``m_out``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch
from torch import nn

from gradlab.core import check_choice, check_int, check_positive, check_type
from gradlab.dynamics._validation import check_bool, check_generator, check_real

__all__ = ["AbcParametrization", "abc_preset", "ParamInfo", "param_infos", "lr_multiplier", "abc_param_groups", "PRESETS",
           "ROLES"]

ROLES = ("input", "hidden", "output")
_SP_INIT_EXPONENT = {"input": 0.0, "hidden": 0.5, "output": 0.5}  # n-exponent of SP's 1/sqrt(fan_in) init


@dataclass(frozen=True)
class AbcParametrization:
    """Exponents ``a``, ``b`` (per role: input, hidden, output) and ``c`` of an abc-parametrisation."""

    a: tuple[float, float, float]
    b: tuple[float, float, float]
    c: float
    name: str = "custom"

    def __post_init__(self) -> None:
        for field_name in ("a", "b"):
            v = getattr(self, field_name)
            if isinstance(v, (str, bytes)) or not hasattr(v, "__len__"):
                raise TypeError(f"{field_name} must be a sequence of 3 numbers (input, hidden, output); got "
                                f"{type(v).__name__}")
            if len(tuple(v)) != 3:
                raise ValueError(f"{field_name} must have 3 entries (input, hidden, output); got {v!r}")
            object.__setattr__(self, field_name, tuple(check_real(f"{field_name}[{i}]", x) for i, x in enumerate(v)))
        object.__setattr__(self, "c", check_real("c", self.c))
        check_type("name", self.name, str)

    def _idx(self, role: str) -> int:
        return ROLES.index(check_choice("role", role, ROLES))

    def init_exponent(self, role: str) -> float:
        """Effective init: ``W ~ N(0, n^{-2(a+b)})``; returns ``a + b`` for ``role``."""
        i = self._idx(role)
        return self.a[i] + self.b[i]

    def lr_exponent(self, role: str, optimizer: str = "sgd") -> float:
        """Effective learning rate of ``W`` is ``eta n^{-e}``; ``e = c + 2a`` (SGD) or ``c + a`` (Adam)."""
        check_choice("optimizer", optimizer, ("sgd", "adam"))
        i = self._idx(role)
        return self.c + (2.0 if optimizer == "sgd" else 1.0) * self.a[i]

    def shifted(self, theta: float) -> "AbcParametrization":
        """The SGD-equivalent parametrisation ``(a + theta, b - theta, c - 2 theta)``."""
        theta = check_real("theta", theta)
        return replace(
            self,
            a=tuple(x + theta for x in self.a),
            b=tuple(x - theta for x in self.b),
            c=self.c - 2 * theta,
            name=f"{self.name}(shift {theta:+g})",
        )

    def feature_learning_exponent(self, num_hidden_layers: int = 2) -> float:
        """TP4's ``r`` for an MLP with ``num_hidden_layers`` (= L) hidden layers under SGD."""
        check_int("num_hidden_layers", num_hidden_layers, minimum=1)
        a_in, a_h, a_out = self.a
        hidden_min = 2 * a_in + 1 if num_hidden_layers < 2 else min(2 * a_in + 1, 2 * a_h)
        return min(a_out + self.b[2], 2 * a_out + self.c) + self.c - 1 + hidden_min

    def is_stable(self, num_hidden_layers: int = 2, tol: float = 1e-12) -> bool:
        """Stable at init and during training in the infinite-width limit (TP4 Thm 3.3, SGD)."""
        check_positive("tol", tol, allow_zero=True)
        ok_init = abs(self.init_exponent("input")) <= tol and self.init_exponent("output") >= 0.5 - tol
        if num_hidden_layers >= 2:
            ok_init = ok_init and abs(self.init_exponent("hidden") - 0.5) <= tol
        return bool(ok_init and self.feature_learning_exponent(num_hidden_layers) >= -tol)

    def is_nontrivial(self, num_hidden_layers: int = 2, tol: float = 1e-12) -> bool:
        """The function changes by Theta(1) during training in the limit."""
        check_positive("tol", tol, allow_zero=True)
        r = self.feature_learning_exponent(num_hidden_layers)
        return bool(abs(self.init_exponent("output") + r - 1) <= tol or abs(2 * self.a[2] + self.c - 1) <= tol)

    def is_feature_learning(self, num_hidden_layers: int = 2, tol: float = 1e-12) -> bool:
        """Stable with ``r = 0``: every layer's features move by Theta(1)."""
        return bool(self.is_stable(num_hidden_layers, tol) and abs(self.feature_learning_exponent(num_hidden_layers)) <= tol)


PRESETS: dict[str, AbcParametrization] = {
    "sp": AbcParametrization(a=(0, 0, 0), b=(0, 0.5, 0.5), c=0, name="sp"),
    "ntk": AbcParametrization(a=(0, 0.5, 0.5), b=(0, 0, 0), c=0, name="ntk"),
    "mf": AbcParametrization(a=(0, 0.5, 1), b=(0, 0, 0), c=-1, name="mf"),
    "mup": AbcParametrization(a=(-0.5, 0, 0.5), b=(0.5, 0.5, 0.5), c=0, name="mup"),
}
# muP for Adam (TP5 Table 3): input init 1/fan_in, lr eta; hidden init 1/fan_in, lr eta/n; output init 1/n^2, lr eta/n
_MUP_ADAM = AbcParametrization(a=(0, 1, 1), b=(0, -0.5, 0), c=0, name="mup")


def abc_preset(name: str, optimizer: str = "sgd") -> AbcParametrization:
    """A named parametrisation (``sp``, ``ntk``, ``mf``, ``mup``); ``mup`` depends on the optimizer."""
    check_choice("name", name, tuple(PRESETS))
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    if name == "mup" and optimizer == "adam":
        return _MUP_ADAM
    return PRESETS[name]


@dataclass(frozen=True)
class ParamInfo:
    """How one parameter scales with width.

    Attributes:
        role: ``input`` | ``hidden`` | ``output`` for weights; ``vector`` for width-sized 1-D parameters (biases,
            norm gains: trained like input weights, not re-initialised); ``fixed`` for width-independent ones.
        fan_in, fan_out: the weight's fans (1-D parameters: fan_in 1, fan_out = size).
        width_mult: ``m``, the width (or width ratio to the base model) this parameter scales with (hidden
            weights: the fan-in multiplier).
        fan_in_mult, fan_out_mult: how much the fan-in and the fan-out grew (ratio to the base model, or the
            absolute fan where the width is infinite and no base model is given; 1 for finite fans).
    """

    role: str
    fan_in: int
    fan_out: int
    width_mult: float
    fan_in_mult: float = 1.0
    fan_out_mult: float = 1.0


def _fans(module: nn.Module | None, name: str, shape: torch.Size) -> tuple[int, int]:
    if len(shape) == 1:
        return 1, int(shape[0])
    if isinstance(module, nn.Embedding):  # (num_embeddings, dim): a lookup is x -> W^T x
        return int(shape[0]), int(math.prod(shape[1:]))
    return int(math.prod(shape[1:])), int(shape[0])


def _owner(model: nn.Module, name: str) -> nn.Module | None:
    mod_name = name.rpartition(".")[0]
    return model.get_submodule(mod_name) if mod_name else model


def param_infos(
    model: nn.Module, base: nn.Module | None = None, delta: nn.Module | None = None, *, absolute_widths: bool = False
) -> dict[str, ParamInfo]:
    """Classify every trainable parameter of ``model`` by how it scales with width.

    Args:
        model: the network.
        base: the same architecture at the base width (mup's ``base``). Dimensions that differ between ``base``
            and ``delta`` (default: ``model``) are infinite; ``width_mult`` is the ratio ``model dim / base dim``.
        delta: the architecture at another width, needed when ``model`` has the base width itself.
        absolute_widths: without ``base``, scale with the absolute widths ``n`` (Tensor Programs IV's
            abc-parametrisation, where ``lr`` is the learning rate of a width-1 network: muP-SGD's input layer then
            gets ``lr * n``). Must be asked for explicitly; the usual choice is ``base``.

    With ``absolute_widths=True`` (no ``base``): the first module owning a >=2-D weight is the input layer, the last
    the output layer, the others hidden; biases of input/hidden layers are ``vector``.

    Raises:
        ValueError: neither ``base`` nor ``absolute_widths=True`` is given; or ``model`` has the base width and no
            ``delta`` is given (no dimension could be told to be infinite, so every parameter would be "fixed").
    """
    check_type("model", model, nn.Module)
    if not isinstance(absolute_widths, bool):
        raise TypeError(f"absolute_widths must be a bool; got {type(absolute_widths).__name__}")
    if base is None and not absolute_widths:
        raise ValueError("pass base= (the same architecture at the base width, and delta= at a second width when "
                         "model has the base width), as mup.set_base_shapes does; or absolute_widths=True to scale "
                         "with the absolute widths n (the input layer's SGD learning rate then becomes lr * n)")
    if base is not None and absolute_widths:
        raise ValueError("absolute_widths=True scales with the absolute widths and cannot be combined with base=")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    infos: dict[str, ParamInfo] = {}
    if base is not None:
        check_type("base", base, nn.Module)
        if delta is not None:
            check_type("delta", delta, nn.Module)
        base_shapes_all = {n: tuple(p.shape) for n, p in base.named_parameters()}
        if delta is None and all(base_shapes_all.get(n) == tuple(p.shape) for n, p in params.items()):
            raise ValueError("model has the base width (every parameter has base's shape), so no dimension can be "
                             "told to be infinite: pass delta= (the same architecture at another width)")
        base_shapes = {n: p.shape for n, p in base.named_parameters()}
        ref = delta if delta is not None else model
        ref_shapes = {n: p.shape for n, p in ref.named_parameters()}
        for n, p in params.items():
            if n not in base_shapes or n not in ref_shapes:
                raise ValueError(f"parameter {n!r} is missing from the base/delta model")
            owner = _owner(model, n)
            fi, fo = _fans(owner, n, p.shape)
            bfi, bfo = _fans(owner, n, base_shapes[n])
            rfi, rfo = _fans(owner, n, ref_shapes[n])
            inf_in, inf_out = bfi != rfi, bfo != rfo
            if p.ndim == 1:
                role = "vector" if inf_out else "fixed"
                mult = fo / bfo
            elif inf_in and inf_out:
                role, mult = "hidden", fi / bfi
            elif inf_out:
                role, mult = "input", fo / bfo
            elif inf_in:
                role, mult = "output", fi / bfi
            else:
                role, mult = "fixed", 1.0
            in_mult = fi / bfi if inf_in and p.ndim > 1 else 1.0
            out_mult = fo / bfo if inf_out else 1.0
            infos[n] = ParamInfo(role, fi, fo, float(mult), float(in_mult), float(out_mult))
        return infos
    weighted = [n for n, p in params.items() if p.ndim >= 2]
    if len(weighted) < 2:
        raise ValueError("positional roles need at least two >=2-D weights (an input and an output layer); pass base=")
    owners = [n.rpartition(".")[0] for n in weighted]
    first, last = owners[0], owners[-1]
    for n, p in params.items():
        owner_name = n.rpartition(".")[0]
        fi, fo = _fans(_owner(model, n), n, p.shape)
        if p.ndim >= 2:
            role = "input" if owner_name == first else "output" if owner_name == last else "hidden"
            mult = fo if role == "input" else fi
            in_mult = float(fi) if role in ("hidden", "output") else 1.0
            out_mult = float(fo) if role in ("hidden", "input") else 1.0
        else:
            role = "fixed" if owner_name == last else "vector"
            mult = fo if role == "vector" else 1
            in_mult, out_mult = 1.0, float(fo) if role == "vector" else 1.0
        infos[n] = ParamInfo(role, fi, fo, float(mult), in_mult, out_mult)
    return infos


def _sgd_equivalent_to_mup(spec: AbcParametrization, tol: float = 1e-12) -> bool:
    """Whether ``spec`` is muP up to the SGD symmetry ``(a + theta, b - theta, c - 2 theta)`` (e.g. ``mf``)."""
    mup = PRESETS["mup"]
    theta = spec.a[0] - mup.a[0]
    shifted = mup.shifted(theta)
    return all(abs(x - y) <= tol for x, y in zip(spec.a + spec.b + (spec.c,), shifted.a + shifted.b + (shifted.c,)))


def lr_multiplier(info: ParamInfo, spec: AbcParametrization, optimizer: str = "sgd") -> float:
    """Per-parameter learning-rate multiplier of an abc-parametrisation (see the module docstring).

    ``m^{-(c + 2a)}`` (SGD) or ``m^{-(c + a)}`` (Adam) with ``m = info.width_mult`` and ``a`` the role's exponent
    (``vector`` parameters use the input role, ``fixed`` ones get 1). A hidden weight whose fan-in and fan-out
    grew by different factors gets, under muP-equivalent SGD, ``m_out / m_in`` (``mup.MuSGD``'s rule).
    """
    check_type("info", info, ParamInfo)
    check_type("spec", spec, AbcParametrization)
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    if info.role == "fixed":
        return 1.0
    lr_role = "input" if info.role == "vector" else info.role
    mult = info.width_mult ** (-spec.lr_exponent(lr_role, optimizer))
    if (info.role == "hidden" and optimizer == "sgd" and info.fan_in_mult != info.fan_out_mult
            and _sgd_equivalent_to_mup(spec)):
        # muP SGD: lr * m_in^{-(c + 2a)} * (m_out / m_in); c + 2a = 0 for every muP-equivalent hidden layer
        mult = mult * info.fan_out_mult / info.fan_in_mult
    return float(mult)


def abc_param_groups(
    model: nn.Module,
    parametrization: str | AbcParametrization,
    lr: float,
    optimizer: str = "sgd",
    base: nn.Module | None = None,
    delta: nn.Module | None = None,
    absolute_widths: bool = False,
    reinit: bool = True,
    init_scale: float = 1.0,
    zero_readout: bool = False,
    generator: torch.Generator | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Re-initialise ``model`` for an abc-parametrisation and return ``torch.optim`` param groups.

    Weights get ``N(0, std^2)`` with ``std = init_scale / sqrt(fan_in) * m^{e_SP - (a + b)}`` (``e_SP`` = 0 for
    input, 1/2 for hidden/output layers, so at ``m = 1`` this is SP's ``1/sqrt(fan_in)``), i.e. ``n^{-(a+b)}``
    scaling; biases/gains are left as they are. Each group's ``lr`` is ``lr * m^{-(c + 2a)}`` (SGD) or
    ``lr * m^{-(c + a)}`` (Adam), where ``a`` is the role's exponent (``vector`` parameters use the input role;
    ``fixed`` ones get ``lr``); a hidden weight whose fan-in and fan-out grow differently gets muP-SGD's
    ``lr * m_out / m_in`` (:func:`lr_multiplier`, as ``mup.MuSGD``).

    Example::

        groups = abc_param_groups(model, "mup", lr=0.1, base=make(64), delta=make(128))
        opt = torch.optim.SGD(groups, foreach=True)

    Args:
        model: any module (its weights are modified in place when ``reinit``).
        parametrization: a preset name (``sp``, ``ntk``, ``mf``, ``mup``) or an :class:`AbcParametrization`.
        lr: the base learning rate ``eta``.
        optimizer: ``sgd`` or ``adam`` (selects the lr rule and the muP table).
        base, delta, absolute_widths: see :func:`param_infos` (one of ``base`` or ``absolute_widths=True`` is
            required).
        reinit: re-draw the weights; set False to keep an initialisation you made yourself.
        init_scale: constant multiplying every weight's std.
        zero_readout: initialise the output layer at zero (common with muP; removes the init output).
        extra: additional keys copied into every group (e.g. ``{"momentum": 0.9}``).

    Returns:
        Param groups (one per role, width multiplier and learning rate) with keys ``params``, ``lr``, ``role``, ``width_mult``.
    """
    check_choice("optimizer", optimizer, ("sgd", "adam"))
    lr = check_positive("lr", lr)
    init_scale = check_positive("init_scale", init_scale)
    check_bool("reinit", reinit)
    check_bool("zero_readout", zero_readout)
    check_generator("generator", generator)
    if extra is not None:
        check_type("extra", extra, Mapping)
        reserved = sorted({"params", "lr", "role", "width_mult"} & set(extra))
        if reserved:
            raise ValueError(f"extra must not set {reserved}: abc_param_groups sets them per group")
    spec = abc_preset(parametrization, optimizer) if isinstance(parametrization, str) else parametrization
    check_type("parametrization", spec, AbcParametrization)
    infos = param_infos(model, base, delta, absolute_widths=absolute_widths)
    params = dict(model.named_parameters())
    groups: dict[tuple[str, float], dict[str, Any]] = {}
    with torch.no_grad():
        for name, info in infos.items():
            p = params[name]
            mult_lr = lr_multiplier(info, spec, optimizer)
            if reinit and info.role in ROLES:
                if info.role == "output" and zero_readout:
                    p.zero_()
                else:
                    e = _SP_INIT_EXPONENT[info.role] - spec.init_exponent(info.role)
                    std = init_scale / math.sqrt(info.fan_in) * info.width_mult**e
                    p.normal_(0.0, std, generator=generator)
            key = (info.role, info.width_mult, mult_lr)
            if key not in groups:
                groups[key] = {"params": [], "lr": lr * mult_lr, "role": info.role, "width_mult": info.width_mult}
                groups[key].update(dict(extra or {}))
            groups[key]["params"].append(p)
    return list(groups.values())
