"""Gradient-regularized Newton with approximate Hessians and an adaptive gradient-normalized smoothness estimate
(Semenov, Jaggi & Doikov, "Gradient-Normalized Smoothness for Optimization with Approximate Hessians",
arXiv 2506.13710, Algorithm 1).

Let :math:`\\|x\\| = \\sqrt{x^\\top B x}` for a fixed metric :math:`B \\succ 0` (default :math:`I`) with dual norm
:math:`\\|g\\|_* = \\sqrt{g^\\top B^{-1} g}`, and let :math:`H_k \\approx \\nabla^2 f(x_k)` be any Hessian approximation.
One iteration, with the smoothness radius estimate :math:`\\gamma` carried across iterations:

.. math::
    g_k = \\nabla f(x_k),\\qquad \\lambda = \\|g_k\\|_* / \\gamma,\\qquad
    x^+ = x_k - (H_k + \\lambda B)^{-1} g_k,

accepted when :math:`f(x_k) - f(x^+) \\ge \\|\\nabla f(x^+)\\|_*^2 / (8\\lambda)`; then :math:`\\gamma \\leftarrow 2\\gamma`
and :math:`x_{k+1} = x^+`. Otherwise :math:`\\gamma \\leftarrow \\gamma/2` and the trial is repeated (at most
``max_trials`` times; a failed Cholesky factorisation or negative curvature in CG also counts as a failed trial).
The method stops (``state['converged']``) once :math:`\\|g_k\\|_* \\le` ``grad_tol``; without this rule the
:math:`\\gamma` search keeps halving at the optimum.

**Hessian approximations** (``hessian=``). With the closure returning ``(loss, outputs)``, where the loss is
:math:`\\ell(z)` of model outputs :math:`z = m(x)` with Jacobian :math:`J`, the approximations are :math:`J^\\top M J`:

* ``"exact"`` -- :math:`\\nabla^2 f(x)` (double backward; ``outputs`` not needed);
* ``"gauss_newton"`` -- :math:`M = \\nabla^2_z \\ell` (generalized Gauss-Newton);
* ``"weighted_gauss_newton"`` / :class:`WeightedGaussNewton` -- for softmax / LogSumExp losses
  :math:`\\ell = \\mu\\,\\mathrm{LSE}(z/\\mu)` (per row for cross-entropy) the exact
  :math:`\\nabla_z^2\\ell = \\mu^{-1}(\\mathrm{diag}\\,\\pi - \\pi\\pi^\\top)` is replaced by its upper bound
  :math:`\\mu^{-1}\\mathrm{diag}\\,\\pi`, :math:`\\pi = \\mathrm{softmax}(z/\\mu)`;
* ``"fisher"`` -- the empirical Fisher :math:`\\frac1N\\sum_i \\nabla\\ell_i \\nabla\\ell_i^\\top` for a mean of ``N``
  per-row losses (rows of ``outputs``);
* ``"zero"`` -- :math:`H = 0`: the gradient method :math:`x^+ = x - \\gamma B^{-1} g / \\|g\\|_*` with the same
  :math:`\\gamma` search (the paper's baseline);
* a callable ``fn(x_flat) -> Tensor (P, P) | CurvatureOperator`` (e.g. a fixed bound such as :math:`A^\\top A/4n`).

**Linear solves.** ``solver="cholesky"`` forms :math:`H + \\lambda B` densely (``P`` batched products) and factorises
it; ``"cg"`` runs conjugate gradients on Hessian(-approximation)-vector products, for networks (a rejected trial
then costs one extra closure evaluation, since the product graph must be rebuilt at :math:`x_k`); ``"auto"`` picks
Cholesky when ``P <= dense_threshold``.

Usage (closure-based like ``torch.optim.LBFGS``, but the closure must **not** call ``backward``: the optimizer
differentiates the returned loss itself)::

    opt = GradRegNewton(model.parameters(), hessian="gauss_newton")
    def closure():
        out = model(x)
        return loss_fn(out, y), out
    for _ in range(50):
        opt.step(closure)
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

from gradlab.core import check_choice, check_int, check_positive
from gradlab.curvature.hvp import CurvatureOperator, DenseOperator, FunctionOperator

Closure = Callable[[], Any]
HESSIANS = ("exact", "gauss_newton", "weighted_gauss_newton", "fisher", "zero")


def _batched_grad(outputs: torch.Tensor, inputs: list[torch.Tensor], cotangents: torch.Tensor, **kw: Any) -> tuple:
    """``autograd.grad`` for a leading batch of cotangents (vmap), falling back to a loop where vmap fails."""
    try:
        return torch.autograd.grad(outputs, inputs, cotangents, is_grads_batched=True, retain_graph=True, **kw)
    except RuntimeError:
        cols = [torch.autograd.grad(outputs, inputs, c, retain_graph=True, **kw) for c in cotangents]
        return tuple(torch.stack([c[i] for c in cols]) for i in range(len(inputs)))


class _Problem:
    """Flat views of the closure's loss, gradient and outputs at the current parameters."""

    def __init__(self, params: list[torch.Tensor], loss: torch.Tensor, outputs: torch.Tensor | None, create_graph: bool):
        self.params = params
        self.loss = loss
        self.outputs = outputs
        grads = torch.autograd.grad(loss, params, create_graph=create_graph, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        self.grad_graph = torch.cat([g.reshape(-1) for g in grads])
        self.grad = self.grad_graph.detach()
        self.size = self.grad.numel()
        self.numels = [p.numel() for p in params]

    def flat(self, tensors: Iterable[torch.Tensor], batch: int) -> torch.Tensor:
        return torch.cat([t.reshape(batch, -1) for t in tensors], dim=1)

    def operator(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> CurvatureOperator:
        return FunctionOperator(fn, self.size, dtype=self.grad.dtype, device=self.grad.device)

    # v -> H v with the double-backward graph of the gradient
    def hessian(self) -> CurvatureOperator:
        if not self.grad_graph.requires_grad:
            return self.operator(lambda V: torch.zeros_like(V))  # loss is linear in the parameters

        def mm(V: torch.Tensor) -> torch.Tensor:
            out = _batched_grad(self.grad_graph, self.params, V.T.contiguous(), allow_unused=True)
            out = tuple(torch.zeros(V.shape[1], *p.shape, dtype=V.dtype, device=V.device) if o is None else o
                        for o, p in zip(out, self.params))
            return self.flat(out, V.shape[1]).T.detach()

        return self.operator(mm)

    def jacobian_products(self) -> tuple[Callable, Callable, torch.Tensor]:
        """``J v`` (``(P, k) -> (k, *z)``) and ``J^T u`` (``(k, *z) -> (P, k)``) for the outputs."""
        z = self.outputs
        if z is None:
            raise ValueError("this Hessian approximation needs the closure to return (loss, outputs)")
        u0 = torch.zeros_like(z, requires_grad=True)
        jt_graph = torch.autograd.grad(z, self.params, u0, create_graph=True, retain_graph=True, allow_unused=True)
        jt_graph = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, jt_graph)]
        jt_flat = torch.cat([g.reshape(-1) for g in jt_graph])

        def jv(V: torch.Tensor) -> torch.Tensor:
            if not jt_flat.requires_grad:
                return torch.zeros(V.shape[1], *z.shape, dtype=V.dtype, device=V.device)
            return _batched_grad(jt_flat, [u0], V.T.contiguous())[0].detach()

        def jtu(U: torch.Tensor) -> torch.Tensor:
            out = _batched_grad(z, self.params, U, allow_unused=True)
            out = tuple(torch.zeros(U.shape[0], *p.shape, dtype=U.dtype, device=U.device) if o is None else o
                        for o, p in zip(out, self.params))
            return self.flat(out, U.shape[0]).T.detach()

        return jv, jtu, z.detach()

    def sandwich(self, middle: Callable[[torch.Tensor], torch.Tensor]) -> CurvatureOperator:
        """:math:`J^\\top M J` with ``middle`` applying ``M`` to a batch ``(k, *z)``."""
        jv, jtu, _ = self.jacobian_products()
        return self.operator(lambda V: jtu(middle(jv(V))))


