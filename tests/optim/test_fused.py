"""The fused (single-pass) optimizer steps: the dispatch rule, clear errors, the kernels' contract (layouts that fall
back), the compiled (CUDA) code path run through Inductor's C++ backend, and no recompilation under a scheduler.

The fused == foreach == for-loop matrix and the state_dict interchange are in test_optim_matrix.py.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from gradlab.optim import AdaGradNorm, DiffGrad, Lion, _fused
from gradlab.optim._foreach import NonFiniteGradientError

OPTIMIZERS = [Lion, DiffGrad, AdaGradNorm]
# fixed from the kernels' design (see test_optim_matrix.FUSED_RTOL): Lion bit for bit, the others a few ulps
RTOL64 = {Lion: 0.0, DiffGrad: 1e-13, AdaGradNorm: 1e-13}


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float) -> bool:
    return torch.equal(a, b) if rtol == 0 else torch.allclose(a, b, rtol=rtol, atol=rtol * 1e-3)


def _run(cls, params, steps=4, seed=0, grads=None, **kw):
    opt = cls(params, **kw)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype) if grads is None else grads(p, gen)
        opt.step()
    return opt


# --------------------------------------------------------------------------------------------- dispatch rule
@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_fused_none_picks_the_kernels_for_cpu_float_and_follows_torch_otherwise(cls):
    def impl(params, **flags):
        opt = cls(params, **flags)
        for p in params:
            p.grad = torch.ones_like(p)
        tensors = opt._prepare_group(opt.param_groups[0])
        n = len(tensors) - 1
        return _fused.resolve_impl(cls.__name__, 0, opt.param_groups[0], tensors[:n], tensors[n])[0]

    f32 = [nn.Parameter(torch.zeros(3)), nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))]
    assert impl(f32) == "fused"
    assert impl(f32, fused=True) == "fused"
    assert impl(f32, fused=False) == "loop" and impl(f32, foreach=False) == "loop"
    assert impl(f32, foreach=True) == "foreach"
    assert impl([nn.Parameter(torch.zeros(3, dtype=torch.bfloat16))]) == "loop"  # no CPU kernel: torch's rule


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_fused_true_where_unavailable_raises_valueerror_saying_why_before_anything_changes(cls):
    bf = nn.Parameter(torch.randn(4, dtype=torch.bfloat16))
    good = nn.Parameter(torch.randn(4))
    opt = cls([{"params": [good]}, {"params": [bf]}], fused=True)
    good.grad, bf.grad = torch.ones(4), torch.ones(4, dtype=torch.bfloat16)
    before = good.detach().clone()
    with pytest.raises(ValueError, match=r"fused=True cannot be used for param group 1: parameter 0 has dtype "
                                         r"torch.bfloat16.*float32 and float64"):
        opt.step()
    assert torch.equal(good.detach(), before)
    meta = nn.Parameter(torch.empty(3, device="meta"))
    meta.grad = torch.empty(3, device="meta")
    with pytest.raises(ValueError, match="device meta"):
        cls([meta], fused=True).step()
    with pytest.raises(ValueError, match="fused=True and foreach=True"):
        cls([good], fused=True, foreach=True)
    with pytest.raises(TypeError, match="fused"):
        cls([good], fused="yes")


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_without_numba_fused_true_says_so_and_fused_none_falls_back(cls, monkeypatch):
    monkeypatch.setattr(_fused, "_load_kernels", lambda: None)
    p = nn.Parameter(torch.randn(5))
    p.grad = torch.ones(5)
    with pytest.raises(ValueError, match="numba"):
        cls([p], fused=True).step()
    q = nn.Parameter(p.detach().clone())
    ref = nn.Parameter(p.detach().clone())
    q.grad, ref.grad = torch.ones(5), torch.ones(5)
    cls([q]).step()  # fused=None: the for-loop path, silently
    cls([ref], foreach=False).step()
    assert torch.equal(q, ref)


# --------------------------------------------------------------------------------------------- kernel contract
def _noncontiguous_grad(p, gen):
    if p.dim() == 2:  # transposed
        return torch.randn(tuple(reversed(p.shape)), generator=gen, dtype=p.dtype).t()
    return torch.randn(1, generator=gen, dtype=p.dtype).expand(p.shape)  # stride 0: one element in memory


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_noncontiguous_gradients_and_params_take_the_loop_path_inside_a_fused_step(cls):
    """The kernels write through raw addresses: a transposed or expanded (stride-0) gradient, or a strided
    parameter, must not reach them; such parameters are updated by the loop path in the same step."""
    torch.manual_seed(0)
    base = torch.randn(6, 8, dtype=torch.float64)
    make = lambda: [nn.Parameter(base[:, :4].clone().t()), nn.Parameter(torch.ones(5, dtype=torch.float64)),  # noqa
                    nn.Parameter(base[:, 4:].clone())]
    a, b = make(), make()
    assert not a[0].is_contiguous()
    kw = {"lr": 0.1} if cls is AdaGradNorm else {"lr": 0.01}
    oa = _run(cls, a, grads=_noncontiguous_grad, fused=True, **kw)
    ob = _run(cls, b, grads=_noncontiguous_grad, foreach=False, **kw)
    for x, y in zip(a, b):
        assert _close(x.detach(), y.detach(), RTOL64[cls])
    assert all(int(oa.state[p]["step"]) == 4 for p in a)
    assert ob is not oa


@pytest.mark.parametrize("uniform", [True, False])
def test_plan_never_hands_the_kernels_a_state_tensor_of_the_wrong_length(uniform):
    """A state buffer shorter than its parameter (set by hand) must not reach the kernels, which would write past
    its end: the plan leaves that parameter to the tensor-op path (here a shape error from torch), in both the
    uniform-group fast path and the general per-parameter plan (a float64 parameter makes the group mixed)."""
    params = [nn.Parameter(torch.randn(64)) for _ in range(3)]
    if not uniform:
        params.append(nn.Parameter(torch.randn(4, dtype=torch.float64)))
    for p in params:
        p.grad = torch.ones_like(p)
    opt = Lion(params, lr=0.1, fused=True)
    opt.step()
    opt.state[params[1]]["exp_avg"] = torch.zeros(8)
    tensors = opt._prepare_group(opt.param_groups[0])
    plan = _fused.make_plan(tensors[:3], tensors[3])
    kernel_params = sorted(i for b in plan.kernel.values() for i in b.index)
    assert 1 not in kernel_params and 1 in plan.rest
    assert kernel_params == ([0, 2] if uniform else [0, 2, 3])
    with pytest.raises(RuntimeError):
        opt.step()


def test_adagradnorm_sums_are_one_element_lists_for_the_plan():
    params = [nn.Parameter(torch.randn(16)) for _ in range(2)]
    for p in params:
        p.grad = torch.ones_like(p)
    opt = AdaGradNorm(params, lr=0.1, fused=True)
    opt.step()
    tensors = opt._prepare_group(opt.param_groups[0])
    plan = _fused.make_plan(tensors[:3], tensors[3], scalars=(2,))
    assert [i for b in plan.kernel.values() for i in b.index] == [0, 1] and not plan.rest
    assert _fused.make_plan(tensors[:3], tensors[3]).rest == [0, 1]  # without the declaration: never the kernels



@pytest.mark.parametrize("case", ["one bucket", "a parameter without gradient", "two dtypes", "strided rest"])
def test_adagradnorm_fused_denominator_is_sqrt_of_every_squared_norm_plus_eps(case):
    """b^2 = initial + every squared gradient norm of the group, by whichever route the fused step takes: from the
    kernel when one bucket is the whole group, from the state sums otherwise (a parameter with state but no
    gradient this step, float32 and float64 parameters, a strided parameter updated by the loop path)."""
    dtypes = [torch.float64, torch.float32] if case == "two dtypes" else [torch.float64, torch.float64]
    params = [nn.Parameter(torch.randn(33, dtype=dtypes[0])), nn.Parameter(torch.randn(4, 5, dtype=dtypes[1]))]
    if case == "strided rest":
        params[1] = nn.Parameter(torch.randn(5, 4, dtype=dtypes[1]).t())
    grads = [[torch.randn(p.shape, dtype=p.dtype) for p in params] for _ in range(3)]
    if case == "a parameter without gradient":
        grads[2][1] = None
    opt = AdaGradNorm(params, lr=0.1, initial_accumulator_value=0.25, eps=1e-3, fused=True)
    b2 = 0.25
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g
        before = [p.detach().clone() for p in params]
        b2 += sum(float(g.double().square().sum()) for g in step_grads if g is not None)
        opt.step()
        denom = b2 ** 0.5 + 1e-3
        for p, g, old in zip(params, step_grads, before):
            expected = old if g is None else old - 0.1 * g / denom
            rtol = 1e-12 if torch.float32 not in dtypes else 1e-6  # a float32 sum enters every parameter's b
            torch.testing.assert_close(p.detach(), expected, rtol=rtol, atol=rtol)
    assert float(opt.accumulator()) == pytest.approx(b2, rel=1e-6)

@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_fused_step_bumps_version_counters_so_autograd_still_detects_stale_graphs(cls):
    """The kernels write through raw addresses; like an ATen in-place op, the fused step must make autograd refuse
    a backward through a graph that saved the parameter before the update."""
    for flags in ({"foreach": False}, {"fused": True}):
        w = nn.Parameter(torch.randn(4))
        opt = cls([w], lr=0.1, **flags)
        y = (w * w).sum()  # saves w for backward
        w.grad = torch.ones(4)
        version = w._version
        opt.step()
        assert w._version > version and opt.state[w]["step"]._version > 0
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            y.backward()


# --------------------------------------------------------------------------------------------- recompilation
def test_numba_kernels_compile_once_per_dtype_not_per_step_or_shape():
    k = _fused.kernels()
    p = nn.Parameter(torch.randn(7, 3))
    opt = Lion([p], lr=torch.tensor(0.01), fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
    p.grad = torch.randn(7, 3)
    opt.step()
    before = (len(k.lion_step.signatures), len(k.first_nonfinite.signatures))
    for i in range(100):
        p.grad = torch.randn(7, 3)
        opt.step()
        sched.step()
        if i == 50:  # another model, same dtype: the same compiled kernels
            q = nn.Parameter(torch.randn(11))
            q.grad = torch.randn(11)
            Lion([q], lr=0.5, betas=(0.5, 0.7), weight_decay=0.1, maximize=True, fused=True).step()
    assert (len(k.lion_step.signatures), len(k.first_nonfinite.signatures)) == before


@pytest.fixture()
def compiled_cpu_backend(monkeypatch):
    """The CUDA fused code path (torch.compile of the tensor-op update, hyperparameters as 0-dim tensors) run on
    the CPU through Inductor's C++ backend (the compiled graphs stay cached for the process); the numba kernels
    must not be touched."""
    monkeypatch.setattr(_fused, "kernels", lambda: pytest.fail("the numba kernels ran on the compile backend"))
    old = _fused.set_backend("cpu", "compile")
    yield
    _fused.set_backend("cpu", old)


def _tiny_model(dtype=torch.float64):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).to(dtype)


@pytest.mark.parametrize("cls", [Lion, AdaGradNorm])
def test_compiled_fused_path_matches_forloop_and_never_recompiles_over_100_scheduled_steps(cls, compiled_cpu_backend):
    from torch._dynamo.utils import counters

    kw = {"lr": 0.05, "weight_decay": 0.1} if cls is Lion else {"lr": 0.3, "weight_decay": 0.1}
    m1, m2 = _tiny_model(), _tiny_model()
    o1, o2 = cls(m1.parameters(), fused=True, **kw), cls(m2.parameters(), foreach=False, **kw)
    s1, s2 = (torch.optim.lr_scheduler.ExponentialLR(o, 0.97) for o in (o1, o2))
    gen = torch.Generator().manual_seed(0)
    counters.clear()
    for step in range(100):
        for a, b in zip(m1.parameters(), m2.parameters()):
            a.grad = torch.randn(a.shape, generator=gen, dtype=a.dtype)
            b.grad = a.grad.clone()
        o1.step()
        o2.step()
        s1.step()
        s2.step()
        if step == 0:
            graphs_after_first = counters["stats"]["unique_graphs"]
    assert graphs_after_first <= 1, "the first step compiles one graph (none if another test compiled it)"
    assert counters["stats"]["unique_graphs"] == graphs_after_first, "a scheduled lr must not recompile"
    assert o1.param_groups[0]["lr"] != kw["lr"]
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)  # Inductor's own rounding


def test_compiled_fused_diffgrad_matches_forloop(compiled_cpu_backend):
    m1, m2 = _tiny_model(), _tiny_model()
    kw = {"lr": 0.05, "weight_decay": 0.1, "betas": (0.8, 0.9)}
    o1, o2 = DiffGrad(m1.parameters(), fused=True, **kw), DiffGrad(m2.parameters(), foreach=False, **kw)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        for a, b in zip(m1.parameters(), m2.parameters()):
            a.grad = torch.randn(a.shape, generator=gen, dtype=a.dtype)
            b.grad = a.grad.clone()
        o1.step()
        o2.step()
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(o1.state[m1[0].weight]["prev_grad"], o2.state[m2[0].weight]["prev_grad"])


@pytest.mark.parametrize("cls", OPTIMIZERS)
def test_compiled_fused_path_keeps_float32_scalar_parameters_float32(cls, compiled_cpu_backend):
    """Hyperparameters reach the compiled update as float64 0-dim tensors: with a 0-dim float32 parameter, an
    out-of-place product with one is float64 (found by ``benchmarks/cuda_checks.py --dry-run`` for DiffGrad's L2
    term); the step must stay in the parameter's dtype and match the for-loop path."""
    kw = {"lr": 0.05, "weight_decay": 0.1}
    runs = []
    for flags in ({"fused": True}, {"foreach": False}):
        params = [nn.Parameter(torch.tensor(0.7)), nn.Parameter(torch.linspace(-1, 1, 5))]
        opt = cls(params, **flags, **kw)
        gen = torch.Generator().manual_seed(0)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        runs.append(params)
    for a, b in zip(*runs):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------- properties
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cls=st.sampled_from(OPTIMIZERS), n=st.integers(0, 40), steps=st.integers(1, 4),
       dtype=st.sampled_from([torch.float32, torch.float64]), maximize=st.booleans(),
       wd=st.sampled_from([0.0, 0.1]), decoupled=st.booleans(), scale=st.sampled_from([1e-3, 1.0, 1e3]),
       beta1=st.sampled_from([0.9, 0.3]), seed=st.integers(0, 2**16))
