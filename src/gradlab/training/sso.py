r"""Target-based surrogates and stochastic surrogate optimisation (SSO), Lavington et al., ICML 2023, arXiv 2302.02607.

The loss is written as :math:`L(\theta) = \ell(f(\theta))` where :math:`f` maps parameters to *targets* (logits or
predictions on a batch, shape ``(B, ...)``) and :math:`\ell` is the possibly expensive target loss. At the iterate
:math:`\theta_t`, with :math:`z_t = f(\theta_t)`, the paper's surrogate is

.. math::
    g_t(\theta) = \ell(z_t) + \langle \nabla \ell(z_t), f(\theta) - z_t \rangle
                  + \frac{1}{2\eta} \lVert f(\theta) - z_t \rVert^2 ,

a global upper bound on :math:`L` when every per-example loss :math:`\ell_i` is :math:`\beta`-smooth in its target
and :math:`\eta \le 1/\beta`. SSO computes **one** target gradient :math:`\nabla_z \ell(z_t)` per outer step and
then runs ``inner_steps`` = m cheap steps on the batch surrogate

.. math::
    \hat g_t(\theta) = \langle \nabla_z \ell(z_t), f(\theta) \rangle + s \,\frac{\lVert f(\theta) - z_t \rVert^2}{2\eta},

defined *per example*: with ``reduction="mean"`` (``target_loss`` averages over the first dimension, so
:math:`\nabla_z \ell` already carries :math:`1/B`) :math:`s = 1/B`; with ``reduction="sum"`` :math:`s = 1`. Either
way the inner problem is the per-example average (or sum) of
:math:`\langle \nabla \ell_i(z_{t,i}), f_i(\theta)\rangle + \lVert f_i(\theta) - z_{t,i}\rVert^2/(2\eta)`, so the
step does not depend on the batch size or the number of target dimensions (the official code's double mean does).
The first inner gradient is :math:`J^\top \nabla_z \ell(z_t)`, the SGD gradient, so ``inner_steps=1`` with
``inner="sgd"`` is SGD with learning rate ``inner_lr`` bit for bit.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from gradlab.core.validation import check_choice, check_int, check_positive, check_tensor

__all__ = ["SSO", "TargetSurrogate"]

ARMIJO_INIT, ARMIJO_C, ARMIJO_BACKTRACK, ARMIJO_MAX_BACKTRACKS = 1.0, 0.5, 0.9, 200


def _scale(reduction: str, z: torch.Tensor) -> float:
    return 1.0 / z.shape[0] if reduction == "mean" else 1.0


class TargetSurrogate:
    r"""The full-batch majorant :math:`g_t` of arXiv 2302.02607 in target space.

    ``TargetSurrogate(z_t, grad_z, eta)`` evaluates, for targets ``z`` of the same shape as ``z_t``,

    .. math:: g_t(z) = \ell(z_t) + \langle \nabla\ell(z_t), z - z_t\rangle + s\,\lVert z - z_t\rVert^2/(2\eta)

    with :math:`s = 1/B` for ``reduction="mean"`` and :math:`s = 1` for ``"sum"`` (B = ``z_t.shape[0]``), i.e. the
    per-example quadratic of a loss whose examples are :math:`1/\eta`-smooth. ``loss_value`` is :math:`\ell(z_t)`
    (0 if omitted, which leaves :meth:`inner` and minimisers unchanged). :meth:`inner` is the part that depends on
    :math:`\theta`, the objective SSO's inner steps minimise.
    """

    def __init__(self, z_t: torch.Tensor, grad_z: torch.Tensor, eta: float, reduction: str = "mean",
                 loss_value: float | torch.Tensor = 0.0) -> None:
        check_tensor("z_t", z_t, floating=True, finite=True)
        check_tensor("grad_z", grad_z, floating=True, finite=True)
        if z_t.ndim < 1 or z_t.shape[0] < 1:
            raise ValueError(f"z_t must have a non-empty batch dimension; got shape {tuple(z_t.shape)}")
        if grad_z.shape != z_t.shape:
            raise ValueError(f"grad_z must have the shape of z_t {tuple(z_t.shape)}; got {tuple(grad_z.shape)}")
        self.eta = check_positive("eta", eta)
        self.reduction = check_choice("reduction", reduction, ("mean", "sum"))
        self.z_t = z_t.detach()
        self.grad_z = grad_z.detach()
        self.loss_value = loss_value.detach() if isinstance(loss_value, torch.Tensor) else float(loss_value)
        self.scale = _scale(self.reduction, self.z_t)

    @classmethod
    def _trusted(cls, z_t: torch.Tensor, grad_z: torch.Tensor, eta: float, reduction: str) -> "TargetSurrogate":
        """Construction without re-validating arguments SSO has already checked (hot path)."""
        self = cls.__new__(cls)
        self.eta, self.reduction, self.z_t, self.grad_z, self.loss_value = eta, reduction, z_t, grad_z, 0.0
        self.scale = _scale(reduction, z_t)
        return self

    def _check_z(self, z: torch.Tensor) -> None:
        check_tensor("z", z, floating=True)
        if z.shape != self.z_t.shape:
            raise ValueError(f"z must have the shape of z_t {tuple(self.z_t.shape)}; got {tuple(z.shape)}")

    def inner(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\langle\nabla\ell(z_t), z\rangle + s\lVert z - z_t\rVert^2/(2\eta)` (differentiable in ``z``)."""
        self._check_z(z)
        return self._inner(z)

    def _inner(self, z: torch.Tensor) -> torch.Tensor:
        return (self.grad_z * z).sum() + (self.scale / (2.0 * self.eta)) * (z - self.z_t).square().sum()

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """The majorant's value :math:`g_t(z)`."""
        self._check_z(z)
        d = z - self.z_t
        return self.loss_value + (self.grad_z * d).sum() + (self.scale / (2.0 * self.eta)) * d.square().sum()


