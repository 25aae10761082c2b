import math

import pytest
import torch

from gradlab.core import (check_choice, check_finite, check_int, check_positive, check_range, check_tensor,
                          check_type)


def test_check_positive():
    assert check_positive("lr", 0.1) == 0.1
    assert check_positive("wd", 0, allow_zero=True) == 0.0
    assert check_positive("lr", torch.tensor(0.5)) == 0.5
    for bad in (0, -1.0, math.inf):
        with pytest.raises(ValueError, match="lr must be finite and > 0"):
            check_positive("lr", bad)
    with pytest.raises(ValueError, match="NaN"):
        check_positive("lr", float("nan"))
    with pytest.raises(TypeError, match="lr must be a real number"):
        check_positive("lr", "0.1")
    with pytest.raises(TypeError, match="lr must be a real number"):
        check_positive("lr", True)


def test_check_range_reports_interval():
    assert check_range("beta1", 0.9, 0.0, 1.0) == 0.9
    with pytest.raises(ValueError, match=r"beta1 must lie in \[0.0, 1.0\)"):
        check_range("beta1", 1.0, 0.0, 1.0)
    assert check_range("p", 1.0, 0.0, 1.0, high_inclusive=True) == 1.0
    with pytest.raises(ValueError, match=r"\(0.0"):
        check_range("p", 0.0, 0.0, 1.0, low_inclusive=False)


def test_check_int_choice_type():
    assert check_int("n", 3, minimum=1) == 3
    with pytest.raises(ValueError, match="n must be >= 1"):
        check_int("n", 0, minimum=1)
    with pytest.raises(ValueError, match="n must be <= 2"):
        check_int("n", 3, maximum=2)
    with pytest.raises(TypeError, match="n must be an int"):
        check_int("n", 2.0)
    with pytest.raises(TypeError, match="n must be an int"):
        check_int("n", False)
    assert check_choice("scope", "global", ["per_tensor", "global"]) == "global"
    with pytest.raises(ValueError, match="scope must be one of"):
        check_choice("scope", "local", ["per_tensor", "global"])
    assert check_type("x", 1.0, float) == 1.0
    with pytest.raises(TypeError, match="x must be int or float; got bool"):
        check_type("x", True, (int, float))


def test_check_tensor_and_finite():
    t = torch.zeros(2, 3)
    assert check_tensor("x", t, ndim=2, dtype=torch.float32, floating=True, finite=True) is t
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        check_tensor("x", [1.0])
    with pytest.raises(ValueError, match="x must have 3 or 4 dimensions"):
        check_tensor("x", t, ndim=(3, 4))
    with pytest.raises(TypeError, match="dtype"):
        check_tensor("x", t, dtype=torch.float64)
    with pytest.raises(TypeError, match="floating-point"):
        check_tensor("x", torch.zeros(2, dtype=torch.long), floating=True)
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        check_tensor("x", torch.tensor([1.0, float("inf")]), finite=True)
    check_finite("g", torch.ones(3))
    with pytest.raises(ValueError, match="g contains NaN"):
        check_finite("g", torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="loss is not finite"):
        check_finite("loss", float("inf"))
