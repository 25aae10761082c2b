"""Second-order information for any model: Hessian / Gauss-Newton-vector products, Lanczos, stochastic Lanczos
quadrature, directional sharpness, and the methods built on them (batch-size-aware learning rates,
gradient-regularized Newton)."""

from gradlab.curvature.adasketch import AdaSketchNewton, AdaSketchResult, EqualityConstrainedProblem
from gradlab.curvature.batch_scaling import (
    BatchLawFit,
    BatchSpectrum,
    LanczosLR,
    batch_hessian_top_eigenvalues,
    bisect_max_stable_lr,
    fit_batch_law,
    scale_learning_rate,
    top_eigenvalue,
)
from gradlab.curvature.grad_reg_newton import GradRegNewton, WeightedGaussNewton
from gradlab.curvature.hvp import (
    CurvatureOperator,
    DenseOperator,
    DoubleBackwardError,
    FunctionOperator,
    GaussNewtonOperator,
    HessianOperator,
    as_operator,
    gauss_newton_vector_product,
    hessian_vector_product,
)
from gradlab.curvature.lanczos import LanczosResult, PowerIterationResult, extreme_eigenvalues, lanczos, power_iteration
from gradlab.curvature.sharpness import DirectionalSharpness, directional_sharpness
from gradlab.curvature.sketching import SketchSolveResult, sketch_solve
from gradlab.curvature.slq import SpectralDensity, TraceEstimate, hutchinson_trace, slq_spectral_density

__all__ = [
    # products
    "CurvatureOperator",
    "DenseOperator",
    "DoubleBackwardError",
    "FunctionOperator",
    "GaussNewtonOperator",
    "HessianOperator",
    "as_operator",
    "gauss_newton_vector_product",
    "hessian_vector_product",
    # spectra
    "LanczosResult",
    "PowerIterationResult",
    "extreme_eigenvalues",
    "lanczos",
    "power_iteration",
    "SpectralDensity",
    "TraceEstimate",
    "hutchinson_trace",
    "slq_spectral_density",
    # sharpness
    "DirectionalSharpness",
    "directional_sharpness",
    # batch-size scaling (Granziol et al.)
    "BatchLawFit",
    "BatchSpectrum",
    "LanczosLR",
    "batch_hessian_top_eigenvalues",
    "bisect_max_stable_lr",
    "fit_batch_law",
    "scale_learning_rate",
    "top_eigenvalue",
    # gradient-regularized Newton (Semenov, Jaggi, Doikov)
    "GradRegNewton",
    "WeightedGaussNewton",
    # equality-constrained AdaSketch-Newton (Hong, Na, Mahoney, Kolar)
    "AdaSketchNewton",
    "AdaSketchResult",
    "EqualityConstrainedProblem",
    "SketchSolveResult",
    "sketch_solve",
]