def test_property_fused_equals_forloop_on_random_problems(cls, n, steps, dtype, maximize, wd, decoupled, scale, beta1,
                                                          seed):
    """Random sizes, dtypes, flags and scales; ``beta1`` 0.9 or 0.3 takes both branches of ATen's lerp formula
    (weight 1 - beta1 below or above 0.5), which the kernels compile as separate loops."""
    gen = torch.Generator().manual_seed(seed)
    init = [torch.randn(n, generator=gen, dtype=dtype), torch.randn(3, 2, generator=gen, dtype=dtype)]
    kw = {"lr": 0.01, "maximize": maximize, "weight_decay": wd}
    if cls is not AdaGradNorm:
        kw["betas"] = (beta1, 0.99)
    if cls is not Lion:
        kw["decoupled_weight_decay"] = decoupled
    ends = []
    for flags in ({"foreach": False}, {"fused": True}):
        params = [nn.Parameter(t.clone()) for t in init]
        _run(cls, params, steps=steps, seed=seed, grads=lambda p, g: scale * torch.randn(
            p.shape, generator=g, dtype=p.dtype), **flags, **kw)
        ends.append(params)
    rtol = RTOL64[cls] if dtype == torch.float64 else (0.0 if cls is Lion else 1e-5)
    for a, b in zip(*ends):
        assert _close(b.detach(), a.detach(), rtol), (a, b)


