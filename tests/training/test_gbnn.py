"""GBNN estimators (arXiv 1909.12098): scikit-learn conformance, residuals vs autograd, assembly identity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.utils.estimator_checks import estimator_checks_generator

from gradlab.training import GradientBoostedNetClassifier, GradientBoostedNetRegressor
from gradlab.training.gbnn import LogExponentialLoss, MultinomialLoss, SquaredLoss

torch.set_num_threads(1)
TINY = dict(n_rounds=4, units_per_round=2, max_iter=15, random_state=0)


def _checks():  # noqa: ANN202
    # scikit-learn's own conformance suite on tiny settings; its array-API check is left out because the estimators
    # do not declare array-API support (scikit-learn would only skip it without SCIPY_ARRAY_API)
    for est in (GradientBoostedNetClassifier(**TINY), GradientBoostedNetRegressor(**TINY)):
        for e, check in estimator_checks_generator(est, legacy=True):
            name = getattr(check, "func", check).__name__
            if name != "check_array_api_input":
                yield pytest.param(e, check, id=f"{type(e).__name__}-{name}")


@pytest.mark.parametrize(("estimator", "check"), list(_checks()))
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _targets(kind: str, n: int, g: torch.Generator) -> torch.Tensor:
    if kind == "squared":
        return torch.randn(n, 1, generator=g, dtype=torch.float64)
    if kind == "binary":
        return (torch.randint(0, 2, (n, 1), generator=g) * 2 - 1).double()
    return torch.nn.functional.one_hot(torch.randint(0, 4, (n,), generator=g), 4).double()


LOSSES = {"squared": SquaredLoss(), "binary": LogExponentialLoss(), "multiclass": MultinomialLoss()}


@pytest.mark.parametrize("kind", list(LOSSES))
def test_residuals_are_minus_autograd_and_newton_step(kind):
    g = torch.Generator().manual_seed(0)
    loss = LOSSES[kind]
    y = _targets(kind, 30, g)
    f = torch.randn(y.shape, generator=g, dtype=torch.float64).requires_grad_(True)
    (grad,) = torch.autograd.grad(loss.loss(y, f), f)
    torch.testing.assert_close(loss.negative_gradient(y, f.detach()), -grad, atol=1e-12, rtol=1e-12)
    # rho = one Newton step of rho -> L(F + rho h) from rho = 0 (squared loss: 1 by construction)
    h = torch.randn(y.shape, generator=g, dtype=torch.float64)
    rho = torch.zeros((), dtype=torch.float64, requires_grad=True)
    val = loss.loss(y, f.detach() + rho * h)
    (d1,) = torch.autograd.grad(val, rho, create_graph=True)
    (d2,) = torch.autograd.grad(d1, rho)
    expected = 1.0 if kind == "squared" else float(-d1 / d2)
    assert loss.newton_step(y, f.detach(), h) == pytest.approx(expected, rel=1e-10)
    # F_0 is the best constant
    c0 = loss.init(y).clone().requires_grad_(True)
    (gc,) = torch.autograd.grad(loss.loss(y, c0.expand(y.shape[0], -1)), c0)
    assert float(gc.abs().max()) < 1e-9 * y.shape[0]


def _data(n_classes: int | None, n: int = 80, seed: int = 0):  # noqa: ANN202
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5))
    if n_classes is None:
        return x, np.sin(x[:, 0]) + 0.5 * x[:, 1]
    return x, np.argmax(x[:, :n_classes] + 0.3 * rng.normal(size=(n, n_classes)), axis=1)


@pytest.mark.parametrize("n_classes", [None, 2, 3])
def test_to_module_equals_additive_expansion_and_truncates(n_classes):
    x, y = _data(n_classes)
    est = (GradientBoostedNetRegressor if n_classes is None else GradientBoostedNetClassifier)(
        n_rounds=6, units_per_round=3, max_iter=40, random_state=1).fit(x, y)
    xt = torch.as_tensor(x)
    # independent reference: F_0 + sum_t rho_t h_t(x), round by round
    f = est.init_.expand(len(x), -1).clone()
    staged = list(est.staged_predict(x))
    assert len(staged) == 6
    for t in range(6):
        h = torch.sigmoid(xt @ est.hidden_weights_[t].T + est.hidden_biases_[t]) @ est.output_weights_[t].T \
            + est.output_biases_[t]
        f = f + est.rhos_[t] * h
        scale = 2.0 if n_classes == 2 else 1.0
        with torch.no_grad():
            out = est.to_module(n_rounds=t + 1)(xt)
        assert out.shape == (len(x), f.shape[1])
        torch.testing.assert_close(out, scale * f, atol=1e-6, rtol=0)
        if n_classes is None:
            np.testing.assert_allclose(staged[t], f[:, 0].numpy(), atol=1e-10)
            np.testing.assert_allclose(est.predict(x, n_rounds=t + 1), f[:, 0].numpy(), atol=1e-10)
        else:
            proba = est.predict_proba(x, n_rounds=t + 1)
            ref = torch.sigmoid(2 * f[:, 0]).numpy() if n_classes == 2 else torch.softmax(f, 1).numpy()
            np.testing.assert_allclose(proba[:, 1] if n_classes == 2 else proba, ref, atol=1e-10)
            np.testing.assert_array_equal(staged[t], est.classes_[proba.argmax(1)])
    assert est.to_module()[0].out_features == 18
    np.testing.assert_array_equal(est.predict(x), staged[-1])
    with torch.no_grad():
        zero = est.to_module(n_rounds=0)(xt)
    torch.testing.assert_close(zero, (2.0 if n_classes == 2 else 1.0) * est.init_.expand(len(x), -1))


def test_fits_digits_and_is_deterministic():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    x = x[:400] / 16.0
    y = y[:400]
    a = GradientBoostedNetClassifier(n_rounds=15, units_per_round=2, max_iter=50, random_state=3).fit(x, y)
    b = GradientBoostedNetClassifier(n_rounds=15, units_per_round=2, max_iter=50, random_state=3).fit(x, y)
    assert a.score(x, y) > 0.8
    np.testing.assert_array_equal(a.rhos_, b.rhos_)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    # boosting lowers the training loss round by round (Newton step along the fitted direction)
    losses = [float(a.loss_.loss(torch.nn.functional.one_hot(torch.as_tensor(np.searchsorted(a.classes_, y)), 10)
                                .double(), torch.log(torch.as_tensor(p)))) for p in a.staged_predict_proba(x)]
    assert losses[-1] < losses[0]


def test_bad_input():
    x, y = _data(2, n=20)
    for kw, match in ((dict(n_rounds=0), "n_rounds"), (dict(units_per_round=1.5), "units_per_round"),
                      (dict(learning_rate=0.0), "learning_rate"), (dict(subsample=0.0), "subsample"),
                      (dict(subsample=1.5), "subsample"), (dict(max_iter=0), "max_iter"),
                      (dict(alpha=-1.0), "alpha"), (dict(learning_rate=float("nan")), "learning_rate")):
        with pytest.raises(ValueError, match=match):
            GradientBoostedNetClassifier(**kw).fit(x, y)
    with pytest.raises(ValueError, match="2 classes"):
        GradientBoostedNetClassifier(n_rounds=2).fit(x, np.zeros(20))
    est = GradientBoostedNetRegressor(n_rounds=2, max_iter=5, random_state=0).fit(x, y.astype(float))
    with pytest.raises(ValueError, match="n_rounds"):
        est.to_module(n_rounds=3)
    with pytest.raises(TypeError, match="n_rounds"):
        est.predict(x, n_rounds=1.0)
    with pytest.raises(ValueError):
        est.predict(x[:, :3])
    xn = x.copy()
    xn[0, 0] = np.nan
    with pytest.raises(ValueError):
        GradientBoostedNetRegressor(n_rounds=2).fit(xn, y)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 12), lr=st.floats(0.05, 2.0), sub=st.floats(0.05, 1.0), seed=st.integers(0, 1000),
       classes=st.integers(2, 4))
def test_property_fit_predict_finite_and_consistent(n, lr, sub, seed, classes):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = np.arange(n) % classes
    est = GradientBoostedNetClassifier(n_rounds=2, units_per_round=1, max_iter=5, learning_rate=lr, subsample=sub,
                                       random_state=seed).fit(x, y)
    p = est.predict_proba(x)
    assert np.isfinite(p).all() and np.allclose(p.sum(1), 1.0)
    assert set(est.predict(x)) <= set(est.classes_)
