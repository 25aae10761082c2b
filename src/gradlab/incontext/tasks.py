"""In-context learning tasks: seeded, batched prompt generators with one ``sample(batch, n_context)`` call.

Three task families used by the in-context-learning papers:

* :class:`LinearRegressionTask` -- prompts ``(x_1, y_1, ..., x_N, y_N, x_q)`` with ``y = w^T x + eps``
  (Garg et al. 2022; von Oswald et al. 2023; Zhang, Frei & Bartlett 2024; Fu et al. 2023). Covariates are
  Gaussian with any covariance (isotropic, diagonal, or the ill-conditioned ``skew`` design of Fu et al.) or
  uniform on ``[-r/2, r/2]^d``; task vectors are ``w ~ N(mean, scale^2 I)``. Covariate shift and task shift are
  new tasks built with :meth:`LinearRegressionTask.shifted`.
* :class:`AutoregressiveTask` -- sequences ``x_{t+1} = W x_t`` with ``W = diag(e^{i theta_j})`` unitary
  (Zheng et al. 2024, mesa-optimization), initial token Gaussian, sparse (``+-sigma e_j``) or all ones.
* :class:`TokenSelectionTask` -- sequences ``X in R^{T x d}`` of unit-norm tokens, a query token ``z``, random
  labels ``Y = +-1`` and a unit head ``v`` (Tarzanagh et al. 2023, attention as a token-selecting SVM).

Every task owns a ``torch.Generator`` seeded at construction; ``sample`` draws a fresh batch from it, so two
tasks with the same seed produce identical streams and tasks with different seeds are independent.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from gradlab.core import check_choice, check_int, check_positive, check_tensor
from gradlab.incontext._validation import check_bool, check_float_dtype, check_generator, check_scalar

__all__ = [
    "PromptBatch", "LinearRegressionTask", "ill_conditioned_covariance", "ill_conditioned_factor",
    "ARBatch", "AutoregressiveTask", "TokenSelectionBatch", "TokenSelectionTask",
]


def _check_float_dtype(dtype: object) -> torch.dtype:
    """Sample dtypes must be real floating point: an integer dtype would truncate every sample silently."""
    return check_float_dtype("dtype", dtype)


def _check_seed(seed: int) -> int:
    return check_int("seed", seed, minimum=0)


@dataclass
class PromptBatch:
    """A batch of in-context regression prompts.

    Attributes:
        xs: context inputs, shape ``(B, N, d)``.
        ys: context labels, shape ``(B, N)``.
        xq: query inputs, shape ``(B, d)``.
        yq: query labels, shape ``(B,)``.
        w: the task vectors that generated the labels, shape ``(B, d)``.
    """

    xs: torch.Tensor
    ys: torch.Tensor
    xq: torch.Tensor
    yq: torch.Tensor
    w: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.xs.shape[0]

    @property
    def n_context(self) -> int:
        return self.xs.shape[1]

    @property
    def dim(self) -> int:
        return self.xs.shape[2]

    def all_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Context and query stacked: inputs ``(B, N+1, d)`` and labels ``(B, N+1)``."""
        return torch.cat([self.xs, self.xq[:, None]], 1), torch.cat([self.ys, self.yq[:, None]], 1)