@settings(max_examples=20, deadline=None)
@given(bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]), where=st.integers(0, 102),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_property_fused_lion_finds_any_nonfinite_gradient_entry(bad, where, dtype):
    """The fused finiteness check (one read, no arithmetic on the values) catches every position and kind (103
    entries: each of the four interleaved read streams and the remainder)."""
    a, b = nn.Parameter(torch.randn(7, dtype=dtype)), nn.Parameter(torch.randn(103, dtype=dtype))
    opt = Lion([a, b], lr=0.1, fused=True)
    a.grad, b.grad = torch.ones(7, dtype=dtype), torch.ones(103, dtype=dtype)
    b.grad[where] = bad
    before = [a.detach().clone(), b.detach().clone()]
    with pytest.raises(NonFiniteGradientError, match="parameter 1 in param group 0"):
        opt.step()
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])


def test_sigmoid_of_the_kernels_is_within_1_5_ulp_like_torch_sigmoid():
    """diffGrad's friction coefficient: the kernels' vectorisable sigmoid against a long-double reference (x >= 0).
    ``1 / (1 + e)`` rounds twice, so neither it nor ``torch.sigmoid`` is correctly rounded: both stay within
    1.5 ulp."""
    from numba import njit

    k = _fused.kernels()

    @njit
    def sig(out, x, one, consts):
        for i in range(x.shape[0]):
            out[i] = k._sigmoid_nonneg(x[i], one, consts)

    rng = np.random.default_rng(0)
    x64 = np.concatenate([rng.uniform(0, 45, 20000), rng.uniform(0, 1e-3, 1000), [0.0, 1e-30, 17.0, 40.0, 1e30]])
    for dt in (np.float64, np.float32):
        x = x64.astype(dt)
        out = np.empty_like(x)
        sig(out, x, dt(1), k.sigmoid_constants(dt))
        ref = 1 / (1 + np.exp(-x.astype(np.longdouble)))
        for name, got in (("kernel", out), ("torch", torch.sigmoid(torch.from_numpy(x)).numpy())):
            ulps = np.abs(got.astype(np.longdouble) - ref) / np.spacing(got).astype(np.longdouble)
            assert float(ulps.max()) <= 1.5, (name, dt, float(ulps.max()))
    special = np.array([np.inf, np.nan], dtype=np.float64)
    out = np.empty_like(special)
    sig(out, special, 1.0, k.sigmoid_constants(np.float64))
    assert out[0] == 1.0 and np.isnan(out[1])


