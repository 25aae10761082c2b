"""NaN/inf policy of the curvature package: non-finite data or products raise ValueError naming the input."""

import pytest
import torch
from torch import nn

from gradlab.curvature import FunctionOperator, HessianOperator, hessian_vector_product, lanczos, power_iteration
from gradlab.curvature.sharpness import directional_sharpness
from gradlab.curvature.slq import hutchinson_trace, slq_spectral_density


def _setup(bad: str):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    if bad == "inputs":
        x[2, 1] = float("nan")
    elif bad == "targets":
        y[0, 0] = float("inf")
    return model, nn.MSELoss(), (x, y)


@pytest.mark.parametrize("bad", ["inputs", "targets"])
def test_every_entry_point_refuses_a_nonfinite_batch(bad):
    model, loss, batch = _setup(bad)
    n = sum(p.numel() for p in model.parameters())
    calls = [
        lambda: hessian_vector_product(model, loss, batch, torch.ones(n)),
        lambda: HessianOperator(model, loss, batch),
        lambda: directional_sharpness(model, loss, batch, [torch.ones_like(p) for p in model.parameters()]),
        lambda: hutchinson_trace(HessianOperator(model, loss, batch), num_probes=4),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=f"batch {bad}"):
            call()


def test_nonfinite_products_raise_in_every_algorithm():
    op = FunctionOperator(lambda V: V * float("nan"), size=5, dtype=torch.float64)
    for call in (lambda: lanczos(op, num_iters=3), lambda: power_iteration(op, num_iters=3),
                 lambda: hutchinson_trace(op, num_probes=3), lambda: slq_spectral_density(op, num_probes=2, num_iters=3),
                 lambda: op.matvec(torch.ones(5, dtype=torch.float64))):
        with pytest.raises(ValueError, match="NaN or inf"):
            call()


@pytest.mark.parametrize("size", [2.5, "3", True, None])
def test_function_operator_size_must_be_an_int(size):
    with pytest.raises(TypeError, match="size"):
        FunctionOperator(lambda V: V, size=size)