class WeightedGaussNewton:
    """Weighted Gauss-Newton for LogSumExp / softmax losses: :math:`M = s\\,\\mu^{-1}\\mathrm{diag}(\\mathrm{softmax}(z/\\mu))`.

    Args:
        temperature: :math:`\\mu` in :math:`\\ell = \\mu\\,\\mathrm{LSE}(z/\\mu)` (1 for cross-entropy).
        scale: :math:`s`; default 1 for 1-D outputs (one LSE) and ``1/N`` for ``(N, C)`` outputs (mean over rows).
    """

    def __init__(self, temperature: float = 1.0, scale: float | None = None) -> None:
        self.temperature = check_positive("temperature", temperature)
        self.scale = None if scale is None else check_positive("scale", scale)

    def __call__(self, problem: _Problem) -> CurvatureOperator:
        z = problem.outputs
        if z is None:
            raise ValueError("weighted_gauss_newton needs the closure to return (loss, outputs)")
        mu = self.temperature
        pi = torch.softmax(z.detach() / mu, dim=-1)
        s = self.scale if self.scale is not None else (1.0 if z.ndim == 1 else 1.0 / z.shape[0])
        return problem.sandwich(lambda U: U * (pi * (s / mu)))


def _gauss_newton(problem: _Problem) -> CurvatureOperator:
    z = problem.outputs
    if z is None:
        raise ValueError("gauss_newton needs the closure to return (loss, outputs)")
    gz = torch.autograd.grad(problem.loss, z, create_graph=True, retain_graph=True)[0]

    def middle(U: torch.Tensor) -> torch.Tensor:
        if not gz.requires_grad:
            return torch.zeros_like(U)
        return _batched_grad(gz, [z], U)[0].detach()

    return problem.sandwich(middle)


