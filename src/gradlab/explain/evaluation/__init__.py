"""Evaluation of explanations: DiffROAR with retraining, localisation against ground-truth masks, and
faithfulness with respect to a neighbourhood."""

from gradlab.explain.evaluation.diffroar import (
    DiffROARResult,
    diffroar,
    evaluate_accuracy,
    remove_and_retrain,
    unmask_top_k,
)
from gradlab.explain.evaluation.faithfulness import perturbation_curve, perturbation_faithfulness
from gradlab.explain.evaluation.localization import (
    attribution_mass_in_mask,
    mask_fraction,
    pixel_auroc,
    pointing_game,
)

__all__ = [
    "DiffROARResult", "diffroar", "evaluate_accuracy", "remove_and_retrain", "unmask_top_k",
    "perturbation_curve", "perturbation_faithfulness",
    "attribution_mass_in_mask", "mask_fraction", "pixel_auroc", "pointing_game",
]
