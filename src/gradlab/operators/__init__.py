"""Scientific machine learning operators: learned Krylov directions (DCDM), multigrid neural operators (MgNO),
function-space layers, neural fields from cross-sections (OReX).

Each module documents its paper and equations; the public names are re-exported here.
"""

__all__: list[str] = []

# MgNO (arXiv 2310.19809), function-space layers (arXiv 2506.10973), Darcy data.
from gradlab.operators.function_space import (FNO, FiniteDifferenceConv, InputOutputInterpolation,  # noqa: E402
                                              IntegralLinear, InterpolatedConv, SpectralConv, function_norm,
                                              grid_points, h1_loss, lp_loss, quadrature_weights, resample,
                                              to_operator)
from gradlab.operators.multigrid import MgConv, MgNO, level_sizes  # noqa: E402
from gradlab.operators.pde import DarcyCoefficient, darcy_dataset, darcy_grid, solve_darcy  # noqa: E402

__all__ += ["FNO", "DarcyCoefficient", "FiniteDifferenceConv", "InputOutputInterpolation", "IntegralLinear",
            "InterpolatedConv", "MgConv", "MgNO", "SpectralConv", "darcy_dataset", "darcy_grid", "function_norm",
            "grid_points", "h1_loss", "level_sizes", "lp_loss", "quadrature_weights", "resample", "solve_darcy",
            "to_operator"]

# DCDM (arXiv 2205.10763): conjugate-direction solver with learned directions, IC(0)/AMG baselines. The solver
# itself is gradlab.operators.krylov.dcdm; it is not re-exported here because the name would shadow the
# gradlab.operators.dcdm module.
from gradlab.operators.dcdm import (DCDMNet, GridLaplacian, dcdm_loss, dirichlet_ritz_rhs,  # noqa: E402
                                    disk_obstacle, net_direction, poisson_matrix, ritz_rhs, train_dcdm)
from gradlab.operators.krylov import IncompleteCholesky, amg_preconditioner, ichol0  # noqa: E402

__all__ += ["DCDMNet", "GridLaplacian", "IncompleteCholesky", "amg_preconditioner", "dcdm_loss",
            "dirichlet_ritz_rhs", "disk_obstacle", "ichol0", "net_direction", "poisson_matrix", "ritz_rhs",
            "train_dcdm"]

# OReX (arXiv 2211.12886): neural indicator field from planar cross-sections, analytic shapes and slice baselines.
from gradlab.operators.cross_sections import (SphereUnion, Torus, nearest_slice_extrusion, normal_error,  # noqa: E402
                                              oblique_planes, parallel_planes, ripple_score, sdf_interpolation,
                                              volume_iou)
from gradlab.operators.neural_field import (CrossSectionSampler, LearnableFourierFeatures, OReXField,  # noqa: E402
                                            OReXLoss, evaluate_grid, extract_mesh, fit_orex, gradient_hinge,
                                            grid_points_3d, orex_loss, plane_basis)

__all__ += ["CrossSectionSampler", "LearnableFourierFeatures", "OReXField", "OReXLoss", "SphereUnion", "Torus",
            "evaluate_grid", "extract_mesh", "fit_orex", "gradient_hinge", "grid_points_3d", "nearest_slice_extrusion",
            "normal_error", "oblique_planes", "orex_loss", "parallel_planes", "plane_basis", "ripple_score",
            "sdf_interpolation", "volume_iou"]
