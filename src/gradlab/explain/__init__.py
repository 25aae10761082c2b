"""Gradient-based explanations: attribution methods with one call shape, new methods, evaluation.

Every method follows Captum's convention ``Method(model).attribute(inputs, target=..., **options)`` and returns a
tensor shaped like the input (layer methods: a map per example). The call shape is Captum's in full for every
method Captum has (and for Grad-CAM++ / Smooth Grad-CAM++): ``inputs`` a tensor or a tuple of tensors (a tuple
of attributions comes back for a tuple), ``additional_forward_args`` passed to the model after the inputs, and
``target`` an int, a tensor, a list of ints, a tuple (one index into a multi-dimensional output) or a list of
tuples (see :mod:`gradlab.explain._inputs`). Shared guarantees: the model must be in eval
mode, it is never mutated, hooks are removed also when the model raises, batching is internal (``chunk_size``),
and wrong input shapes or dtypes raise a ``ValueError``/``TypeError`` naming the argument.

Methods that Captum has are wrapped (Captum is imported lazily); paper-faithful settings are explicit where
Captum's defaults differ (signed SmoothGrad with noise as a fraction of the input range, OLS LIME with a
Euclidean kernel, Grad-CAM with ReLU and upsampling).

Bad input (one validation layer, ``gradlab.explain._common`` on ``gradlab.core.validation``): every public entry
point checks its arguments before any work and raises a ``ValueError``/``TypeError`` naming the argument, the
expected and the received value, shape or dtype (targets and labels: integer, one per example, in range for the
model's outputs; baselines, masks, fills: the right batch size or shape).

NaN/inf policy (the same everywhere in the package): nothing non-finite is computed with or returned silently.
(1) A NaN or inf in an input tensor or number (inputs, source/target images, baselines, fills, masks,
attributions handed to the evaluation functions, noise levels, ranges) raises ``ValueError`` naming the argument.
(2) The model's output is checked on every batch a method evaluates (the inputs and every perturbed, noisy,
interpolated or adversarial copy): a NaN or inf anywhere in it raises ``ValueError`` ("the model's output
contains NaN ..."), as does an output without a gradient path for the gradient methods ("does not depend
differentiably on `inputs`"). (3) An attribution that comes out non-finite (e.g. an infinite gradient at
``sqrt(0)``) raises instead of being returned; a training loss that becomes non-finite stops
``train_classifier``. The only NaN returned on purpose is ``attribution_mass_in_mask`` of an all-zero map
(an undefined ratio, documented there).
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
