"""The only shared code: seeding, argument validation, datasets (bundled + synthetic), tensor helpers and atomic
result files (:mod:`gradlab.core.files`)."""

from gradlab.core.datasets import (
    Split,
    load_breast_cancer_split,
    load_digits_split,
    load_torchvision_split,
    make_gaussian_classification,
    make_linear_regression,
    make_two_spirals,
)
from gradlab.core.seeding import numpy_rng, seed_everything, torch_generator
from gradlab.core.validation import (
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_range,
    check_tensor,
    check_type,
)

__all__ = [
    "Split", "load_breast_cancer_split", "load_digits_split", "load_torchvision_split",
    "make_gaussian_classification", "make_linear_regression", "make_two_spirals",
    "numpy_rng", "seed_everything", "torch_generator",
    "check_choice", "check_finite", "check_int", "check_positive", "check_range", "check_tensor", "check_type",
]
