r"""Gradient-boosted neural networks (GBNN), Emami & Martínez-Muñoz, arXiv 1909.12098 (IEEE Access 2023).

Reimplemented from the paper's equations (the official code is copyleft and was not used). The model is an additive
expansion of one-hidden-layer sigmoid networks trained one after the other by gradient boosting:

.. math::
    F(x) = F_0 + \sum_{t=1}^{T} \rho_t\, h_t(x), \qquad
    h_t(x) = V_t\, \sigma(W_t x + b_t) + c_t \quad (J = \text{units\_per\_round hidden units}).

* :math:`F_0` is the constant minimising the loss: the mean (squared loss), half the log-odds (binary
  log-exponential loss :math:`\log(1 + e^{-2yF})`, :math:`y \in \{\pm 1\}`), the centred log class
  frequencies (multiclass softmax cross-entropy, K outputs; the official code starts from zeros instead).
* Round t computes the pseudo-residuals :math:`r = -\partial L/\partial F`: :math:`y - F` (squared loss
  :math:`\tfrac12 (y-F)^2`), :math:`2y/(1 + e^{2yF})` (binary), :math:`Y_{\text{onehot}} - \operatorname{softmax}(F)`
  (multiclass); draws a fresh subsample (fraction ``subsample``, without replacement) and fits a freshly
  initialised :math:`h_t` to r on it by least squares with torch L-BFGS (``max_iter`` iterations, optional weight
  decay ``alpha`` on W and V).
* :math:`\rho_t` is one Newton step of the loss along :math:`h_t` on the whole training set, times
  ``learning_rate``: 1 for the squared loss;
  :math:`\sum r h / \sum |r|(2 - |r|) h^2` for the binary loss;
  :math:`\sum_{ik} R_{ik} H_{ik} / \sum_i (\sum_k p_{ik} H_{ik}^2 - (\sum_k p_{ik} H_{ik})^2)` (one scalar) for
  the multiclass loss. Then :math:`F \leftarrow F + \rho_t h_t(x)`.
* ``to_module()`` assembles one ``nn.Sequential(Linear(d, T·J), Sigmoid(), Linear(T·J, K))`` with the hidden units
  in round order and output weights :math:`\rho_t V_t` (bias :math:`F_0 + \sum_t \rho_t c_t`), all times 2 for the
  binary loss (so the module returns the log-odds :math:`2F`); keeping the first rounds switches off the
  last-trained units.
"""

from __future__ import annotations

import numbers
from typing import Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

__all__ = ["GradientBoostedNetClassifier", "GradientBoostedNetRegressor", "SquaredLoss", "LogExponentialLoss",
           "MultinomialLoss"]

DTYPE = torch.float64


