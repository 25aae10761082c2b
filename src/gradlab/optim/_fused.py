"""Single-pass ("fused") optimizer steps: which mechanism, when it is used, and what it costs.

``fused=True`` on :class:`~gradlab.optim.Lion`, :class:`~gradlab.optim.DiffGrad` and
:class:`~gradlab.optim.AdaGradNorm` (and :class:`~gradlab.optim.search.ProgramOptimizer`, see there) updates each
parameter tensor in one pass over memory: every input (parameter, gradient, state buffers) is read once and every
output written once, for the whole parameter group in one call.

Mechanism, chosen by measurement (``benchmarks/optim_step.py --mechanisms``: 1 thread, the benchmark's 25-layer
models of 1M and 25M float32 parameters in 50 tensors, a shared 2-core machine; step time relative to
``torch.optim.AdamW(fused=True)`` measured in the same interleaved rounds; compile = first step with a cold cache;
the numba row as measured when the mechanism was chosen, before the kernel work described below):

==============================  ===============  ===============  ===================  =====================
fused step (1M / 25M)           Lion             DiffGrad         AdaGradNorm          compile (1M / 25M)
==============================  ===============  ===============  ===================  =====================
numba kernels (chosen)          0.98x / 0.88x    1.68x / 1.96x    0.91x / 0.77x        1-3 s once per kernel
                                                                                       and dtype, any shapes
torch.compile, Inductor C++     1.37x / 0.97x    4.89x / 7.09x    1.00x / 0.73x        Lion 47 s / 39 s,
                                                                                       DiffGrad 79 s / 93 s,
                                                                                       AdaGradNorm 23 s / 26 s
                                                                                       per list of shapes
for-loop (previous default)     2.10x / 2.42x    4.77x / 6.15x    1.60x / 1.24x        --
==============================  ===============  ===============  ===================  =====================

The numba kernels (:mod:`gradlab.optim._fused_numba`) are as fast as Inductor's generated C++ or faster (3x for
diffGrad, whose sigmoid Inductor vectorises poorly), compile in seconds -- cached on disk and shared by every
model, because the kernels take arrays of tensor addresses and sizes instead of being specialised to the shapes --
where Inductor needs 20-90 s for every new list of parameter shapes, and they reproduce ATen's operation order
(explicit FMAs where ATen's kernels use them), so Lion's fused step equals the for-loop step bit for bit in
float32 and float64 (AdaGrad-Norm's update does too; its squared norms are summed in another order). A C++
extension via ``torch.utils.cpp_extension`` needs ``ninja``, which is not installed, and a build step at install
time; it was not pursued.

What limits the fused steps (the benchmark's profile section; numbers of 2026-12-02 on a 2-core AMD EPYC Zen 3
with AVX2 and a 32 MiB L3, one thread, a shared machine whose ratios move by about 0.05-0.1 between runs; the 1M
model is cache-resident, the 25M one is not):

* Lion and AdaGrad-Norm are memory-bound at 25M: every array pass costs about what it costs AdamW(fused)
  (0.1 ns per float32 entry and array), so the ratios approach the traffic ratios -- Lion 6/7 arrays (the
  finite-gradient check reads g once before the 5-array update), AdaGrad-Norm 4/7 (its norm must be complete
  before the update, so the gradient is read twice). A read-only pass over one array is latency-bound (0.22 ns
  per entry as one stream), so the finite check and the sum of squares read each tensor as four interleaved
  streams (0.11-0.15 ns), and AdaGrad-Norm's two-array update reads two interleaved halves (0.31 -> 0.27 ns).
* diffGrad moves 9 arrays to AdamW's 7 (traffic floor 1.29x) and was compute-bound: its exponential and
  divisions formed one long dependency chain per entry. Shortening that chain (see
  :mod:`gradlab.optim._fused_numba`) took its arithmetic from 1.28 to 0.90-0.92 ns per entry, so at 25M it now
  runs close to its memory time (0.93 ns per entry, 9 arrays at AdamW's rate would be 0.89).
* At 1M a fixed cost per step of Python (validation, state lookup, plan, kernel dispatch; 0.23 ms for a 50-tensor
  Lion or AdaGrad-Norm step, 0.30 ms for diffGrad with its 5 tensor lists, 0.31 ms for torch's fused AdamW) is a
  third of every step. A group whose tensors are all plain, contiguous, same-dtype CPU tensors is planned by list
  comprehensions (0.31 -> 0.24 ms for Lion), and AdaGrad-Norm's sum-of-squares kernel returns the group's
  denominator when one kernel bucket is the whole group, instead of summing the per-tensor state with tensor ops
  (0.335 -> 0.222 ms).
* Lion's finite-gradient check costs one of its 6 array passes: the same update without it
  (``Lion(..., check_finite=False)`` or ``ProgramOptimizer(lion_program(), fused=True)``, 5 arrays) runs at
  0.75x AdamW(fused) at 25M. The check stays the default; ``check_finite=False`` is for callers who guard against
  non-finite gradients themselves (a ``torch.amp.GradScaler`` skips such steps before the optimizer runs).

``benchmarks/optim_step.py`` (ratios = medians of per-round ratios, 9 rounds), x AdamW(fused) at 1M / 25M,
before -> after the changes of 2026-12-02: Lion 0.71 / 1.02 -> 0.66-0.70 / 0.93-0.96; Lion
``check_finite=False`` 0.62 / 0.80 -> 0.56-0.58 / 0.73-0.76; AdaGrad-Norm 0.74 / 0.88 -> 0.58 / 0.65-0.69;
diffGrad 1.55-1.78 / 1.44-1.62 -> 1.34-1.38 / 1.30-1.33. Targets (issue 14) not reached on this machine, and
why: Lion with its check at 25M (target 0.75; floor 6/7 = 0.86 at AdamW's bandwidth per array: the check cannot
share the update's pass, since no parameter may change before every gradient is known finite); AdaGrad-Norm at
25M (target 0.6; floor 4/7 = 0.57, the single-stream read of its norm pass is slower per array than AdamW's
7-stream pass); diffGrad (target 1.1, below its own traffic floor of 9/7 = 1.29 at 25M; at 1M its 0.90 ns of
arithmetic per entry against AdamW's 0.62 keeps it at 1.34). The "within 1.3x of its memory-traffic limit"
target is met by every fused step at 25M (0.49-0.56x: a ``copy_`` pays a write-allocate read that in-place
updates do not); at 1M AdaGrad-Norm's fixed cost (0.23 ms against a 0.36 ms copy) puts it at 1.39x. Tried and
not kept: multiplying by ``1/c2`` (superseded by folding ``c2`` into the numerator), magic-number rounding,
diffGrad's tensors as two interleaved halves (slower), eight read streams for the finite check (no gain),
reading the norm pass's tensors in reverse order so that the update finds the last-read gradients in the L3
(no gain).

On CUDA the fused path is ``torch.compile`` of the same update written in tensor ops (:func:`compiled`, Inductor
generates Triton), with every hyperparameter passed as a 0-dim tensor, so a learning-rate scheduler never
triggers a recompilation (compiles once per group signature: device, dtypes, shapes, flags). **This path is
untested here** (no GPU); the identical code path is tested on the CPU through Inductor's C++ backend
(``set_backend("cpu", "compile")``).

``capturable=True`` (CUDA graphs; torch.optim's meaning and device rule,
:func:`~gradlab.optim._foreach.capturable_device_types`) runs that tensor-op update eagerly, with the step
counters on the parameters' device and nothing read on the host: no ``.item()`` of the step (the loop and
foreach paths read it for the bias corrections), no value check of a tensor ``lr``, no finite-gradient check
(Lion requires ``check_finite=False`` with it). It is not combined with ``fused=True``: the compiled update takes
its hyperparameters as device tensors made at each call, a host-to-device copy that a capture forbids. **Tested
on the CPU only** (no GPU lent): torch's capturable device list is extended by "cpu" and every host read
(``item``, ``bool``, ``float``, ``tolist``, ``nonzero``, ...) raises during the step
(``tests/optim/test_capturable.py``); an actual ``torch.cuda.graph`` capture has not been run.
``benchmarks/cuda_checks.py`` is prepared for a GPU: capture and replay of every capturable step against the
for-loop path, and the compiled fused step under a scheduler (recompilations counted); its ``--dry-run`` runs the
same comparisons on the CPU (it found the float32 scalar-parameter promotion fixed in DiffGrad's compiled path).

Dispatch rule (:func:`resolve_impl`):

* ``fused=True``: the fused path; a ``ValueError`` saying why when it is unavailable: a parameter on a device
  other than CPU/CUDA, a CPU parameter of a dtype other than float32/float64, numba missing (the ``kernels``
  extra), or Triton missing on CUDA. ``fused=True`` with ``foreach=True`` is a ``ValueError``.
* ``fused=None`` and ``foreach=None`` (the default): the fused path when every parameter of the group is a CPU
  float32/float64 tensor and numba is installed (the fastest measured CPU path for all three optimizers, see the
  table);
  otherwise torch.optim's rule: foreach on CUDA (where no fused path was measured), the for-loop on the CPU.
* ``fused=False`` or an explicit ``foreach``: never fused.

A parameter whose tensors are not all plain contiguous tensors (a transposed or expanded gradient, a strided
view) is updated by the for-loop path inside a fused step (for Lion bit-identical anyway). The kernels bump the
autograd version counters of what they write, as ATen's in-place ops do.

Under ``torch.compile(opt.step)`` every path becomes the tensor-op update (Inductor fuses it); a 0-dim tensor
``lr`` is then used as a tensor, never read with ``.item()``, so a scheduler causes no recompilation.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from gradlab.optim._foreach import resolve_foreach

__all__ = [
    "FUSED_CPU_DTYPES", "KernelBucket", "Plan", "addresses", "backend_for", "check_finite_fused",
    "check_fused_flag", "compiled", "hyper_tensor", "kernels", "make_plan", "mark_modified", "np_scalar", "prepare_groups",
    "resolve_impl",
    "set_backend", "sizes", "subset", "weight_like",
]

FUSED_CPU_DTYPES = (torch.float32, torch.float64)
_NP = {torch.float32: np.float32, torch.float64: np.float64}
_BACKEND = {"cpu": "numba"}
_PLAIN = (Tensor, torch.nn.Parameter)  # tensor subclasses (e.g. DTensor) never reach the kernels


@functools.lru_cache(maxsize=1)
def _load_kernels() -> Any:
    try:
        return importlib.import_module("gradlab.optim._fused_numba")
    except ImportError:  # numba or llvmlite missing
        return None


def kernels() -> Any:
    """The numba kernel module; ``ImportError`` naming the ``kernels`` extra when numba is missing."""
    mod = _load_kernels()
    if mod is None:
        raise ImportError("the CPU fused optimizer steps need numba: install the 'kernels' extra "
                          "(pip install 'gradlab[kernels]')")
    return mod


def set_backend(device_type: str, backend: str) -> str:
    """Choose the fused mechanism for ``device_type`` ("cpu": ``"numba"`` (default) or ``"compile"``); returns the
    previous choice. Meant for tests and benchmarks: ``"compile"`` on the CPU runs the CUDA code path through
    Inductor's C++ backend."""
    if backend not in ("numba", "compile"):
        raise ValueError(f"backend must be 'numba' or 'compile'; got {backend!r}")
    if device_type != "cpu":
        raise ValueError(f"only the CPU backend can be chosen; got device type {device_type!r}")
    old = _BACKEND.get(device_type, "numba")
    _BACKEND[device_type] = backend
    return old


