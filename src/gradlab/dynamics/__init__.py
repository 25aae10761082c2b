"""Training-dynamics laboratories: XOR-cluster grokking, NTK permutation ensembles, abc-parametrisations (muP).

Every public name of the submodules is importable from here, e.g.
``from gradlab.dynamics import abc_param_groups, coord_check, MLP``.

Input validation and the NaN/inf policy (one layer, ``gradlab.dynamics._validation``, used by every public entry
point before it trains, re-initialises or computes anything):

* Shapes and dtypes are checked up front. A mismatch raises ``ValueError`` (shape) or ``TypeError`` (type or
  dtype) naming the argument, the expected and the received shape/dtype: inputs with the wrong number of
  features, float64 inputs into a float32 model (no silent casts), labels of another length than the scores,
  non-integer permutations or token ids, ``y`` with another number of rows than ``x``.
* Data tensors (``x``, ``y``, train/test inputs and labels, kernel inputs, GP means/variances, member outputs,
  cluster means) must be finite: NaN or inf raises ``ValueError("<arg> contains NaN or inf")`` naming the
  argument, instead of a linear-algebra error or a silently NaN result. Scalars (``lr``, ``threshold``,
  ``diverge_factor``, abc exponents, ...) must be finite too. A singular kernel matrix (repeated training inputs)
  is a ``ValueError``, not a ``LinAlgError``.
* Training that diverges on finite input is reported, not hidden: ``train_xor_gd`` and ``fit_ensemble`` raise
  ``FloatingPointError`` naming ``lr``; ``lr_transfer_sweep`` records a diverged run as ``inf`` (its documented
  result). Model parameters are otherwise not checked. Inside ``torch.func`` transforms (``vmap``, ``jacrev``)
  the data-dependent checks are skipped; the entry point that applies the transform checks its inputs.
"""

from gradlab.dynamics.coord_check import (
    CoordCheckResult,
    LrSweepResult,
    coord_check,
    fit_width_slope,
    lr_transfer_sweep,
)
from gradlab.dynamics.parametrization import (
    PRESETS,
    ROLES,
    AbcParametrization,
    ParamInfo,
    abc_param_groups,
    abc_preset,
    lr_multiplier,
    param_infos,
)
from gradlab.dynamics.permutations import (
    TwoLayerNTKEnsemble,
    TwoLayerNTKNet,
    augment_bias,
    binary_inputs,
    empirical_ntk,
    exact_recovery_probability,
    exact_recovery_rate,
    fit_ensemble,
    ntk_gp_posterior,
    ntk_regression,
    permutation_ensemble_complexity,
    permute_bits,
    relu_nngp,
    relu_ntk,
    required_ensemble_size,
    round_outputs,
)
from gradlab.dynamics.width_models import MLP, TinyTransformer
from gradlab.dynamics.xor_cluster import (
    GDHistory,
    XORClusterBatch,
    XORClusterTask,
    XORTwoLayerReLU,
    accuracy,
    train_xor_gd,
)

__all__ = [
    # abc-parametrisations (muP) and the coordinate check
    "AbcParametrization", "PRESETS", "ROLES", "ParamInfo", "abc_param_groups", "abc_preset", "lr_multiplier",
    "param_infos", "CoordCheckResult", "LrSweepResult", "coord_check", "fit_width_slope", "lr_transfer_sweep",
    "MLP", "TinyTransformer",
    # NTK permutation ensembles
    "TwoLayerNTKEnsemble", "TwoLayerNTKNet", "augment_bias", "binary_inputs", "empirical_ntk",
    "exact_recovery_probability", "exact_recovery_rate", "fit_ensemble", "ntk_gp_posterior", "ntk_regression",
    "permutation_ensemble_complexity", "permute_bits", "relu_nngp", "relu_ntk", "required_ensemble_size",
    "round_outputs",
    # XOR-cluster grokking
    "GDHistory", "XORClusterBatch", "XORClusterTask", "XORTwoLayerReLU", "accuracy", "train_xor_gd",
]
