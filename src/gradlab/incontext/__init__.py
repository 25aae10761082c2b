"""In-context learning: tasks, linear self-attention models, reference learners, probes and attention-SVM.

Modules:
    tasks -- seeded batched prompt generators with ``sample(batch, n_context)`` (linear regression with any
        covariance and shifts, autoregressive ``x_{t+1} = W x_t``, token selection).
    models -- linear/softmax self-attention layers (merged or separate K/Q/V/P, causal, multi-layer, MLPs) and a
        small causal transformer exporting per-layer hidden states.
    learners -- OLS, ridge, GD (iterative and closed form), GD++, iterative Newton, and the explicit LSA weights
        implementing GD steps (von Oswald et al.), ZFB's global minimum, the mesa-optimizer construction.
    probes -- ridge readout probes, prediction/residual similarity heatmaps, best-matching iteration, weight and
        sensitivity comparisons.
    attention_svm -- the token-selecting softmax attention, normalised GD and the Att-SVM (Frobenius/nuclear).
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
