"""Hypothesis property tests for the public entry points of gradlab.incontext.

Every test draws a (small) valid problem and, half of the time, one corruption of it. A corrupted call must raise
ValueError/TypeError whose message names the corrupted argument; a valid one must agree with an independent
reference (numpy closed forms and loops written here, not the library's code). The NaN/inf policy of the
package docstring is tested clause by clause at the end.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradlab.incontext as ic
from gradlab.incontext import (
    AutoregressiveTask, ICLTransformer, LinearRegressionTask, LinearSelfAttention, MultiLayerLSA, PromptBatch,
    RidgeProbe, TokenSelectionTask, ar_tokens, best_match, compare_weights, gd_iterates, gd_lsa_construction,
    gd_plus_plus, gd_plus_plus_construction, gradient_descent, ill_conditioned_covariance, matrix_correlation,
    mesa_construction, newton_iterates, newton_schulz, ols, one_step_gd_ar, prediction_similarity,
    prefix_predictions, regression_prediction, regression_tokens, ridge, sensitivity_cosine, similarity_matrix,
    zfb_gamma, zfb_population_risk,
)
from gradlab.incontext.attention_svm import (
    AttentionSelector, directional_correlation, globally_optimal_tokens, margin_matrices, normalized_gd,
    selector_loss, svm_margins,
)

torch.set_num_threads(1)
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ERRORS = (ValueError, TypeError)


def raises_naming(name, fn):
    """``fn()`` raises ValueError/TypeError and the message names ``name``."""
    with pytest.raises(ERRORS) as info:
        fn()
    assert name in str(info.value), f"message {str(info.value)!r} does not name {name!r}"


def poison(t, value=float("nan")):
    t = t.clone()
    t.view(-1)[0] = value
    return t


@st.composite
def prompts(draw, min_n=1):
    b, n, d = draw(st.integers(1, 3)), draw(st.integers(min_n, 6)), draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    ys = torch.randn(b, n, generator=g, dtype=torch.float64)
    xq = torch.randn(b, d, generator=g, dtype=torch.float64)
    return xs, ys, xq


XY_CORRUPTIONS = ["none", "nan_xs", "inf_ys", "ys_shape", "ys_dtype", "xs_rank", "xs_int"]


def corrupt_xy(kind, xs, ys):
    """Return (xs, ys, name of the argument that is wrong)."""
    if kind == "nan_xs":
        return poison(xs), ys, "xs"
    if kind == "inf_ys":
        return xs, poison(ys, float("inf")), "ys"
    if kind == "ys_shape":
        return xs, torch.zeros(ys.shape[0], ys.shape[1] + 1, dtype=ys.dtype), "ys"
    if kind == "ys_dtype":
        return xs, ys.float(), "ys"
    if kind == "xs_rank":
        return xs[0], ys, "xs"
    if kind == "xs_int":
        return xs.long(), ys, "xs"
    return xs, ys, None


# ---------------------------------------------------------------------------------------------- learners


@SETTINGS
@given(p=prompts(), kind=st.sampled_from(XY_CORRUPTIONS), lam=st.floats(1e-3, 10.0))
def test_ols_and_ridge_match_numpy_or_name_the_bad_argument(p, kind, lam):
    xs, ys, _ = p
    bx, by, bad = corrupt_xy(kind, xs, ys)
    if bad:
        raises_naming(bad, lambda: ols(bx, by))
        raises_naming(bad, lambda: ridge(bx, by, lam))
        return
    for i in range(xs.shape[0]):
        x, y = xs[i].numpy(), ys[i].numpy()
        np.testing.assert_allclose(ols(xs, ys)[i].numpy(), np.linalg.pinv(x) @ y, atol=1e-8)
        ref = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)
        np.testing.assert_allclose(ridge(xs, ys, lam)[i].numpy(), ref, atol=1e-8)


@SETTINGS
@given(p=prompts(), kind=st.sampled_from(XY_CORRUPTIONS + ["w0_len", "w0_nan", "normalize_int"]),
       steps=st.integers(0, 4), per_prompt=st.booleans(), normalize=st.booleans())
def test_gradient_descent_matches_a_numpy_loop(p, kind, steps, per_prompt, normalize):
    xs, ys, _ = p
    b, n, d = xs.shape
    lr = 0.5 / (n * d) if not normalize else 0.5 / d
    w0 = torch.linspace(-1, 1, b * d, dtype=torch.float64).reshape(b, d)
    w0 = w0 if per_prompt else w0[0]
    bx, by, bad = corrupt_xy(kind, xs, ys)
    norm_arg = normalize
    if kind == "w0_len":
        w0, bad = torch.zeros(d + 1, dtype=torch.float64), "w0"
    elif kind == "w0_nan":
        w0, bad = poison(w0), "w0"
    elif kind == "normalize_int":
        norm_arg, bad = 1, "normalize"
    if bad:
        raises_naming(bad, lambda: gradient_descent(bx, by, steps, lr, w0=w0, normalize=norm_arg))
        raises_naming(bad, lambda: gd_iterates(bx, by, [steps], lr, w0=w0, normalize=norm_arg))
        return
    got = gradient_descent(xs, ys, steps, lr, w0=w0, normalize=normalize)
    closed = gd_iterates(xs, ys, [0, steps], lr, w0=w0, normalize=normalize)
    for i in range(b):
        x, y = xs[i].numpy(), ys[i].numpy()
        w = (w0[i] if per_prompt else w0).numpy().copy()
        for _ in range(steps):
            w = w - lr * (x.T @ (x @ w - y)) / (n if normalize else 1)
        np.testing.assert_allclose(got[i].numpy(), w, atol=1e-9)
        np.testing.assert_allclose(closed[1, i].numpy(), w, atol=1e-8)
        np.testing.assert_allclose(closed[0, i].numpy(), (w0[i] if per_prompt else w0).numpy(), atol=1e-12)


@SETTINGS
@given(p=prompts(), kind=st.sampled_from(["none", "xq_batch", "xq_dim", "xq_nan", "xq_dtype", "gamma_neg"]),
       steps=st.integers(0, 3))
def test_gd_plus_plus_with_gamma_zero_is_gd_on_the_mean_loss(p, kind, steps):
    xs, ys, xq = p
    b, n, d = xs.shape
    gamma, bad = 0.0, None
    if kind == "xq_batch":
        xq, bad = torch.zeros(b + 1, d, dtype=xq.dtype), "xq"
    elif kind == "xq_dim":
        xq, bad = torch.zeros(b, d + 1, dtype=xq.dtype), "xq"
    elif kind == "xq_nan":
        xq, bad = poison(xq), "xq"
    elif kind == "xq_dtype":
        xq, bad = xq.float(), "xq"
    elif kind == "gamma_neg":
        gamma, bad = -0.1, "gamma"
    lr = 0.3 / d
    if bad:
        raises_naming(bad, lambda: gd_plus_plus(xs, ys, xq, steps, lr, gamma))
        return
    w = gradient_descent(xs, ys, steps, lr, normalize=True)
    np.testing.assert_allclose(gd_plus_plus(xs, ys, xq, steps, lr, 0.0).numpy(), (w * xq).sum(-1).numpy(),
                               atol=1e-9)


@SETTINGS
@given(d=st.integers(1, 4), seed=st.integers(0, 2**16),
       kind=st.sampled_from(["none", "nonsquare", "nan", "asymmetric", "alpha_neg", "alpha_nan", "alpha_shape",
                             "iters_int", "iters_neg", "iters_empty"]))
def test_newton_schulz_converges_to_the_inverse_or_names_the_argument(d, seed, kind):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    s = a @ a.T + torch.eye(d, dtype=torch.float64)  # well conditioned SPD
    alpha, iters, bad = None, 60, None
    if kind == "nonsquare":
        s, bad = torch.zeros(d, d + 1, dtype=torch.float64), "s"
    elif kind == "nan":
        s, bad = poison(s), "s"
    elif kind == "asymmetric" and d > 1:
        s = s.clone()
        s[0, 1] += 1.0
        bad = "s"
    elif kind == "alpha_neg":
        alpha, bad = -1.0, "alpha"
    elif kind == "alpha_nan":
        alpha, bad = torch.tensor(float("nan"), dtype=torch.float64), "alpha"
    elif kind == "alpha_shape":
        alpha, bad = torch.ones(d + 2, 1, 1, dtype=torch.float64), "alpha"
    elif kind == "iters_int":
        iters, bad = 1.5, "n_iters"
    elif kind == "iters_neg":
        iters, bad = -1, "n_iters"
    elif kind == "iters_empty":
        iters, bad = 0, None
    if bad:
        raises_naming(bad, lambda: newton_schulz(s, iters, alpha))
        return
    m = newton_schulz(s, iters, alpha)
    if iters >= 60:
        np.testing.assert_allclose(m.numpy(), np.linalg.inv(s.numpy()), rtol=1e-7, atol=1e-9)
    else:  # M_0 = alpha S with alpha = 1/||S S^T||_F
        ref = s.numpy() / np.linalg.norm(s.numpy() @ s.numpy().T)
        np.testing.assert_allclose(m.numpy(), ref, rtol=1e-12)


@SETTINGS
@given(p=prompts(), kind=st.sampled_from(XY_CORRUPTIONS + ["iters_str", "iters_neg", "alpha_neg"]))
def test_newton_iterates_reach_ols_on_well_posed_prompts(p, kind):
    xs, ys, _ = p
    bx, by, bad = corrupt_xy(kind, xs, ys)
    iters, alpha = [0, 80], None
    if kind == "iters_str":
        iters, bad = "80", "iters"
    elif kind == "iters_neg":
        iters, bad = [3, -1], "iters[1]"
    elif kind == "alpha_neg":
        alpha, bad = -0.5, "alpha"
    if bad:
        raises_naming(bad, lambda: newton_iterates(bx, by, iters, alpha))
        return
    b, n, d = xs.shape
    w = newton_iterates(xs, ys, iters)
    for i in range(b):
        x = xs[i].numpy()
        sv = np.linalg.svd(x, compute_uv=False)
        if n >= d and sv.min() > 0.3 * sv.max():  # full rank and conditioned: 80 iterations converge
            np.testing.assert_allclose(w[1, i].numpy(), np.linalg.lstsq(x, ys[i].numpy(), rcond=None)[0], atol=1e-6)


@SETTINGS
@given(p=prompts(), kind=st.sampled_from(["none", "not_callable", "bad_output", "nan_xs"]))
def test_prefix_predictions_equal_refitting_on_each_prefix(p, kind):
    xs, ys, _ = p
    learner, bx, bad = (lambda X, y: ridge(X, y, 0.5)), xs, None
    if kind == "not_callable":
        learner, bad = 3, "learner"
    elif kind == "bad_output":
        learner, bad = (lambda X, y: torch.zeros(2, dtype=X.dtype)), "learner"
    elif kind == "nan_xs":
        bx, bad = poison(xs), "xs"
    if bad:
        raises_naming(bad, lambda: prefix_predictions(learner, bx, ys))
        return
    got = prefix_predictions(learner, xs, ys)
    b, n, d = xs.shape
    for i in range(b):
        for j in range(n):
            x, y = xs[i, :j].numpy(), ys[i, :j].numpy()
            w = np.linalg.solve(x.T @ x + 0.5 * np.eye(d), x.T @ y)
            assert got[i, j].item() == pytest.approx(float(xs[i, j].numpy() @ w), abs=1e-9)


@SETTINGS
@given(d=st.integers(1, 5), n=st.integers(1, 50), seed=st.integers(0, 1000),
       kind=st.sampled_from(["none", "nonsquare", "nan", "n_zero", "b_shape"]))
def test_zfb_gamma_and_risk_closed_forms(d, n, seed, kind):
    lam = ill_conditioned_covariance(d, 2.0, torch.Generator().manual_seed(seed), torch.float64)
    bmat = torch.eye(d, dtype=torch.float64)
    if kind == "nonsquare":
        raises_naming("covariance", lambda: zfb_gamma(torch.ones(d, d + 1, dtype=torch.float64), n))
        return
    if kind == "nan":
        raises_naming("covariance", lambda: zfb_gamma(poison(lam), n))
        return
    if kind == "n_zero":
        raises_naming("n_context", lambda: zfb_gamma(lam, 0))
        return
    if kind == "b_shape":
        raises_naming("b", lambda: zfb_population_risk(torch.eye(d + 1, dtype=torch.float64), lam, n))
        return
    L = lam.numpy()
    G = (1 + 1 / n) * L + np.trace(L) / n * np.eye(d)
    np.testing.assert_allclose(zfb_gamma(lam, n).numpy(), G, rtol=1e-12)
    B = np.linalg.inv(G)  # the global minimum; its risk is the smallest over B
    risk = 0.5 * (np.trace(B.T @ L @ B @ L @ G) - 2 * np.trace(L @ B @ L) + np.trace(L))
    assert float(zfb_population_risk(torch.from_numpy(B), lam, n)) == pytest.approx(risk, rel=1e-9, abs=1e-12)
    assert float(zfb_population_risk(bmat, lam, n)) >= risk - 1e-9


@SETTINGS
@given(b=st.integers(1, 2), t=st.integers(1, 5), d=st.integers(1, 3), c=st.floats(-2, 2),
       kind=st.sampled_from(["none", "nan", "c_nan", "c_vector", "rank"]))
def test_one_step_gd_ar_matches_a_python_loop(b, t, d, c, kind):
    g = torch.Generator().manual_seed(b * 100 + t * 10 + d)
    xs = torch.complex(torch.randn(b, t, d, generator=g, dtype=torch.float64),
                       torch.randn(b, t, d, generator=g, dtype=torch.float64))
    if kind == "nan":
        raises_naming("xs", lambda: one_step_gd_ar(poison(xs, complex("nan")), c))
        return
    if kind == "c_nan":
        raises_naming("c", lambda: one_step_gd_ar(xs, float("nan")))
        return
    if kind == "c_vector":
        raises_naming("c", lambda: one_step_gd_ar(xs, torch.ones(d + 1)))
        return
    if kind == "rank":
        raises_naming("xs", lambda: one_step_gd_ar(xs[0], c))
        return
    got = one_step_gd_ar(xs, c).numpy()
    x = xs.numpy()
    for i in range(b):
        for s in range(t):  # 0-based s is the paper's t = s + 1; sum over i = 2..t of x_i x_{i-1}^H x_t
            acc = np.zeros((d, d), dtype=complex)
            for k in range(1, s + 1):
                acc += np.outer(x[i, k], x[i, k - 1].conj())
            ref = c * acc @ x[i, s] / max(s, 1)
            np.testing.assert_allclose(got[i, s], ref, atol=1e-10)


@SETTINGS
@given(d=st.integers(1, 4), lr=st.floats(0.01, 2.0), n=st.integers(1, 8), gamma=st.floats(0.0, 0.5),
       kind=st.sampled_from(["none", "int_dtype", "str_dtype", "lr_nan", "a_nan"]))
def test_constructions_refuse_truncating_dtypes_and_implement_gd(d, lr, n, gamma, kind):
    if kind == "int_dtype":
        raises_naming("dtype", lambda: gd_lsa_construction(d, lr, n, dtype=torch.int64))
        raises_naming("dtype", lambda: gd_plus_plus_construction(d, lr, gamma, n, dtype=torch.int32))
        raises_naming("dtype", lambda: mesa_construction(d, 1.0, 1.0, dtype=torch.int64))
        return
    if kind == "str_dtype":
        raises_naming("dtype", lambda: gd_lsa_construction(d, lr, n, dtype="float32"))
        return
    if kind == "lr_nan":
        raises_naming("lr", lambda: gd_lsa_construction(d, float("nan"), n))
        return
    if kind == "a_nan":
        raises_naming("a", lambda: mesa_construction(d, float("nan"), 1.0))
        return
    task = LinearRegressionTask(d, seed=d + n)
    batch = task.sample(3, n)
    lsa = LinearSelfAttention(d + 1, parametrization="separate", include_query=False, dtype=torch.float32)
    lsa.load_state_dict(gd_lsa_construction(d, lr, n))
    with torch.no_grad():
        pred = regression_prediction(lsa(regression_tokens(batch)), sign=-1)
    w = gradient_descent(batch.xs.double(), batch.ys.double(), 1, lr, normalize=True)
    np.testing.assert_allclose(pred.numpy(), (w * batch.xq.double()).sum(-1).numpy(), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------- models


def _lsa_reference(tokens, w_kq, w_pv, include_query, normalize, causal):
    """e_i + sum_h W_pv sum_{j in K(i)} e_j e_j^H W_kq e_i / rho_i, written as loops."""
    e = tokens.numpy()
    b, t, dim = e.shape
    out = e.copy()
    for bi in range(b):
        for i in range(t):
            keys = range(i + 1) if causal else (range(t) if include_query else range(t - 1))
            rho = (max(i, 1) if causal else max(t - 1, 1)) if normalize else 1
            for h in range(w_kq.shape[0]):
                acc = np.zeros(dim, dtype=e.dtype)
                for j in keys:
                    acc += e[bi, j] * (e[bi, j].conj() @ w_kq[h] @ e[bi, i])
                out[bi, i] += w_pv[h] @ acc / rho
    return out


@SETTINGS
@given(b=st.integers(1, 2), t=st.integers(1, 5), dim=st.integers(1, 4), heads=st.integers(1, 2),
       include_query=st.booleans(), normalize=st.booleans(), causal=st.booleans(),
       kind=st.sampled_from(["none", "f32_tokens", "int_tokens", "last_dim", "nan", "rank", "empty_t",
                             "last_only_int"]))
def test_linear_self_attention_matches_the_formula(b, t, dim, heads, include_query, normalize, causal, kind):
    torch.manual_seed(t * 7 + dim)
    lsa = LinearSelfAttention(dim, n_heads=heads, parametrization="merged", include_query=include_query,
                              causal=causal, normalize=normalize, init_std=0.3, dtype=torch.float64)
    tokens = torch.randn(b, t, dim, dtype=torch.float64)
    bad_calls = {
        "f32_tokens": lambda: lsa(tokens.float()),
        "int_tokens": lambda: lsa(tokens.long()),
        "last_dim": lambda: lsa(torch.zeros(b, t, dim + 1, dtype=torch.float64)),
        "nan": lambda: lsa(poison(tokens)),
        "rank": lambda: lsa(tokens[0]),
        "empty_t": lambda: lsa(torch.zeros(b, 0, dim, dtype=torch.float64)),
    }
    if kind in bad_calls:
        raises_naming("tokens", bad_calls[kind])
        return
    if kind == "last_only_int":
        raises_naming("last_only", lambda: lsa(tokens, last_only=1))
        return
    with torch.no_grad():
        got = lsa(tokens)
        last = lsa(tokens, last_only=True)
    ref = _lsa_reference(tokens, lsa.w_kq.detach().numpy(), lsa.w_pv.detach().numpy(), include_query, normalize,
                         causal)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)
    np.testing.assert_allclose(last.numpy(), ref[:, -1:], atol=1e-10)


@SETTINGS
@given(b=st.integers(1, 3), n=st.integers(1, 5), d=st.integers(1, 4),
       kind=st.sampled_from(["none", "xq_batch", "ys_shape", "xq_dtype", "nan_xq", "not_batch"]))
def test_regression_tokens_layout_or_named_field(b, n, d, kind):
    batch = LinearRegressionTask(d, seed=b + n + d).sample(b, n)
    xs, ys, xq = batch.xs, batch.ys, batch.xq
    bad = {"xq_batch": (PromptBatch(xs, ys, xq[:0] if b == 1 else xq[:-1], batch.yq, batch.w), "batch.xq"),
           "ys_shape": (PromptBatch(xs, ys[:, :-1], xq, batch.yq, batch.w), "batch.ys"),
           "xq_dtype": (PromptBatch(xs, ys, xq.double(), batch.yq, batch.w), "batch.xq"),
           "nan_xq": (PromptBatch(xs, ys, poison(xq), batch.yq, batch.w), "batch.xq"),
           "not_batch": ((xs, ys, xq), "batch")}
    if kind in bad:
        arg, name = bad[kind]
        raises_naming(name, lambda: regression_tokens(arg))
        return
    tok = regression_tokens(batch)
    assert tok.shape == (b, n + 1, d + 1)
    torch.testing.assert_close(tok[:, :n, :d], xs)
    torch.testing.assert_close(tok[:, :n, d], ys)
    torch.testing.assert_close(tok[:, n, :d], xq)
    assert bool((tok[:, n, d] == 0).all())
    torch.testing.assert_close(regression_prediction(tok, sign=1.0), tok[:, -1, -1])


@SETTINGS
@given(b=st.integers(1, 2), t=st.integers(1, 4), d=st.integers(1, 3), kind=st.sampled_from(["none", "nan", "empty"]))
def test_ar_tokens_pair_each_token_with_its_predecessor(b, t, d, kind):
    xs = AutoregressiveTask(d, seed=t).sample(b, t).xs
    if kind == "nan":
        raises_naming("xs", lambda: ar_tokens(poison(xs, complex("nan"))))
        return
    if kind == "empty":
        raises_naming("xs", lambda: ar_tokens(xs[:, :0]))
        return
    e = ar_tokens(xs)
    assert e.shape == (b, t, 2 * d)
    torch.testing.assert_close(e[:, :, :d], xs)
    assert bool((e[:, 0, d:] == 0).all())
    torch.testing.assert_close(e[:, 1:, d:], xs[:, :-1])


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 6), kind=st.sampled_from(["none", "f64", "ys_shape", "too_long", "nan_ys", "dim"]))
def test_icl_transformer_input_contract(n, kind):
    torch.manual_seed(0)
    model = ICLTransformer(3, 6, width=8, n_layers=1, n_heads=2)
    xs, ys = torch.randn(2, n, 3), torch.randn(2, n)
    bad = {"f64": (lambda: model(xs.double(), ys.double()), "xs"),
           "ys_shape": (lambda: model(xs, ys[:1]), "ys"),
           "too_long": (lambda: model(torch.randn(2, 7, 3), torch.randn(2, 7)), "max_points"),
           "nan_ys": (lambda: model(xs, poison(ys)), "ys"),
           "dim": (lambda: model(torch.randn(2, n, 4), ys), "xs")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    pred, hidden = model(xs, ys, return_hidden=True)
    assert pred.shape == (2, n) and hidden.shape == (1, 2, n, 8)
    # causality: prediction i must not depend on y_i or anything later
    ys2 = ys.clone()
    ys2[:, -1] += 10.0
    torch.testing.assert_close(model(xs, ys2), pred)


@settings(max_examples=10, deadline=None)
@given(layers=st.integers(1, 3), shared=st.booleans(), kind=st.sampled_from(["none", "stack_out_dim", "hidden_int"]))
def test_multilayer_lsa_stacks_layers(layers, shared, kind):
    if kind == "stack_out_dim" and layers > 1:
        raises_naming("out_dim", lambda: MultiLayerLSA(3, layers, out_dim=2, residual=False))
        return
    torch.manual_seed(layers)
    model = MultiLayerLSA(3, layers, shared=shared, init_std=0.2)
    tokens = torch.randn(2, 4, 3)
    if kind == "hidden_int":
        raises_naming("return_hidden", lambda: model(tokens, return_hidden=1))
        return
    hidden = model(tokens, return_hidden=True)
    assert len(hidden) == layers + 1
    h = tokens
    for i in range(layers):
        h = model.layers[0 if shared else i](h)
        torch.testing.assert_close(hidden[i + 1], h)


# ---------------------------------------------------------------------------------------------- tasks


@SETTINGS
@given(d=st.integers(1, 4), b=st.integers(1, 3), n=st.integers(0, 5), seed=st.integers(0, 2**20),
       x_dist=st.sampled_from(["gaussian", "uniform"]),
       kind=st.sampled_from(["none", "int_dtype", "w_mean_nan", "w_mean_shape", "cov_shape", "cov_nan", "seed_neg",
                             "batch_zero", "n_points_neg", "dtype_str"]))
def test_linear_regression_task_labels_are_linear_in_the_inputs(d, b, n, seed, x_dist, kind):
    bad = {"int_dtype": (lambda: LinearRegressionTask(d, dtype=torch.int64), "dtype"),
           "dtype_str": (lambda: LinearRegressionTask(d, dtype="float32"), "dtype"),
           "w_mean_nan": (lambda: LinearRegressionTask(d, w_mean=float("nan")), "w_mean"),
           "w_mean_shape": (lambda: LinearRegressionTask(d, w_mean=torch.zeros(d + 1)), "w_mean"),
           "cov_shape": (lambda: LinearRegressionTask(d, covariance=torch.eye(d + 1)), "covariance"),
           "cov_nan": (lambda: LinearRegressionTask(d, covariance=poison(torch.eye(d))), "covariance"),
           "seed_neg": (lambda: LinearRegressionTask(d, seed=-1), "seed"),
           "batch_zero": (lambda: LinearRegressionTask(d).sample(0, n), "batch"),
           "n_points_neg": (lambda: LinearRegressionTask(d).sample_inputs(b, -1), "n_points")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    task = LinearRegressionTask(d, x_dist=x_dist, seed=seed, dtype=torch.float64)
    batch = task.sample(b, n)
    assert batch.xs.shape == (b, n, d) and batch.ys.shape == (b, n) and batch.xq.shape == (b, d)
    torch.testing.assert_close(batch.ys, torch.einsum("bnd,bd->bn", batch.xs, batch.w))
    torch.testing.assert_close(batch.yq, (batch.xq * batch.w).sum(-1))
    if x_dist == "uniform":
        assert batch.xs.numel() == 0 or float(batch.xs.abs().max()) <= task.input_range / 2
    again = LinearRegressionTask(d, x_dist=x_dist, seed=seed, dtype=torch.float64).sample(b, n)
    torch.testing.assert_close(again.xs, batch.xs)


@SETTINGS
@given(d=st.integers(1, 4), b=st.integers(1, 3), t=st.integers(1, 6),
       x1=st.sampled_from(["gaussian", "sparse", "ones"]),
       kind=st.sampled_from(["none", "real_dtype", "dtype_str", "sigma_inf", "t_zero"]))
def test_autoregressive_task_follows_its_unitary_recursion(d, b, t, x1, kind):
    bad = {"real_dtype": (lambda: AutoregressiveTask(d, dtype=torch.float32), "dtype"),
           "dtype_str": (lambda: AutoregressiveTask(d, dtype="complex64"), "dtype"),
           "sigma_inf": (lambda: AutoregressiveTask(d, sigma=float("inf")), "sigma"),
           "t_zero": (lambda: AutoregressiveTask(d).sample(b, 0), "n_context")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    batch = AutoregressiveTask(d, x1=x1, seed=t, dtype=torch.complex128).sample(b, t)
    assert batch.xs.shape == (b, t, d)
    np.testing.assert_allclose(np.abs(batch.w_diag.numpy()), 1.0, atol=1e-12)
    if t > 1:
        torch.testing.assert_close(batch.xs[:, 1:], batch.w_diag[:, None] * batch.xs[:, :-1])


@SETTINGS
@given(d=st.integers(1, 4), b=st.integers(1, 3), t=st.integers(2, 5), self_attention=st.booleans(),
       kind=st.sampled_from(["none", "int_dtype", "self_attention_int", "t_one"]))
def test_token_selection_task_tokens_are_unit_vectors(d, b, t, self_attention, kind):
    bad = {"int_dtype": (lambda: TokenSelectionTask(d, dtype=torch.int32), "dtype"),
           "self_attention_int": (lambda: TokenSelectionTask(d, self_attention=1), "self_attention"),
           "t_one": (lambda: TokenSelectionTask(d).sample(b, 1), "n_context")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    batch = TokenSelectionTask(d, self_attention=self_attention, seed=t).sample(b, t)
    np.testing.assert_allclose(batch.X.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(batch.z.norm(dim=-1).numpy(), 1.0, atol=1e-12)
    assert set(batch.y.tolist()) <= {-1.0, 1.0}
    if self_attention:
        torch.testing.assert_close(batch.z, batch.X[:, 0])
    torch.testing.assert_close(batch.token_scores(), batch.y[:, None] * (batch.X @ batch.v))


# ---------------------------------------------------------------------------------------------- probes


@SETTINGS
@given(lead=st.integers(1, 3), b=st.integers(1, 3), t=st.integers(1, 4), seed=st.integers(0, 1000),
       metric=st.sampled_from(["cosine", "mse"]),
       kind=st.sampled_from(["none", "bt_mismatch", "nan_a", "eps_neg", "int_b", "metric"]))
def test_prediction_similarity_matches_numpy(lead, b, t, seed, metric, kind):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(lead, b, t, generator=g, dtype=torch.float64)
    c = torch.randn(lead, b, t, generator=g, dtype=torch.float64)
    bad = {"bt_mismatch": (lambda: prediction_similarity(a, c[..., :0] if t == 1 else c[..., :-1], metric), "a and b"),
           "nan_a": (lambda: prediction_similarity(poison(a), c, metric), "a"),
           "eps_neg": (lambda: prediction_similarity(a, c, metric, eps=-1.0), "eps"),
           "int_b": (lambda: prediction_similarity(a, c.long(), metric), "b"),
           "metric": (lambda: prediction_similarity(a, c, "l2"), "metric")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    got = prediction_similarity(a, c, metric).numpy()
    A, C = a.numpy(), c.numpy()
    if metric == "mse":
        ref = ((A - C) ** 2).mean((-1, -2))
    else:
        ref = ((A * C).sum(-1) / np.maximum(np.linalg.norm(A, axis=-1) * np.linalg.norm(C, axis=-1), 1e-12)).mean(-1)
    np.testing.assert_allclose(got, ref, atol=1e-12)


@SETTINGS
@given(layers=st.integers(1, 3), k=st.integers(1, 4), b=st.integers(1, 2), t=st.integers(1, 4),
       kind=st.sampled_from(["none", "targets_shape", "targets_nan", "ref_shape"]))
def test_similarity_matrix_and_best_match(layers, k, b, t, kind):
    g = torch.Generator().manual_seed(layers * 10 + k)
    mp = torch.randn(layers, b, t, generator=g, dtype=torch.float64)
    rp = torch.randn(k, b, t, generator=g, dtype=torch.float64)
    y = torch.randn(b, t, generator=g, dtype=torch.float64)
    bad = {"targets_shape": (lambda: similarity_matrix(mp, rp, y[:, :0] if t == 1 else y[:, :-1]), "targets"),
           "targets_nan": (lambda: similarity_matrix(mp, rp, poison(y)), "targets"),
           "ref_shape": (lambda: similarity_matrix(mp, torch.randn(k, b + 1, t, dtype=torch.float64)),
                         "reference_preds")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    s = similarity_matrix(mp, rp, y, "mse")
    ref = np.array([[(((mp[i] - y) - (rp[j] - y)).numpy() ** 2).mean() for j in range(k)] for i in range(layers)])
    np.testing.assert_allclose(s.numpy(), ref, atol=1e-12)
    idx, val = best_match(s, "mse")
    np.testing.assert_array_equal(idx.numpy(), ref.argmin(1))
    raises_naming("similarity", lambda: best_match(poison(s)))


@SETTINGS
@given(m=st.integers(3, 20), h=st.integers(1, 3), layers=st.integers(1, 2), lam=st.floats(1e-4, 1.0),
       kind=st.sampled_from(["none", "nan_hidden", "targets_shape", "predict_shape", "lam_neg", "int_targets"]))
def test_ridge_probe_matches_the_normal_equations(m, h, layers, lam, kind):
    g = torch.Generator().manual_seed(m * h)
    hidden = torch.randn(layers, m, h, generator=g, dtype=torch.float64)
    targets = torch.randn(m, generator=g, dtype=torch.float64)
    bad = {"nan_hidden": (lambda: RidgeProbe(lam).fit(poison(hidden), targets), "hidden"),
           "targets_shape": (lambda: RidgeProbe(lam).fit(hidden, targets[:-1]), "hidden"),
           "predict_shape": (lambda: RidgeProbe(lam).fit(hidden, targets).predict(hidden[..., :0] if h == 1 else
                                                                                 hidden[..., :-1]), "hidden"),
           "lam_neg": (lambda: RidgeProbe(-lam), "lam"),
           "int_targets": (lambda: RidgeProbe(lam).fit(hidden, targets.long()), "targets")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    probe = RidgeProbe(lam).fit(hidden, targets)
    pred = probe.predict(hidden)
    for li in range(layers):
        X = np.concatenate([hidden[li].numpy(), np.ones((m, 1))], 1)
        R = lam * m * np.eye(h + 1)
        R[-1, -1] = 0
        coef = np.linalg.solve(X.T @ X + R, X.T @ targets.numpy())
        np.testing.assert_allclose(pred[li].numpy(), X @ coef, atol=1e-8)


def test_ridge_probe_with_lam_zero_on_rank_deficient_hidden_names_hidden():
    hidden = torch.ones(1, 5, 2, dtype=torch.float64)  # constant features: collinear with the bias
    raises_naming("hidden", lambda: RidgeProbe(0.0).fit(hidden, torch.randn(5, dtype=torch.float64)))


@SETTINGS
@given(r=st.integers(1, 4), c=st.integers(1, 4), scale=st.floats(0.1, 5.0), seed=st.integers(0, 1000),
       kind=st.sampled_from(["none", "shape", "nan", "missing", "not_mapping"]))
def test_matrix_correlation_and_compare_weights(r, c, scale, seed, kind):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(r, c, generator=g, dtype=torch.float64)
    noise = torch.randn(r, c, generator=g, dtype=torch.float64)
    if kind == "shape":
        raises_naming("a and b", lambda: matrix_correlation(a, torch.zeros(r, c + 1)))
        raises_naming("trained['m']", lambda: compare_weights({"m": torch.zeros(r, c + 1)}, {"m": a}))
        return
    if kind == "nan":
        raises_naming("b", lambda: matrix_correlation(a, poison(a)))
        raises_naming("trained['m']", lambda: compare_weights({"m": poison(a)}, {"m": a}))
        return
    if kind == "missing":
        with pytest.raises(KeyError, match="m"):
            compare_weights({}, {"m": a})
        return
    if kind == "not_mapping":
        raises_naming("trained", lambda: compare_weights([a], {"m": a}))
        return
    A, B = a.numpy(), (scale * a + 0.1 * noise).numpy()
    ref = (A * B).sum() / (np.linalg.norm(A) * np.linalg.norm(B))
    assert matrix_correlation(a, torch.from_numpy(B)) == pytest.approx(ref, abs=1e-12)
    res = compare_weights({"m": torch.from_numpy(B)}, {"m": a})["m"]
    s = (A * B).sum() / (A * A).sum()
    assert res["scale"] == pytest.approx(s, rel=1e-10)
    assert res["relative_residual"] == pytest.approx(np.linalg.norm(B - s * A) / np.linalg.norm(B), rel=1e-8,
                                                     abs=1e-12)


@SETTINGS
@given(b=st.integers(1, 3), d=st.integers(1, 4), kind=st.sampled_from(["none", "nan", "bad_output", "detached"]))
def test_sensitivity_cosine_of_linear_predictors(b, d, kind):
    g = torch.Generator().manual_seed(b * d)
    xq = torch.randn(b, d, generator=g, dtype=torch.float64)
    w1, w2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    f1, f2 = (lambda q: q @ w1), (lambda q: q @ w2)
    bad = {"nan": (lambda: sensitivity_cosine(f1, f2, poison(xq)), "xq"),
           "bad_output": (lambda: sensitivity_cosine(lambda q: q, f2, xq), "f_a"),
           "detached": (lambda: sensitivity_cosine(f1, lambda q: (q @ w2).detach(), xq), "f_b")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    ref = float(w1 @ w2 / (w1.norm() * w2.norm()))
    assert float(sensitivity_cosine(f1, f2, xq)) == pytest.approx(ref, abs=1e-10)


# ---------------------------------------------------------------------------------------------- attention-SVM


@SETTINGS
@given(n=st.integers(1, 3), t=st.integers(2, 4), d=st.integers(1, 3),
       kind=st.sampled_from(["none", "X_dtype", "z_batch", "X_dim", "nan_X", "bad_labels", "penalty_neg",
                             "opt_float", "opt_range"]))
def test_attention_selector_and_margins(n, t, d, kind):
    task = TokenSelectionTask(d, seed=n * t * d)
    batch = task.sample(n, t)
    model = AttentionSelector(d, task.v, init_std=0.5, generator=torch.Generator().manual_seed(1))
    bad = {"X_dtype": (lambda: model(batch.X.float(), batch.z), "X"),
           "z_batch": (lambda: model(batch.X, batch.z[:0] if n == 1 else batch.z[:-1]), "z"),
           "X_dim": (lambda: model(torch.zeros(n, t, d + 1, dtype=torch.float64), batch.z), "X"),
           "nan_X": (lambda: model.attention(poison(batch.X), batch.z), "X"),
           "bad_labels": (lambda: selector_loss(model, type(batch)(batch.X, batch.z, batch.y * 2, batch.v)), "batch.y"),
           "penalty_neg": (lambda: normalized_gd(model, batch, 1, norm_penalty=-1.0), "norm_penalty"),
           "opt_float": (lambda: margin_matrices(batch.X, batch.z, torch.zeros(n)), "opt"),
           "opt_range": (lambda: margin_matrices(batch.X, batch.z, torch.full((n,), t)), "opt")}
    if kind in bad:
        fn, name = bad[kind]
        raises_naming(name, fn)
        return
    X, z, v, W = batch.X.numpy(), batch.z.numpy(), task.v.numpy(), model.W.detach().numpy()
    s = np.einsum("ntd,de,ne->nt", X, W, z)
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(model.attention(batch.X, batch.z).detach().numpy(), p, atol=1e-12)
    np.testing.assert_allclose(model(batch.X, batch.z).detach().numpy(), np.einsum("nt,ntd,d->n", p, X, v), atol=1e-12)
    opt = globally_optimal_tokens(batch)
    A = margin_matrices(batch.X, batch.z, opt)
    assert A.shape == (n * (t - 1), d, d)
    margins = svm_margins(model.W.detach(), A).numpy()
    ref = [s[i, opt[i]] - s[i, j] for i in range(n) for j in range(t) if j != opt[i]]
    np.testing.assert_allclose(margins, ref, atol=1e-10)
    assert directional_correlation(model.W.detach(), model.W.detach()) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- NaN/inf policy


def test_nan_inf_policy_is_documented_once_in_the_package_docstring():
    doc = ic.__doc__
    assert "NaN/inf policy" in doc and "contains NaN" in doc and "must be finite" in doc


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_policy_nonfinite_data_raise_valueerror_naming_the_argument(value):
    batch = LinearRegressionTask(3, seed=0).sample(2, 4)
    xs, ys, xq = batch.xs, batch.ys, batch.xq
    cases = [
        ("xs", lambda: ols(poison(xs, value), ys)),
        ("ys", lambda: ridge(xs, poison(ys, value), 0.1)),
        ("xs", lambda: gd_iterates(poison(xs, value), ys, [1], 0.1)),
        ("xq", lambda: gd_plus_plus(xs, ys, poison(xq, value), 1, 0.1, 0.0)),
        ("tokens", lambda: LinearSelfAttention(4)(poison(regression_tokens(batch), value))),
        ("batch.xs", lambda: regression_tokens(PromptBatch(poison(xs, value), ys, xq, batch.yq, batch.w))),
        ("covariance", lambda: zfb_gamma(poison(torch.eye(3), value), 4)),
        ("a", lambda: prediction_similarity(poison(ys, value)[None], ys[None])),
        ("hidden", lambda: RidgeProbe().fit(poison(torch.randn(4, 2), value), torch.randn(4))),
    ]
    for name, fn in cases:
        with pytest.raises(ValueError, match="NaN or inf") as info:
            fn()
        assert str(info.value).startswith(name), (name, str(info.value))


def test_policy_scalars_must_be_finite():
    batch = LinearRegressionTask(2, seed=0).sample(1, 3)
    for name, fn in [("lr", lambda: gradient_descent(batch.xs, batch.ys, 1, float("inf"))),
                     ("lam", lambda: ridge(batch.xs, batch.ys, float("nan"))),
                     ("sign", lambda: regression_prediction(regression_tokens(batch), sign=float("nan"))),
                     ("w_mean", lambda: LinearRegressionTask(2, w_mean=float("inf")))]:
        raises_naming(name, fn)


def test_policy_no_silent_dtype_casts():
    batch = LinearRegressionTask(2, seed=0).sample(1, 3)
    with pytest.raises(TypeError, match=r"tokens must have dtype torch.float32.*got torch.float64"):
        LinearSelfAttention(3)(regression_tokens(batch).double())
    with pytest.raises(TypeError, match=r"ys must have dtype torch.float64.*got torch.float32"):
        ols(batch.xs.double(), batch.ys)
    assert math.isfinite(float(ols(batch.xs, batch.ys).sum()))