def test_fused_steps_survive_deepcopy_and_pickle_of_the_optimizer():
    import pickle

    p = nn.Parameter(torch.randn(5))
    opt = _run(Lion, [p], fused=True, lr=0.1)
    clone = copy.deepcopy(opt)
    assert clone.param_groups[0]["fused"] is True
    restored = pickle.loads(pickle.dumps(opt))
    restored.param_groups[0]["params"][0].grad = torch.ones(5)
    restored.step()
    old = copy.deepcopy(opt.state_dict())
    for g in old["param_groups"]:
        del g["fused"]  # a state saved before the fused flag existed
    o2 = Lion([p], lr=0.1)
    o2.load_state_dict(old)
    assert o2.param_groups[0]["fused"] is None


def test_estrin_polynomial_of_the_kernels_equals_horner_in_python_and_jitted():
    """The exponential's polynomial (Estrin's scheme, unrolled per dtype in jitted code) against Horner's rule."""
    import math

    from numba import njit

    k = _fused.kernels()
    poly = njit(lambda t, consts: k._exp_poly(t, t * t, (t * t) * (t * t), consts))
    for dt in (np.float64, np.float32):
        consts = k.sigmoid_constants(dt)
        for t in np.linspace(-math.log(2) / 2, math.log(2) / 2, 9):
            horner = 0.0
            for c in reversed([float(c) for c in consts[3:]]):
                horner = horner * float(t) + c
            py = k._exp_poly(float(t), float(t) ** 2, float(t) ** 4, [float(c) for c in consts])
            jit = float(poly(dt(t), consts))
            assert py == pytest.approx(horner, rel=1e-14)
            assert jit == pytest.approx(horner, rel=1e-15 if dt is np.float64 else 1e-6)