def ill_conditioned_factor(d: int, kappa: float, generator: torch.Generator | None = None,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ``skew`` design of Fu et al. (2023): ``A = U diag(lambda) U^T`` with ``U`` a random rotation.

    Half of ``lambda`` equals ``kappa`` and half equals 1, rescaled so that ``sum(lambda^2) = d``. Inputs
    ``x = z A`` with ``z ~ N(0, I)`` then have covariance ``A^T A`` with condition number ``kappa^2``.
    """
    d = check_int("d", d, minimum=1)
    kappa = check_positive("kappa", kappa)
    check_generator("generator", generator)
    check_float_dtype("dtype", dtype)
    lam = torch.ones(d, dtype=torch.float64)
    lam[: d // 2] = kappa
    lam = lam * math.sqrt(d / float((lam**2).sum()))
    q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))[None, :]
    return (q @ torch.diag(lam) @ q.T).to(dtype)


def ill_conditioned_covariance(d: int, kappa: float, generator: torch.Generator | None = None,
                               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Covariance ``A^T A`` of :func:`ill_conditioned_factor` (condition number ``kappa^2``, trace ``d``)."""
    check_float_dtype("dtype", dtype)
    a = ill_conditioned_factor(d, kappa, generator, torch.float64)
    return (a.T @ a).to(dtype)


class LinearRegressionTask:
    """In-context linear regression ``y = w^T x + noise_std * eps``.

    Args:
        dim: input dimension ``d``.
        covariance: ``(d, d)`` covariance of Gaussian inputs (default identity). Ignored for uniform inputs.
        x_dist: ``"gaussian"`` or ``"uniform"`` (``U(-input_range/2, input_range/2)^d``, von Oswald et al.).
        input_range: width of the uniform input box.
        w_mean: mean of the task vector (scalar or ``(d,)``); non-zero gives a task shift.
        w_scale: standard deviation of each task-vector coordinate.
        noise_std: label noise standard deviation.
        seed: seed of the task's own generator.
        dtype: floating dtype of the samples.

    ``sample(batch, n_context)`` returns a :class:`PromptBatch` whose query follows the same distribution.
    """

    def __init__(self, dim: int, covariance: torch.Tensor | None = None, x_dist: str = "gaussian",
                 input_range: float = 2.0, w_mean: float | torch.Tensor = 0.0, w_scale: float = 1.0,
                 noise_std: float = 0.0, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
        self.dim = check_int("dim", dim, minimum=1)
        self.x_dist = check_choice("x_dist", x_dist, ("gaussian", "uniform"))
        self.input_range = check_positive("input_range", input_range)
        self.w_scale = check_positive("w_scale", w_scale, allow_zero=True)
        self.noise_std = check_positive("noise_std", noise_std, allow_zero=True)
        self.seed = _check_seed(seed)
        self.dtype = _check_float_dtype(dtype)
        if covariance is None:
            covariance = torch.eye(dim, dtype=torch.float64)
        check_tensor("covariance", covariance, ndim=2, floating=True, finite=True)
        if covariance.shape != (dim, dim):
            raise ValueError(f"covariance must have shape ({dim}, {dim}); got {tuple(covariance.shape)}")
        cov = covariance.to(torch.float64)
        if not torch.allclose(cov, cov.T, atol=1e-8):
            raise ValueError("covariance must be symmetric")
        evals, evecs = torch.linalg.eigh(cov)
        if evals.min() < -1e-10 * max(1.0, float(evals.max())):
            raise ValueError("covariance must be positive semi-definite")
        self.covariance = cov
        self._sqrt = evecs @ torch.diag(evals.clamp_min(0).sqrt()) @ evecs.T
        if isinstance(w_mean, torch.Tensor):
            check_tensor("w_mean", w_mean, floating=True, finite=True)
            if w_mean.shape not in ((), (dim,)):
                raise ValueError(f"w_mean must be a scalar or have shape ({dim},); got {tuple(w_mean.shape)}")
            self.w_mean = w_mean.to(torch.float64)
        else:
            check_scalar("w_mean", w_mean)
            self.w_mean = torch.full((dim,), float(w_mean), dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(self.seed)

    def shifted(self, covariance: torch.Tensor | None = None, w_mean: float | torch.Tensor | None = None,
                w_scale: float | None = None, input_range: float | None = None, seed: int | None = None
                ) -> "LinearRegressionTask":
        """A copy with a covariate shift (``covariance``/``input_range``) and/or task shift (``w_mean``/``w_scale``)."""
        return LinearRegressionTask(
            self.dim, self.covariance if covariance is None else covariance, self.x_dist,
            self.input_range if input_range is None else input_range,
            self.w_mean if w_mean is None else w_mean, self.w_scale if w_scale is None else w_scale,
            self.noise_std, self.seed if seed is None else seed, self.dtype)

    def sample_inputs(self, batch: int, n_points: int) -> torch.Tensor:
        """Inputs only, shape ``(batch, n_points, d)``, float64 (the task's ``dtype`` is applied by :meth:`sample`)."""
        batch = check_int("batch", batch, minimum=1)
        n_points = check_int("n_points", n_points, minimum=0)
        g = self.generator
        if self.x_dist == "uniform":
            x = (torch.rand(batch, n_points, self.dim, generator=g, dtype=torch.float64) - 0.5) * self.input_range
        else:
            x = torch.randn(batch, n_points, self.dim, generator=g, dtype=torch.float64) @ self._sqrt
        return x

    def sample(self, batch: int, n_context: int) -> PromptBatch:
        """Draw ``batch`` prompts with ``n_context`` labelled examples and one query each."""
        batch = check_int("batch", batch, minimum=1)
        n_context = check_int("n_context", n_context, minimum=0)
        g = self.generator
        w = self.w_mean + self.w_scale * torch.randn(batch, self.dim, generator=g, dtype=torch.float64)
        x = self.sample_inputs(batch, n_context + 1)
        y = torch.einsum("bnd,bd->bn", x, w)
        if self.noise_std > 0:
            y = y + self.noise_std * torch.randn(y.shape, generator=g, dtype=torch.float64)
        t = self.dtype
        return PromptBatch(x[:, :-1].to(t), y[:, :-1].to(t), x[:, -1].to(t), y[:, -1].to(t), w.to(t))


@dataclass
class ARBatch:
    """Autoregressive sequences ``xs`` of shape ``(B, T, d)`` (complex) and their diagonal ``W`` ``(B, d)``."""

    xs: torch.Tensor
    w_diag: torch.Tensor


class AutoregressiveTask:
    """Sequences ``x_{t+1} = W x_t`` with ``W = diag(exp(i theta_1), ..., exp(i theta_d))``, ``theta ~ U[0, 2 pi)``.

    Zheng et al. (2024), "On Mesa-Optimization in Autoregressively Trained Transformers". The initial token is

    * ``"gaussian"``: ``x_1 ~ N(0, sigma^2 I)`` (real part; imaginary part 0),
    * ``"sparse"``: ``x_1 = +-sigma e_j`` with ``j`` uniform and a random sign,
    * ``"ones"``: ``x_1 = sigma * 1``.

    ``sample(batch, n_context)`` returns ``n_context`` tokens ``x_1 .. x_T`` (complex ``dtype``).
    """

    def __init__(self, dim: int, x1: str = "gaussian", sigma: float = 1.0, seed: int = 0,
                 dtype: torch.dtype = torch.complex64) -> None:
        self.dim = check_int("dim", dim, minimum=1)
        self.x1 = check_choice("x1", x1, ("gaussian", "sparse", "ones"))
        self.sigma = check_positive("sigma", sigma)
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype (torch.complex64 or torch.complex128); got "
                            f"{type(dtype).__name__}")
        if dtype not in (torch.complex64, torch.complex128):
            raise ValueError(f"dtype must be torch.complex64 or torch.complex128; got {dtype}")
        self.dtype = dtype
        self.seed = _check_seed(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    def sample(self, batch: int, n_context: int) -> ARBatch:
        batch = check_int("batch", batch, minimum=1)
        n_context = check_int("n_context", n_context, minimum=1)
        g, d = self.generator, self.dim
        theta = 2 * math.pi * torch.rand(batch, d, generator=g, dtype=torch.float64)
        if self.x1 == "gaussian":
            x1 = self.sigma * torch.randn(batch, d, generator=g, dtype=torch.float64)
        elif self.x1 == "sparse":
            j = torch.randint(0, d, (batch,), generator=g)
            sign = torch.randint(0, 2, (batch,), generator=g, dtype=torch.float64) * 2 - 1
            x1 = torch.zeros(batch, d, dtype=torch.float64)
            x1[torch.arange(batch), j] = self.sigma * sign
        else:
            x1 = torch.full((batch, d), self.sigma, dtype=torch.float64)
        t = torch.arange(n_context, dtype=torch.float64)
        phase = torch.polar(torch.ones(batch, n_context, d, dtype=torch.float64), t[None, :, None] * theta[:, None, :])
        xs = phase * x1[:, None, :]
        return ARBatch(xs.to(self.dtype), torch.polar(torch.ones_like(theta), theta).to(self.dtype))


@dataclass
class TokenSelectionBatch:
    """Token-selection data: tokens ``X (n, T, d)``, query tokens ``z (n, d)``, labels ``y (n,)``, head ``v (d,)``."""

    X: torch.Tensor
    z: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor

    def token_scores(self) -> torch.Tensor:
        """``gamma_it = y_i v^T x_it``, shape ``(n, T)``."""
        return self.y[:, None] * (self.X @ self.v)


class TokenSelectionTask:
    """The attention-as-SVM data of Tarzanagh et al. (2023): Gaussian tokens normalised to unit norm.

    Args:
        dim: token dimension ``d``.
        self_attention: if true the query token is the first token of the sequence (``z_i = x_i1``),
            otherwise an independent unit vector (cross-attention).
        seed: generator seed; the head ``v`` is drawn once at construction and shared by all samples.

    ``sample(batch, n_context)`` returns ``batch`` sequences of ``n_context`` tokens.
    """

    def __init__(self, dim: int, self_attention: bool = False, seed: int = 0,
                 dtype: torch.dtype = torch.float64) -> None:
        self.dim = check_int("dim", dim, minimum=1)
        self.self_attention = check_bool("self_attention", self_attention)
        self.seed = _check_seed(seed)
        self.dtype = _check_float_dtype(dtype)
        self.generator = torch.Generator().manual_seed(self.seed)
        v = torch.randn(dim, generator=self.generator, dtype=torch.float64)
        self.v = (v / v.norm()).to(dtype)

    def sample(self, batch: int, n_context: int) -> TokenSelectionBatch:
        batch = check_int("batch", batch, minimum=1)
        n_context = check_int("n_context", n_context, minimum=2)
        g = self.generator
        X = torch.randn(batch, n_context, self.dim, generator=g, dtype=torch.float64)
        X = X / X.norm(dim=-1, keepdim=True)
        if self.self_attention:
            z = X[:, 0].clone()
        else:
            z = torch.randn(batch, self.dim, generator=g, dtype=torch.float64)
            z = z / z.norm(dim=-1, keepdim=True)
        y = torch.randint(0, 2, (batch,), generator=g, dtype=torch.float64) * 2 - 1
        t = self.dtype
        return TokenSelectionBatch(X.to(t), z.to(t), y.to(t), self.v.clone())