def backend_for(device: torch.device) -> str:
    """``"numba"`` or ``"compile"`` for a device that :func:`make_plan` accepted."""
    return _BACKEND.get("cpu", "numba") if device.type == "cpu" else "compile"


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton

        return bool(has_triton())
    except ImportError:  # pragma: no cover - very old torch
        return False


def check_fused_flag(fused: Any, foreach: Any) -> None:
    """``fused`` must be ``None`` or a bool, and not ``True`` together with ``foreach=True``."""
    if fused is not None and not isinstance(fused, bool):
        raise TypeError(f"fused must be None or a bool; got {type(fused).__name__}")
    if fused and foreach:
        raise ValueError("fused=True and foreach=True cannot be used together; choose one")


class KernelBucket:
    """Parameters of one (dtype, step dtype) that the CPU kernels update: their indices in the group, the data
    addresses of every tensor list (``ptrs[j]``, the same order as the lists given to :func:`make_plan`, the step
    counters last) and the element counts."""

    __slots__ = ("index", "ptrs", "sizes", "dtype", "step_dtype")

    def __init__(self, dtype: torch.dtype, step_dtype: torch.dtype, n_lists: int) -> None:
        self.dtype, self.step_dtype = dtype, step_dtype
        self.index: list[int] = []
        self.ptrs: Any = [[] for _ in range(n_lists)]
        self.sizes: Any = []

    def one(self, value: float) -> Any:
        """``value`` in the bucket's dtype."""
        return _NP[self.dtype](value)

    def step_one(self) -> Any:
        return _NP[self.step_dtype](1.0)


