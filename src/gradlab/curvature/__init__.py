"""Second-order information for any model: Hessian / Gauss-Newton-vector products, Lanczos, stochastic Lanczos
quadrature, directional sharpness, and the methods built on them (batch-size-aware learning rates,
gradient-regularized Newton)."""

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
from gradlab.curvature.sharpness import DirectionalSharpness, directional_sharpness

__all__ = [
    "CurvatureOperator",
    "DenseOperator",
    "DoubleBackwardError",
    "FunctionOperator",
    "GaussNewtonOperator",
    "HessianOperator",
    "as_operator",
    "gauss_newton_vector_product",
    "hessian_vector_product",
    "DirectionalSharpness",
    "directional_sharpness",
]
