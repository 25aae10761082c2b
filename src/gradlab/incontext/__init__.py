"""In-context learning: tasks, linear self-attention models, reference learners, probes and attention-SVM.

Modules:

* ``tasks`` -- seeded batched prompt generators with ``sample(batch, n_context)`` (linear regression with any
  covariance and shifts, autoregressive ``x_{t+1} = W x_t``, token selection).
* ``models`` -- linear/softmax self-attention layers (merged or separate K/Q/V/P, causal, multi-layer, MLPs) and a
  small causal transformer exporting per-layer hidden states.
* ``learners`` -- OLS, ridge, GD (iterative and closed form), GD++, iterative Newton, and the explicit LSA weights
  implementing GD steps (von Oswald et al.), ZFB's global minimum, the mesa-optimizer construction.
* ``probes`` -- ridge readout probes, prediction/residual similarity heatmaps, best-matching iteration, weight and
  sensitivity comparisons.
* ``attention_svm`` -- the token-selecting softmax attention, normalised GD and the Att-SVM (Frobenius/nuclear).

Input validation and the NaN/inf policy (one layer, ``gradlab.incontext._validation``, used by every public
entry point before it computes or mutates anything):

* Shapes and dtypes are checked up front. A mismatch raises ``ValueError`` (shape) or ``TypeError`` (type or
  dtype) naming the argument, the expected and the received shape/dtype: ``ys`` that does not match ``xs``,
  ``w0`` of the wrong length, a query batch of the wrong size, float64 tokens into a float32 model (no silent
  casts: convert with ``.to(...)``), integer sample dtypes (they would truncate every sample).
* Data tensors (``xs``, ``ys``, ``xq``, tokens, prompts, covariances, hidden states, predictions, similarity
  matrices, weights compared or constructed) must be finite: NaN or inf raises ``ValueError("<arg> contains NaN
  or inf")`` naming the argument, instead of a linear-algebra error about an internal variable or a silent NaN
  result. Scalar hyperparameters (``lr``, ``lam``, ``gamma``, ``alpha``, ``sign``, ``c``, ...) must be finite too.
* Not checked: model parameters during training (a diverging model is the caller's to detect) and the values a
  model returns.
"""

from gradlab.incontext.learners import (
    gd_iterates, gd_lsa_construction, gd_plus_plus, gd_plus_plus_construction, gradient_descent, mesa_construction,
    newton_iterates, newton_schulz, ols, one_step_gd_ar, prefix_predictions, ridge, zfb_gamma, zfb_population_risk,
)
from gradlab.incontext.models import (
    ICLTransformer, LinearSelfAttention, MultiLayerLSA, ar_tokens, regression_prediction, regression_tokens,
)
from gradlab.incontext.probes import (
    RidgeProbe, best_match, compare_weights, matrix_correlation, prediction_similarity, sensitivity_cosine,
    similarity_matrix,
)
from gradlab.incontext.tasks import (
    ARBatch, AutoregressiveTask, LinearRegressionTask, PromptBatch, TokenSelectionBatch, TokenSelectionTask,
    ill_conditioned_covariance, ill_conditioned_factor,
)

__all__ = [
    "ARBatch", "AutoregressiveTask", "LinearRegressionTask", "PromptBatch", "TokenSelectionBatch",
    "TokenSelectionTask", "ill_conditioned_covariance", "ill_conditioned_factor",
    "ICLTransformer", "LinearSelfAttention", "MultiLayerLSA", "ar_tokens", "regression_prediction",
    "regression_tokens",
    "gd_iterates", "gd_lsa_construction", "gd_plus_plus", "gd_plus_plus_construction", "gradient_descent",
    "mesa_construction", "newton_iterates", "newton_schulz", "ols", "one_step_gd_ar", "prefix_predictions", "ridge",
    "zfb_gamma", "zfb_population_risk",
    "RidgeProbe", "best_match", "compare_weights", "matrix_correlation", "prediction_similarity",
    "sensitivity_cosine", "similarity_matrix",
]