class Plan:
    """How a fused step updates one param group: ``kernel`` buckets (CPU, numba) and ``rest``, the indices of the
    parameters updated otherwise (the loop path on the CPU, the compiled path on CUDA); ``unsupported`` says why
    ``fused=True`` is impossible (``None`` when it is possible), ``auto`` whether ``fused=None`` picks it."""

    __slots__ = ("kernel", "rest", "unsupported", "auto")

    def __init__(self) -> None:
        self.kernel: dict[tuple[torch.dtype, torch.dtype], KernelBucket] = {}
        self.rest: list[int] = []
        self.unsupported: str | None = None
        self.auto = False


def _uniform_plan(tensorlists: Sequence[Sequence[Tensor]], steps: Sequence[Tensor],
                  scalars: Sequence[int]) -> Plan | None:
    """:func:`make_plan` for the common group -- every tensor a plain, contiguous CPU tensor of one float32/float64
    dtype, every step counter a one-element CPU tensor of one dtype, each tensor as long as its parameter -- in
    one list comprehension per list and property instead of a Python loop over the parameters (a third less
    time: 0.22 vs 0.34 ms for 50 tensors, measured under load); ``None`` when the group is not uniform."""
    params = tensorlists[0]
    dt = params[0].dtype
    sdt = steps[0].dtype
    if dt not in _NP or sdt not in _NP:
        return None
    if not all([type(p) in _PLAIN and p.is_cpu for p in params]):
        return None
    for lst in tensorlists:
        if not all([type(t) in _PLAIN and t.dtype is dt and t.is_contiguous() for t in lst]):
            return None
    if not all([type(st) in _PLAIN and st.dtype is sdt and st.is_cpu for st in steps]):
        return None
    numels = [p.numel() for p in params]
    ones = [1] * len(params)
    for j, lst in enumerate(tensorlists[1:], start=1):
        if [t.numel() for t in lst] != (ones if j in scalars else numels):
            return None
    if [st.numel() for st in steps] != ones:
        return None
    plan = Plan()
    bucket = plan.kernel[(dt, sdt)] = KernelBucket(dt, sdt, len(tensorlists) + 1)
    bucket.index = list(range(len(params)))
    bucket.ptrs = [np.array([t.data_ptr() for t in lst], dtype=np.int64) for lst in (*tensorlists, steps)]
    bucket.sizes = np.array(numels, dtype=np.int64)
    if _load_kernels() is None:
        plan.unsupported = "the CPU fused kernels need numba, which is not installed (the 'kernels' extra)"
    plan.auto = plan.unsupported is None
    return plan


