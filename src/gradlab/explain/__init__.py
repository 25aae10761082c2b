"""Gradient-based explanations: attribution methods with one call shape, new methods, evaluation.

Every method follows Captum's convention ``Method(model).attribute(inputs, target=..., **options)`` and returns a
tensor shaped like the input (layer methods: a map per example). Shared guarantees: the model must be in eval
mode, it is never mutated, hooks are removed also when the model raises, batching is internal (``chunk_size``),
and wrong input shapes or dtypes raise a ``ValueError``/``TypeError`` naming the argument.

Methods that Captum has are wrapped (Captum is imported lazily); paper-faithful settings are explicit where
Captum's defaults differ (signed SmoothGrad with noise as a fraction of the input range, OLS LIME with a
Euclidean kernel, Grad-CAM with ReLU and upsampling).
"""

from gradlab.explain.activation_profiles import ActivationProfiles, neuron_activation_profiles
from gradlab.explain.ensembles import MultilabelEnsemble, majority_vote, micro_f1, probability_average
from gradlab.explain.gradcam import GradCAM
from gradlab.explain.gradcampp import GradCAMpp, SmoothGradCAMpp
from gradlab.explain.gradients import (
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from gradlab.explain.local_approx import (
    LFA_METHODS,
    CLime,
    LFASetting,
    LocalFunctionApproximation,
    lfa_preset,
)
from gradlab.explain.lrp import LRP
from gradlab.explain.perturbation import KernelShap, Lime, Occlusion
from gradlab.explain.data import KnownSignalSplit, make_anatomy_images, make_block_digits
from gradlab.explain.evaluation import (
    DiffROARResult,
    attribution_mass_in_mask,
    diffroar,
    perturbation_faithfulness,
    pixel_auroc,
    pointing_game,
    unmask_top_k,
)
from gradlab.explain.level_set import LevelSetTraversal, LSTResult
from gradlab.explain.robust import PGD, train_classifier

__all__ = [
    "Saliency", "InputXGradient", "IntegratedGradients", "SmoothGrad", "GuidedBackprop", "DeepLift", "GradCAM",
    "GradCAMpp", "SmoothGradCAMpp", "Occlusion", "Lime", "KernelShap", "LRP",
    "CLime", "LocalFunctionApproximation", "LFASetting", "lfa_preset", "LFA_METHODS",
    "ActivationProfiles", "neuron_activation_profiles", "MultilabelEnsemble", "majority_vote", "micro_f1",
    "probability_average",
    "KnownSignalSplit", "make_anatomy_images", "make_block_digits",
    "DiffROARResult", "diffroar", "unmask_top_k", "attribution_mass_in_mask", "pixel_auroc", "pointing_game",
    "perturbation_faithfulness", "LevelSetTraversal", "LSTResult", "PGD", "train_classifier",
]