class SquaredLoss:
    r""":math:`L = \tfrac12 (y - F)^2` per example; F, y of shape (n, 1)."""

    def init(self, y: torch.Tensor) -> torch.Tensor:
        return y.mean(0)

    def loss(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return 0.5 * (y - f).square().sum()

    def negative_gradient(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return y - f

    def newton_step(self, y: torch.Tensor, f: torch.Tensor, h: torch.Tensor) -> float:
        return 1.0


class LogExponentialLoss:
    r""":math:`L = \log(1 + e^{-2yF})` per example, :math:`y \in \{\pm1\}`, F of shape (n, 1) (half the log-odds)."""

    def init(self, y: torch.Tensor) -> torch.Tensor:
        p = float((y > 0).double().mean())
        p = min(max(p, 1e-12), 1 - 1e-12)
        return torch.tensor([0.5 * np.log(p / (1 - p))], dtype=y.dtype)

    def loss(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return nn.functional.softplus(-2.0 * y * f).sum()

    def negative_gradient(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return 2.0 * y * torch.sigmoid(-2.0 * y * f)

    def newton_step(self, y: torch.Tensor, f: torch.Tensor, h: torch.Tensor) -> float:
        r = self.negative_gradient(y, f)
        a = r.abs()
        den = float((a * (2.0 - a) * h.square()).sum())
        return float((r * h).sum()) / den if den > 0 else 0.0


class MultinomialLoss:
    r"""Softmax cross-entropy :math:`-\sum_k Y_k \log\operatorname{softmax}(F)_k`; Y one-hot, F of shape (n, K)."""

    def init(self, y: torch.Tensor) -> torch.Tensor:
        """The best constant: centred log class frequencies (softmax of it = the class priors)."""
        logp = torch.log(y.mean(0).clamp_min(1e-12))
        return logp - logp.mean()

    def loss(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return -(y * torch.log_softmax(f, dim=1)).sum()

    def negative_gradient(self, y: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        return y - torch.softmax(f, dim=1)

    def newton_step(self, y: torch.Tensor, f: torch.Tensor, h: torch.Tensor) -> float:
        p = torch.softmax(f, dim=1)
        den = float(((p * h.square()).sum(1) - (p * h).sum(1).square()).sum())
        return float(((y - p) * h).sum()) / den if den > 0 else 0.0


def _check_params(est: "_GradientBoostedNet") -> None:
    for name, lo in (("n_rounds", 1), ("units_per_round", 1), ("max_iter", 1)):
        v = getattr(est, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")
    for name, lo_open, hi in (("learning_rate", 0.0, None), ("subsample", 0.0, 1.0), ("alpha", None, None)):
        v = getattr(est, name)
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(v):
            raise ValueError(f"{name} must be a finite real number; got {v!r}")
        if name == "alpha" and v < 0:
            raise ValueError(f"alpha must be >= 0; got {v!r}")
        if lo_open is not None and not v > lo_open:
            raise ValueError(f"{name} must be > {lo_open}; got {v!r}")
        if hi is not None and v > hi:
            raise ValueError(f"{name} must be <= {hi}; got {v!r}")


class _GradientBoostedNet(BaseEstimator):
    """Shared fitting and assembly; see the module docstring for the equations."""

    def __init__(self, n_rounds: int = 200, units_per_round: int = 1, learning_rate: float = 1.0,
                 subsample: float = 0.5, max_iter: int = 200, alpha: float = 0.0, random_state=None) -> None:  # noqa: ANN001
        self.n_rounds = n_rounds
        self.units_per_round = units_per_round
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.max_iter = max_iter
        self.alpha = alpha
        self.random_state = random_state

    # -- fitting -----------------------------------------------------------------------------------------------
    def _fit_round(self, x: torch.Tensor, r: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        d, j, k = x.shape[1], self.units_per_round, r.shape[1]
        b1, b2 = np.sqrt(6.0 / (d + j)), np.sqrt(6.0 / (j + k))
        w = ((torch.rand(j, d, generator=gen, dtype=DTYPE) * 2 - 1) * b1).requires_grad_(True)
        b = ((torch.rand(j, generator=gen, dtype=DTYPE) * 2 - 1) * b1).requires_grad_(True)
        v = ((torch.rand(k, j, generator=gen, dtype=DTYPE) * 2 - 1) * b2).requires_grad_(True)
        c = torch.zeros(k, dtype=DTYPE, requires_grad=True)
        opt = torch.optim.LBFGS([w, b, v, c], lr=1.0, max_iter=self.max_iter, history_size=20,
                                tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")
        alpha = float(self.alpha)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            out = torch.sigmoid(x @ w.T + b) @ v.T + c
            obj = 0.5 * (out - r).square().sum(1).mean()
            if alpha > 0:
                obj = obj + 0.5 * alpha * (w.square().sum() + v.square().sum()) / x.shape[0]
            obj.backward()
            return obj

        opt.step(closure)
        self._iters.append(int(opt.state[w].get("n_iter", 1)))
        return tuple(p.detach() for p in (w, b, v, c))

    def _fit_encoded(self, x_np: np.ndarray, y: torch.Tensor, loss) -> None:  # noqa: ANN001
        _check_params(self)
        rng = check_random_state(self.random_state)
        sub_rng = np.random.default_rng(int(rng.randint(0, 2**31 - 1)))
        gen = torch.Generator().manual_seed(int(rng.randint(0, 2**31 - 1)))
        x = torch.tensor(np.asarray(x_np), dtype=DTYPE)
        n = x.shape[0]
        n_sub = min(n, max(1, int(round(self.subsample * n))))
        self.loss_ = loss
        self.init_ = loss.init(y)
        f = self.init_.expand(n, -1).clone()
        ws, bs, vs, cs, rhos = [], [], [], [], []
        self._iters: list[int] = []
        with torch.no_grad():
            for _ in range(self.n_rounds):
                r = loss.negative_gradient(y, f)
                idx = torch.as_tensor(np.sort(sub_rng.choice(n, size=n_sub, replace=False)))
                with torch.enable_grad():
                    w, b, v, c = self._fit_round(x[idx], r[idx], gen)
                h = torch.sigmoid(x @ w.T + b) @ v.T + c
                rho = float(self.learning_rate) * loss.newton_step(y, f, h)
                f = f + rho * h
                ws.append(w), bs.append(b), vs.append(v), cs.append(c), rhos.append(rho)
        self.hidden_weights_ = torch.stack(ws)   # (T, J, d)
        self.hidden_biases_ = torch.stack(bs)    # (T, J)
        self.output_weights_ = torch.stack(vs)   # (T, K, J)
        self.output_biases_ = torch.stack(cs)    # (T, K)
        self.rhos_ = np.asarray(rhos, dtype=np.float64)
        self.n_rounds_ = self.n_rounds
        self.n_iter_ = np.maximum(np.asarray(self._iters, dtype=np.int64), 1)  # L-BFGS iterations per round
        del self._iters
        self.train_loss_ = float(loss.loss(y, f)) / n

    # -- prediction --------------------------------------------------------------------------------------------
    def _check_n_rounds(self, n_rounds: int | None) -> int:
        if n_rounds is None:
            return self.n_rounds_
        if isinstance(n_rounds, bool) or not isinstance(n_rounds, numbers.Integral):
            raise TypeError(f"n_rounds must be an int or None; got {type(n_rounds).__name__}")
        if not 0 <= n_rounds <= self.n_rounds_:
            raise ValueError(f"n_rounds must lie in [0, {self.n_rounds_}]; got {n_rounds}")
        return int(n_rounds)

    def _round_outputs(self, x_np: np.ndarray) -> torch.Tensor:
        """rho_t h_t(x) for every round: shape (n, T, K)."""
        x = torch.tensor(np.asarray(x_np), dtype=DTYPE)
        hid = torch.sigmoid(torch.einsum("nd,tjd->ntj", x, self.hidden_weights_) + self.hidden_biases_)
        out = torch.einsum("ntj,tkj->ntk", hid, self.output_weights_) + self.output_biases_
        return out * torch.as_tensor(self.rhos_, dtype=DTYPE)[None, :, None]

    def _raw(self, X, n_rounds: int | None = None) -> torch.Tensor:  # noqa: ANN001
        check_is_fitted(self)
        t = self._check_n_rounds(n_rounds)
        x = validate_data(self, X, reset=False, dtype=np.float64)
        return self.init_ + self._round_outputs(x)[:, :t].sum(1)

    def _staged_raw(self, X) -> Iterator[torch.Tensor]:  # noqa: ANN001
        check_is_fitted(self)
        x = validate_data(self, X, reset=False, dtype=np.float64)
        cum = self.init_ + torch.cumsum(self._round_outputs(x), dim=1)
        for t in range(cum.shape[1]):
            yield cum[:, t]

    def to_module(self, n_rounds: int | None = None) -> nn.Sequential:
        """One float64 ``nn.Sequential`` with the first ``n_rounds`` rounds' T·J units in round order.

        Outputs F (regression: shape (n, 1); multiclass: the K scores) or 2F, the log-odds, for a binary
        classifier."""
        check_is_fitted(self)
        t = self._check_n_rounds(n_rounds)
        j, d = self.hidden_weights_.shape[1], self.hidden_weights_.shape[2]
        k = self.output_weights_.shape[1]
        scale = 2.0 if isinstance(self.loss_, LogExponentialLoss) else 1.0
        rho = torch.as_tensor(self.rhos_[:t], dtype=DTYPE)
        hidden = nn.Linear(d, t * j).to(DTYPE)
        out = nn.Linear(t * j, k).to(DTYPE)
        with torch.no_grad():
            hidden.weight.copy_(self.hidden_weights_[:t].reshape(t * j, d))
            hidden.bias.copy_(self.hidden_biases_[:t].reshape(t * j))
            out.weight.copy_(scale * (self.output_weights_[:t] * rho[:, None, None]).permute(1, 0, 2).reshape(k, t * j))
            out.bias.copy_(scale * (self.init_ + (self.output_biases_[:t] * rho[:, None]).sum(0)))
        return nn.Sequential(hidden, nn.Sigmoid(), out)


class GradientBoostedNetRegressor(RegressorMixin, _GradientBoostedNet):
    """GBNN regressor (squared loss, ρ_t = ``learning_rate``); arXiv 1909.12098. See the module docstring."""

    def fit(self, X, y) -> "GradientBoostedNetRegressor":  # noqa: ANN001
        x, yv = validate_data(self, X, y, dtype=np.float64, y_numeric=True)
        self._fit_encoded(x, torch.as_tensor(yv, dtype=DTYPE).reshape(-1, 1), SquaredLoss())
        return self

    def predict(self, X, n_rounds: int | None = None) -> np.ndarray:  # noqa: ANN001
        """F(x) with the first ``n_rounds`` rounds (all by default)."""
        return self._raw(X, n_rounds)[:, 0].numpy()

    def staged_predict(self, X) -> Iterator[np.ndarray]:  # noqa: ANN001
        """Predictions after rounds 1, ..., T."""
        for f in self._staged_raw(X):
            yield f[:, 0].numpy()


class GradientBoostedNetClassifier(ClassifierMixin, _GradientBoostedNet):
    """GBNN classifier: log-exponential loss for 2 classes, softmax cross-entropy for more; arXiv 1909.12098."""

    def fit(self, X, y) -> "GradientBoostedNetClassifier":  # noqa: ANN001
        x, yv = validate_data(self, X, y, dtype=np.float64)
        check_classification_targets(yv)
        self.classes_, enc = np.unique(yv, return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise ValueError(f"y must contain at least 2 classes; got 1 class ({self.classes_[0]!r})")
        enc_t = torch.as_tensor(enc, dtype=torch.long)
        if k == 2:
            self._fit_encoded(x, (2.0 * enc_t.to(DTYPE) - 1.0).reshape(-1, 1), LogExponentialLoss())
        else:
            self._fit_encoded(x, nn.functional.one_hot(enc_t, k).to(DTYPE), MultinomialLoss())
        return self

    def decision_function(self, X, n_rounds: int | None = None) -> np.ndarray:  # noqa: ANN001
        """F(x): shape (n,) for two classes (half the log-odds), (n, K) otherwise."""
        f = self._raw(X, n_rounds)
        return (f[:, 0] if len(self.classes_) == 2 else f).numpy()

    def _proba(self, f: torch.Tensor) -> np.ndarray:
        if len(self.classes_) == 2:
            p1 = torch.sigmoid(2.0 * f[:, 0])
            return torch.stack([1.0 - p1, p1], dim=1).numpy()
        return torch.softmax(f, dim=1).numpy()

    def predict_proba(self, X, n_rounds: int | None = None) -> np.ndarray:  # noqa: ANN001
        """Class probabilities σ(2F) (binary) or softmax(F), columns in ``classes_`` order."""
        return self._proba(self._raw(X, n_rounds))

    def predict(self, X, n_rounds: int | None = None) -> np.ndarray:  # noqa: ANN001
        proba = self.predict_proba(X, n_rounds)
        return self.classes_[np.argmax(proba, axis=1)]

    def staged_predict_proba(self, X) -> Iterator[np.ndarray]:  # noqa: ANN001
        for f in self._staged_raw(X):
            yield self._proba(f)

    def staged_predict(self, X) -> Iterator[np.ndarray]:  # noqa: ANN001
        """Predicted classes after rounds 1, ..., T."""
        for p in self.staged_predict_proba(X):
            yield self.classes_[np.argmax(p, axis=1)]