def make_plan(tensorlists: Sequence[Sequence[Tensor]], steps: Sequence[Tensor], scalars: Sequence[int] = ()) -> Plan:
    """One pass over a group's tensors (``tensorlists[0]`` the parameters, then the gradients and state buffers,
    ``steps`` the step counters): which parameters the CPU kernels can update -- every tensor a plain, contiguous
    tensor of the parameter's float32/float64 dtype and element count (one element for the lists whose indices
    are in ``scalars``, e.g. AdaGrad-Norm's per-tensor sums), the step a one-element CPU tensor -- and their
    addresses. The kernels write through raw addresses, so this check is what keeps them in bounds."""
    if tensorlists[0] and _BACKEND.get("cpu", "numba") == "numba":
        uniform = _uniform_plan(tensorlists, steps, scalars)
        if uniform is not None:
            return uniform
    plan = Plan()
    numba_cpu = _BACKEND.get("cpu", "numba") == "numba"
    all_cpu = True
    n_lists = len(tensorlists) + 1
    params = tensorlists[0]
    others = tensorlists[1:]
    lengths = [(1 if j in scalars else None) for j in range(1, len(tensorlists))]
    for i, p in enumerate(params):  # attribute reads only (``p.device`` would build a device object: ~1 us)
        dt = p.dtype
        if p.is_cpu and numba_cpu:
            if dt not in _NP:
                if plan.unsupported is None:
                    plan.unsupported = (f"parameter {i} has dtype {dt}; the CPU fused kernels support float32 and "
                                        "float64 (use foreach=True for other dtypes)")
                all_cpu = False
                plan.rest.append(i)
                continue
            st = steps[i]
            sdt = st.dtype
            plain = type(p) in _PLAIN
            numel = p.numel()
            if (plain and sdt in _NP and st.is_cpu and st.numel() == 1 and p.is_contiguous()
                    and all(o[i].dtype is dt and o[i].is_contiguous() and type(o[i]) in _PLAIN
                            and o[i].numel() == (numel if length is None else length)
                            for o, length in zip(others, lengths))):
                bucket = plan.kernel.get((dt, sdt))
                if bucket is None:
                    bucket = plan.kernel[(dt, sdt)] = KernelBucket(dt, sdt, n_lists)
                bucket.index.append(i)
                ptrs = bucket.ptrs
                ptrs[0].append(p.data_ptr())
                for j, o in enumerate(others, start=1):
                    ptrs[j].append(o[i].data_ptr())
                ptrs[-1].append(st.data_ptr())
                bucket.sizes.append(numel)
            else:
                plan.rest.append(i)
            all_cpu = all_cpu and plain
        else:
            all_cpu = False
            plan.rest.append(i)
            if p.is_cuda:
                if plan.unsupported is None and not _has_triton():
                    plan.unsupported = "the CUDA fused path is torch.compile (Triton), and Triton is not installed"
            elif not p.is_cpu and plan.unsupported is None:
                plan.unsupported = f"parameter {i} is on device {p.device}; fused steps exist for CPU and CUDA"
    if plan.kernel and _load_kernels() is None:
        plan.unsupported = "the CPU fused kernels need numba, which is not installed (the 'kernels' extra)"
    for bucket in plan.kernel.values():
        bucket.ptrs = [np.array(x, dtype=np.int64) for x in bucket.ptrs]
        bucket.sizes = np.array(bucket.sizes, dtype=np.int64)
    plan.auto = all_cpu and bool(params) and plan.unsupported is None
    return plan