def _fisher(problem: _Problem) -> CurvatureOperator:
    z = problem.outputs
    if z is None:
        raise ValueError("fisher needs the closure to return (loss, outputs)")
    r = torch.autograd.grad(problem.loss, z, retain_graph=True)[0].detach()
    rows = r.reshape(r.shape[0], -1) if r.ndim > 1 else r[:, None]
    n = rows.shape[0]

    def middle(U: torch.Tensor) -> torch.Tensor:  # per-sample grads are n * J_i^T r_i; F = (1/n) sum g_i g_i^T
        Ur = U.reshape(U.shape[0], n, -1)
        coef = (Ur * rows).sum(-1, keepdim=True)
        return (n * coef * rows).reshape(U.shape)

    return problem.sandwich(middle)


class GradRegNewton(torch.optim.Optimizer):
    """Gradient-regularized Newton with an adaptive gradient-normalized smoothness estimate (Algorithm 1).

    Args:
        params: parameters (one group; per-group options are not supported, as in ``LBFGS``).
        gamma: initial :math:`\\gamma` (the regularization is :math:`\\lambda = \\|g\\|_*/\\gamma`).
        hessian: ``"exact" | "gauss_newton" | "weighted_gauss_newton" | "fisher" | "zero"``, a
            :class:`WeightedGaussNewton`, or a callable ``fn(x_flat) -> (P, P) tensor | CurvatureOperator``.
        metric: :math:`B`: ``None`` (identity), a positive 1-D tensor (diagonal) or an SPD ``(P, P)`` tensor.
        solver: ``"auto" | "cholesky" | "cg"``.
        dense_threshold: ``auto`` uses Cholesky when ``P <= dense_threshold``.
        max_trials: :math:`\\gamma` halvings allowed per iteration.
        grad_tol: stop when :math:`\\|g\\|_* \\le` ``grad_tol``.
        cg_max_iters, cg_tol: conjugate-gradient limits (relative residual).

    ``state['history']`` holds ``(f(x_k), ||g_k||_*, gamma, trials)`` per iteration; ``state['converged']`` is set by the
    stopping rule, after which ``step`` only evaluates the closure.
    """

    def __init__(
        self,
        params: Iterable[Any],
        gamma: float = 1.0,
        hessian: Any = "exact",
        metric: torch.Tensor | None = None,
        solver: str = "auto",
        dense_threshold: int = 2000,
        max_trials: int = 40,
        grad_tol: float = 0.0,
        cg_max_iters: int = 200,
        cg_tol: float = 1e-10,
    ) -> None:
        check_positive("gamma", gamma)
        if isinstance(hessian, str):
            check_choice("hessian", hessian, HESSIANS)
        elif not callable(hessian):
            raise TypeError(f"hessian must be one of {HESSIANS} or a callable; got {type(hessian).__name__}")
        check_choice("solver", solver, ("auto", "cholesky", "cg"))
        check_int("dense_threshold", dense_threshold, minimum=0)
        check_int("max_trials", max_trials, minimum=1)
        check_positive("grad_tol", grad_tol, allow_zero=True)
        check_int("cg_max_iters", cg_max_iters, minimum=1)
        check_positive("cg_tol", cg_tol)
        defaults = dict(gamma=gamma, max_trials=max_trials, grad_tol=grad_tol, cg_max_iters=cg_max_iters, cg_tol=cg_tol)
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("GradRegNewton doesn't support per-parameter options (parameter groups)")
        self._params: list[torch.Tensor] = self.param_groups[0]["params"]
        self.hessian = hessian
        self.solver = solver
        self.dense_threshold = dense_threshold
        size = sum(p.numel() for p in self._params)
        self._metric = self._check_metric(metric, size)
        self._metric_chol: torch.Tensor | None = None

    # ----------------------------------------------------------------------------------------------------------
    @staticmethod
    def _check_metric(metric: torch.Tensor | None, size: int) -> torch.Tensor | None:
        if metric is None:
            return None
        if not isinstance(metric, torch.Tensor):
            raise TypeError(f"metric must be None or a tensor; got {type(metric).__name__}")
        if not torch.isfinite(metric).all():
            raise ValueError("metric contains NaN or inf")
        if metric.ndim == 1:
            if metric.numel() != size or (metric <= 0).any():
                raise ValueError(f"a diagonal metric must be a positive vector of length {size}")
        elif metric.ndim == 2:
            if metric.shape != (size, size):
                raise ValueError(f"metric must have shape ({size}, {size}); got {tuple(metric.shape)}")
            if not torch.allclose(metric, metric.T):
                raise ValueError("metric must be symmetric positive definite")
        else:
            raise ValueError(f"metric must be 1-D (diagonal) or 2-D; got {metric.ndim}-D")
        return metric.detach()

    def _dual_norm(self, g: torch.Tensor) -> float:
        B = self._metric
        if B is None:
            return float(g.norm())
        B = B.to(g)
        if B.ndim == 1:
            return float(torch.sqrt((g * g / B).sum()))
        if self._metric_chol is None:
            L, info = torch.linalg.cholesky_ex(B)
            if int(info) != 0:
                raise ValueError("metric must be symmetric positive definite (Cholesky failed)")
            self._metric_chol = L
        y = torch.linalg.solve_triangular(self._metric_chol.to(g), g[:, None], upper=False)
        return float(y.norm())

    def _metric_matmat(self, V: torch.Tensor) -> torch.Tensor:
        B = self._metric
        if B is None:
            return V
        B = B.to(V)
        return B[:, None] * V if B.ndim == 1 else B @ V

    def _metric_dense(self, size: int, like: torch.Tensor) -> torch.Tensor:
        B = self._metric
        if B is None:
            return torch.eye(size, dtype=like.dtype, device=like.device)
        B = B.to(like)
        return torch.diag(B) if B.ndim == 1 else B

    # ----------------------------------------------------------------------------------------------------------
    def _evaluate(self, closure: Closure, create_graph: bool, trial: bool = False) -> _Problem | None:
        """Call the closure and differentiate its loss; at a trial point a non-finite value returns ``None``."""
        with torch.enable_grad():
            out = closure()
            loss, outputs = (out if isinstance(out, tuple) else (out, None))
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError("closure must return a scalar loss tensor (or a (loss, outputs) pair)")
            if not loss.requires_grad:
                raise ValueError(
                    "the closure's loss does not depend on the parameters (did it call backward or detach?)"
                )
            if not torch.isfinite(loss):
                if trial:
                    return None
                raise ValueError("the closure returned a NaN or infinite loss at the current parameters")
            if outputs is not None and not isinstance(outputs, torch.Tensor):
                raise TypeError("the closure's outputs must be a tensor")
            problem = _Problem(self._params, loss.reshape(()), outputs, create_graph)
        if not torch.isfinite(problem.grad).all():
            if trial:
                return None
            raise ValueError("the gradient contains NaN or inf at the current parameters")
        return problem

    def _approximation(self, problem: _Problem, x: torch.Tensor) -> CurvatureOperator | None:
        h = self.hessian
        if h == "zero":
            return None
        if h == "exact":
            return problem.hessian()
        if h == "gauss_newton":
            return _gauss_newton(problem)
        if h == "weighted_gauss_newton":
            return WeightedGaussNewton()(problem)
        if h == "fisher":
            return _fisher(problem)
        if isinstance(h, WeightedGaussNewton):
            return h(problem)
        res = h(x.clone())
        if isinstance(res, CurvatureOperator):
            return res
        if isinstance(res, torch.Tensor):
            if res.shape != (problem.size, problem.size):
                raise ValueError(f"the hessian callable must return a ({problem.size}, {problem.size}) matrix; got {tuple(res.shape)}")
            return DenseOperator(res.detach().to(x), check_symmetric=False)
        raise TypeError("the hessian callable must return a tensor or a CurvatureOperator")

    def _use_dense(self, size: int) -> bool:
        return self.solver == "cholesky" or (self.solver == "auto" and size <= self.dense_threshold)

    def _solve_dense(self, H: torch.Tensor | None, B: torch.Tensor, lam: float, g: torch.Tensor) -> torch.Tensor | None:
        A = lam * B if H is None else H + lam * B
        A = 0.5 * (A + A.T)
        L, info = torch.linalg.cholesky_ex(A)
        if int(info) != 0:
            return None
        return torch.cholesky_solve(g[:, None], L)[:, 0]

    def _solve_cg(self, H: CurvatureOperator | None, lam: float, g: torch.Tensor, group: dict) -> torch.Tensor | None:
        def A(v: torch.Tensor) -> torch.Tensor:
            Bv = self._metric_matmat(v[:, None])[:, 0] * lam
            return Bv if H is None else H.matmat(v[:, None])[:, 0] + Bv

        x = torch.zeros_like(g)
        r = g.clone()
        p = r.clone()
        rr = r @ r
        stop = group["cg_tol"] ** 2 * rr
        for _ in range(group["cg_max_iters"]):
            Ap = A(p)
            pAp = p @ Ap
            if not torch.isfinite(pAp) or pAp <= 0:
                return None  # H + lam B is not positive definite along p
            alpha = rr / pAp
            x = x + alpha * p
            r = r - alpha * Ap
            rr_new = r @ r
            if rr_new <= stop:
                break
            p = r + (rr_new / rr) * p
            rr = rr_new
        return x

    # ----------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Closure) -> torch.Tensor:  # type: ignore[override]
        """One outer iteration (possibly several :math:`\\gamma` trials). Returns the loss at the starting point."""
        if closure is None or not callable(closure):
            raise TypeError("GradRegNewton.step requires a closure returning the loss (or (loss, outputs))")
        group = self.param_groups[0]
        state = self.state[self._params[0]]
        state.setdefault("gamma", float(group["gamma"]))
        state.setdefault("n_iter", 0)
        state.setdefault("n_solves", 0)
        state.setdefault("converged", False)
        state.setdefault("history", [])

        problem = self._evaluate(closure, create_graph=isinstance(self.hessian, str) and self.hessian == "exact")
        assert problem is not None
        loss, g = problem.loss.detach(), problem.grad
        gnorm = self._dual_norm(g)
        if gnorm <= group["grad_tol"]:
            state["converged"] = True
            state["history"].append((float(loss), gnorm, state["gamma"], 0))
            return loss
        x = torch.cat([p.detach().reshape(-1) for p in self._params])
        dense = self._use_dense(problem.size)
        with torch.enable_grad():
            H_op = self._approximation(problem, x)
            H_dense = H_op.to_dense() if (dense and H_op is not None) else None
        B_dense = self._metric_dense(problem.size, g) if dense else None
        del problem  # free the graph before the trials
        f0 = float(loss)
        gamma = state["gamma"]
        accepted = False
        trials = 0
        for trials in range(1, group["max_trials"] + 1):
            lam = gnorm / gamma
            state["n_solves"] += 1
            if dense:
                assert B_dense is not None
                s = self._solve_dense(H_dense, B_dense, lam, g)
            else:
                if trials > 1 and H_op is not None:
                    # the previous trial moved the parameters in place, which invalidates the saved graph:
                    # rebuild the operator at x (one more closure evaluation)
                    self._set_flat(x)
                    problem = self._evaluate(closure, create_graph=isinstance(self.hessian, str) and self.hessian == "exact")
                    assert problem is not None
                    with torch.enable_grad():
                        H_op = self._approximation(problem, x)
                    del problem
                with torch.enable_grad():
                    s = self._solve_cg(H_op, lam, g, group)
            if s is not None and torch.isfinite(s).all():
                self._set_flat(x - s)
                trial = self._evaluate(closure, create_graph=False, trial=True)
                ok = trial is not None
                if trial is not None:
                    f1, g1 = float(trial.loss), self._dual_norm(trial.grad)
                    trial = None  # free the graph
                if ok and f0 - f1 >= g1 * g1 / (8.0 * lam):
                    gamma *= 2.0
                    accepted = True
                    break
            gamma /= 2.0
        if not accepted:
            self._set_flat(x)
        state["gamma"] = gamma
        state["n_iter"] += 1
        state["history"].append((f0, gnorm, gamma, trials))
        return loss

    def _set_flat(self, flat: torch.Tensor) -> None:
        offset = 0
        for p in self._params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n