def _all_finite(*tensors: torch.Tensor) -> bool:
    """Whether every entry of every tensor is finite: ``sum(t * 0)`` is 0 exactly then and NaN otherwise (one small
    reduction per tensor and one host read, half the cost of ``isfinite(t).all()`` on a step's small tensors)."""
    total = tensors[0].new_zeros((), dtype=torch.float64)
    for t in tensors:
        total = total + (t * 0).sum(dtype=torch.float64)
    return bool(total == 0)


def _zeros_for_unused(params: list[torch.Tensor], grads) -> list[torch.Tensor]:
    """autograd's gradients with ``None`` (a parameter the output does not use) replaced by zeros."""
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


class SSO:
    r"""Stochastic surrogate optimisation (arXiv 2302.02607, Algorithm 1 with a squared-Euclidean surrogate).

    ``step(forward, target_loss)``: ``forward()`` returns the batch targets :math:`f_S(\theta)` for the current
    parameters (same batch every call, deterministic); ``target_loss(z)`` returns the scalar loss of targets ``z``
    (reduced over the batch as ``reduction`` says). One step: :math:`z_t` = ``forward()`` detached, one gradient
    :math:`\nabla_z\ell(z_t)` (the only call of ``target_loss``), then m = ``inner_steps`` steps on
    :math:`\hat g_t` (module docstring):

    * ``inner="sgd"``: :math:`\theta \leftarrow \theta - \alpha\nabla\hat g_t(\theta)`, α = ``inner_lr``;
    * ``inner="armijo"``: backtracking line search, step reset to 1 at every outer step; each inner step starts from
      the last accepted step and multiplies it by 0.9 until
      :math:`\hat g_t(\theta - \alpha d) \le \hat g_t(\theta) - 0.5\,\alpha\lVert d\rVert^2` (d the gradient; after
      200 backtracks the step is not taken).

    With m > 1, :math:`f(\theta_t)` is recomputed for the first inner step and must equal :math:`z_t`
    (``ValueError`` otherwise: dropout or train-mode BatchNorm make ``forward`` non-deterministic, and the
    surrogate would not be the paper's). ``step`` returns :math:`\ell(z_t)` (detached).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter] | Iterable[torch.Tensor], eta: float, inner_steps: int,
                 inner: str = "armijo", inner_lr: float | None = None, reduction: str = "mean") -> None:
        if isinstance(params, torch.Tensor):
            raise TypeError("params must be an iterable of tensors (e.g. model.parameters()); got a single tensor")
        self.params = list(params)
        if not self.params:
            raise ValueError("params must not be empty")
        for i, p in enumerate(self.params):
            check_tensor(f"params[{i}]", p, floating=True)
            if not p.requires_grad:
                raise ValueError(f"params[{i}] must require grad")
        self.eta = check_positive("eta", eta)
        self.inner_steps = check_int("inner_steps", inner_steps, minimum=1)
        self.inner = check_choice("inner", inner, ("armijo", "sgd"))
        if self.inner == "sgd":
            if inner_lr is None:
                raise ValueError("inner_lr must be given (a float > 0) when inner='sgd'")
            self.inner_lr: float | None = check_positive("inner_lr", inner_lr)
        else:
            if inner_lr is not None:
                raise ValueError("inner_lr must be None when inner='armijo' (the line search starts at step 1)")
            self.inner_lr = None
        self.reduction = check_choice("reduction", reduction, ("mean", "sum"))
        self.state: dict[str, object] = {"outer_steps": 0, "target_grad_calls": 0, "forward_calls": 0,
                                         "last_step_size": None}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def _forward(self, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        z = forward()
        if not isinstance(z, torch.Tensor):
            raise TypeError(f"forward() must return a torch.Tensor; got {type(z).__name__}")
        self.state["forward_calls"] = int(self.state["forward_calls"]) + 1  # type: ignore[arg-type]
        return z

    def _vjp(self, f: torch.Tensor, grad_z: torch.Tensor) -> list[torch.Tensor]:
        return _zeros_for_unused(self.params, torch.autograd.grad(f, self.params, grad_outputs=grad_z,
                                                                  allow_unused=True))

    def _grads(self, value: torch.Tensor) -> list[torch.Tensor]:
        return _zeros_for_unused(self.params, torch.autograd.grad(value, self.params, allow_unused=True))

    def step(self, forward: Callable[[], torch.Tensor], target_loss: Callable[[torch.Tensor], torch.Tensor]
             ) -> torch.Tensor:
        """One outer step (one target-gradient call, ``inner_steps`` inner steps); returns ℓ(z_t)."""
        if not callable(forward):
            raise TypeError(f"forward must be callable; got {type(forward).__name__}")
        if not callable(target_loss):
            raise TypeError(f"target_loss must be callable; got {type(target_loss).__name__}")
        m = self.inner_steps
        # z_t = f(theta_t); keep its graph only when it is reused by the single inner step (m = 1: SGD exactly)
        with torch.set_grad_enabled(m == 1):
            z = self._forward(forward)
        if not z.is_floating_point() or z.ndim < 1 or z.shape[0] < 1:
            raise ValueError(f"forward() must return a floating tensor with a batch dimension; got {z.dtype} "
                             f"of shape {tuple(z.shape)}")
        if m == 1 and not z.requires_grad:
            raise ValueError("forward() output does not depend on params (it does not require grad)")
        z_t = z.detach()
        with torch.enable_grad():
            # m = 1: target_loss on z itself, so that grad_z and the single inner step's gradient J^T grad_z come
            # from one backward pass, exactly as an SGD step computes them; m > 1: on a detached copy
            z_in = z if m == 1 else z_t.clone().requires_grad_(True)
            loss = target_loss(z_in)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError("target_loss(z) must return a scalar tensor")
            if not loss.requires_grad:
                raise ValueError("target_loss(z) must be differentiable in z")
            if m == 1:
                grad_z, *first_grads = torch.autograd.grad(loss, [z_in, *self.params], allow_unused=True)
            else:
                (grad_z,) = torch.autograd.grad(loss, z_in, allow_unused=True)
            if grad_z is None:  # the loss does not use z (it may still require grad through captured params)
                raise ValueError("target_loss(z) must be differentiable in z")
        self.state["target_grad_calls"] = int(self.state["target_grad_calls"]) + 1  # type: ignore[arg-type]
        if not _all_finite(z_t, grad_z):  # before any parameter changes
            if not _all_finite(z_t):
                raise ValueError("forward() returned NaN or inf targets")
            raise ValueError("the target gradient is NaN or inf")
        sur = TargetSurrogate._trusted(z_t, grad_z, self.eta, self.reduction)

        alpha = ARMIJO_INIT
        for k in range(m):
            with torch.enable_grad():
                if k == 0 and m == 1:
                    f = z
                else:
                    f = self._forward(forward)
                    if k == 0 and (f.shape != z_t.shape or not torch.equal(f.detach(), z_t)):
                        raise ValueError(
                            "forward() recomputed at theta_t differs from z_t: the target map must be deterministic "
                            "during a step (dropout or train-mode BatchNorm? use eval mode or fix the randomness)")
                if not f.requires_grad:
                    raise ValueError("forward() output does not depend on params (it does not require grad)")
                if f.shape != z_t.shape:
                    raise ValueError(f"forward() changed its output shape from {tuple(z_t.shape)} to {tuple(f.shape)}")
                if k == 0:  # f == z_t exactly: the quadratic's gradient is 0, the gradient is the VJP J^T grad_z
                    grads = _zeros_for_unused(self.params, first_grads) if m == 1 else self._vjp(f, grad_z)
                    value = (grad_z * z_t).sum() if self.inner == "armijo" else grad_z.new_zeros(())
                else:
                    value = sur._inner(f)
                    grads = self._grads(value)
            with torch.no_grad():
                if self.inner == "sgd":
                    torch._foreach_add_(self.params, grads, alpha=-self.inner_lr)  # type: ignore[arg-type]
                    continue
                alpha = self._armijo(forward, sur, value.detach(), grads, alpha)
        self.state["outer_steps"] = int(self.state["outer_steps"]) + 1  # type: ignore[arg-type]
        self.state["last_step_size"] = alpha if self.inner == "armijo" else self.inner_lr
        return loss.detach()

    def _armijo(self, forward: Callable[[], torch.Tensor], sur: TargetSurrogate, value: torch.Tensor,
                grads: list[torch.Tensor], alpha: float) -> float:
        sq = float(torch.stack(torch._foreach_norm(grads, 2.0)).square().sum())
        if sq == 0.0:
            return alpha
        start = [p.detach().clone() for p in self.params]
        for _ in range(ARMIJO_MAX_BACKTRACKS):
            torch._foreach_copy_(self.params, start)
            torch._foreach_add_(self.params, grads, alpha=-alpha)
            f = self._forward(forward)
            if f.shape != sur.z_t.shape:
                torch._foreach_copy_(self.params, start)
                raise ValueError(f"forward() changed its output shape from {tuple(sur.z_t.shape)} to {tuple(f.shape)}")
            trial = sur._inner(f)
            if bool(torch.isfinite(trial)) and float(trial) <= float(value) - ARMIJO_C * alpha * sq:
                return alpha
            alpha *= ARMIJO_BACKTRACK
        torch._foreach_copy_(self.params, start)
        return alpha