def resolve_impl(optimizer_name: str, group_index: int, group: dict[str, Any], tensorlists: Sequence[Sequence[Tensor]],
                 steps: Sequence[Tensor], compiling: bool | None = None,
                 scalars: Sequence[int] = ()) -> tuple[str, Plan | None]:
    """The path for one group and, for the fused path, its :class:`Plan`: ``"traceable"`` (under
    ``torch.compile``; ``compiling=None`` asks :func:`torch.compiler.is_compiling`), ``"capturable"`` (the same
    tensor-op update, run eagerly, for ``capturable=True``), ``"fused"``, ``"foreach"`` or ``"loop"`` (the rule is
    in the module docstring). Raises ``ValueError`` for ``fused=True`` where it is
    unavailable, before anything changes."""
    fused, foreach = group.get("fused"), group.get("foreach")
    params = tensorlists[0]
    if torch.compiler.is_compiling() if compiling is None else compiling:
        return "traceable", None
    if group.get("capturable"):
        return "capturable", None
    if fused or (fused is None and foreach is None and params):
        plan = make_plan(tensorlists, steps, scalars)
        if fused:
            if plan.unsupported is not None:
                raise ValueError(f"{optimizer_name}: fused=True cannot be used for param group {group_index}: "
                                 f"{plan.unsupported}")
            return "fused", plan
        if plan.auto:
            return "fused", plan
    return ("foreach" if resolve_foreach(foreach, params) else "loop"), None


@torch.compiler.disable
def prepare_groups(optimizer: Any, name: str, compiling: bool,
                   check_finite: bool | Callable[[dict[str, Any]], bool] = False) -> list[tuple]:
    """Validate every group, create missing state, choose each group's path and (``check_finite``: a bool, or a
    function of the group saying whether to check it) refuse non-finite gradients -- everything that must happen
    before any parameter changes -- as
    ``[(group, tensors, impl, plan), ...]`` with ``tensors = optimizer._prepare_group(group)`` (the step counters
    last). An optimizer whose ``_prepare_group`` returns lists of one-element tensors (one per parameter, e.g.
    AdaGrad-Norm's sums) names their indices in a class attribute ``_FUSED_SCALAR_LISTS``: :func:`make_plan`
    checks every other list's tensors to be as long as their parameters. Never traced by ``torch.compile`` (``compiling`` comes from the caller's frame): under
    ``torch.compile(opt.step)`` only the update is compiled, and validation adds no guards."""
    from gradlab.optim._foreach import check_capturable_group, check_finite_grads

    prepared = []
    for gi, group in enumerate(optimizer._checked_groups()):
        tensors = optimizer._prepare_group(group)
        n = len(tensors) - 1
        if group.get("capturable") and not compiling:
            check_capturable_group(name, gi, group, tensors[0], tensors[n])
        impl, plan = resolve_impl(name, gi, group, tensors[:n], tensors[n], compiling=compiling,
                                  scalars=getattr(optimizer, "_FUSED_SCALAR_LISTS", ()))
        prepared.append((group, tensors, impl, plan))
    if check_finite:
        for gi, (group, tensors, _, plan) in enumerate(prepared):
            if callable(check_finite) and not check_finite(group):
                continue
            if plan is not None:
                check_finite_fused(name, gi, tensors[1], plan)
            else:
                check_finite_grads(name, gi, tensors[1])
    return prepared


def mark_modified(*tensorlists: Sequence[Tensor]) -> None:
    """Bump the autograd version counters of tensors a kernel wrote through their addresses, as an ATen in-place
    op would: autograd then still refuses a backward through a graph that saved a parameter updated since."""
    from torch.autograd.graph import increment_version

    increment_version([t for tl in tensorlists for t in tl])


def subset(tensorlists: Sequence[Sequence[Tensor]], index: Sequence[int]) -> list[list[Tensor]]:
    """``[[tl[i] for i in index] for tl in tensorlists]``."""
    return [[tl[i] for i in index] for tl in tensorlists]


def addresses(tensors: Sequence[Tensor]) -> np.ndarray:
    """The data addresses of ``tensors`` (int64), for the kernels."""
    return np.fromiter((t.data_ptr() for t in tensors), dtype=np.int64, count=len(tensors))


def sizes(tensors: Sequence[Tensor]) -> np.ndarray:
    """The element counts of ``tensors`` (int64)."""
    return np.fromiter((t.numel() for t in tensors), dtype=np.int64, count=len(tensors))


def np_scalar(value: float, dtype: torch.dtype) -> Any:
    """``value`` rounded to ``dtype`` as a numpy scalar (the rounding ATen applies to a Python scalar argument)."""
    return _NP[dtype](value)


def hyper_tensor(value: Any, device: torch.device) -> Tensor:
    """A hyperparameter as a 0-dim float64 tensor on ``device`` (a tensor ``lr`` is moved, never read)."""
    if isinstance(value, Tensor):
        return value.detach().to(device=device, dtype=torch.float64)
    return torch.tensor(float(value), dtype=torch.float64, device=device)


@functools.lru_cache(maxsize=None)
def compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``torch.compile(fn, fullgraph=True)``, created once per function (Dynamo caches one graph per signature)."""
    return torch.compile(fn, fullgraph=True)


def weight_like(weight: Any, like: Tensor) -> Any:
    """A lerp weight (or another hyperparameter multiplying ``like`` out of place) usable with ``like``: a float
    stays a float, a tensor gets ``like``'s dtype and device (a 0-dim float64 tensor times a 0-dim float32 one
    would be float64)."""
    if isinstance(weight, Tensor):
        return weight.to(device=like.device, dtype=like.dtype)
    return weight


def check_finite_fused(optimizer_name: str, group_index: int, grads: Sequence[Tensor], plan: Plan) -> None:
    """:func:`~gradlab.optim._foreach.check_finite_grads` for the fused path: the kernel buckets' gradients are
    checked by one numba read each (``sum(g * 0)`` is NaN exactly when an entry is not finite), the others by the
    foreach norm; the error (naming the first bad parameter) comes from the reference check."""
    from gradlab.optim._foreach import check_finite_grads

    for bucket in plan.kernel.values():
        if kernels().first_nonfinite(bucket.ptrs[1], bucket.sizes, bucket.one(1.0)) >= 0:
            check_finite_grads(optimizer_name, group_index, grads)
            raise AssertionError("unreachable: the kernel and the reference check disagree")  # pragma: no cover
    if plan.rest:
        try:
            check_finite_grads(optimizer_name, group_index, [grads[i] for i in plan.rest])
        except FloatingPointError:  # name the parameter by its index in the whole group
            check_finite_grads(optimizer_name, group_index, grads)
            raise
