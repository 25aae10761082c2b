import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits

from gradlab.core import (load_breast_cancer_split, load_digits_split, load_torchvision_split,
                          make_gaussian_classification, make_linear_regression, make_two_spirals)


def test_digits_split_is_fixed_stratified_and_complete():
    a = load_digits_split()
    b = load_digits_split()
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape[0] + a.x_test.shape[0] == 1797 and a.x_train.shape[1] == 64
    assert a.num_classes == 10 and a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert float(a.x_train.max()) <= 1.0 and float(a.x_train.min()) >= 0.0
    # Every sample comes from the bundled set, scaled by 1/16.
    raw = load_digits()
    rows = {tuple(np.round(r / 16.0, 6)) for r in raw.data}
    assert all(tuple(np.round(r, 6)) in rows for r in a.x_test.double().numpy()[:50])
    counts = torch.bincount(a.y_test, minlength=10).float()
    assert float(counts.min()) >= 40  # stratified: ~45 per class
    img = load_digits_split(images=True)
    assert img.x_train.shape[1:] == (1, 8, 8)
    with pytest.raises(ValueError, match="standardize"):
        load_digits_split(images=True, standardize=True)
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits_split(test_fraction=1.0)


def test_breast_cancer_standardized_with_train_statistics():
    s = load_breast_cancer_split()
    assert s.x_train.shape[1] == 30 and s.num_classes == 2
    assert s.x_train.shape[0] + s.x_test.shape[0] == len(load_breast_cancer().target)
    assert torch.allclose(s.x_train.mean(0), torch.zeros(30), atol=1e-5)
    assert torch.allclose(s.x_train.std(0, unbiased=False), torch.ones(30), atol=1e-4)
    assert s.to(dtype=torch.float64).x_test.dtype == torch.float64


def test_synthetic_generators_are_seeded_and_validated():
    g1 = make_gaussian_classification(200, 5, 3, seed=1)
    g2 = make_gaussian_classification(200, 5, 3, seed=1)
    assert torch.equal(g1.x_train, g2.x_train) and g1.x_test.shape == (50, 5)
    assert not torch.equal(g1.x_train, make_gaussian_classification(200, 5, 3, seed=2).x_train)
    x, y, w = make_linear_regression(100, 4, seed=0, noise=0.0)
    assert torch.allclose(x @ w, y, atol=1e-5)
    sp = make_two_spirals(100, seed=0)
    assert set(sp.y_train.tolist()) <= {0, 1}
    with pytest.raises(ValueError, match="n_classes"):
        make_gaussian_classification(10, 2, 1, seed=0)
    with pytest.raises(TypeError, match="n_samples"):
        make_linear_regression(10.5, 2, seed=0)


def test_torchvision_loader_never_downloads(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not download"):
        load_torchvision_split("mnist", tmp_path)
    with pytest.raises(ValueError, match="name must be one of"):
        load_torchvision_split("imagenet", tmp_path)


def test_synthetic_generators_refuse_what_would_silently_go_wrong():
    import pytest
    import torch

    from gradlab.core.datasets import make_gaussian_classification, make_linear_regression, make_two_spirals

    with pytest.raises(ValueError, match="test_fraction"):
        make_gaussian_classification(40, 3, 2, seed=0, test_fraction=2.0)
    with pytest.raises(ValueError, match="test_fraction"):
        make_two_spirals(40, seed=0, test_fraction=0.99)  # 40 of 40 to the test split
    with pytest.raises(ValueError, match="noise"):
        make_two_spirals(40, seed=0, noise=float("nan"))
    with pytest.raises(TypeError, match="dtype"):
        make_linear_regression(10, 3, seed=0, dtype=torch.int64)
    with pytest.raises(TypeError, match="dtype"):
        make_gaussian_classification(40, 3, 2, seed=0, dtype=torch.int32)
    split = make_two_spirals(40, seed=0)
    assert split.x_train.shape[0] == 30 and split.x_test.shape[0] == 10


def test_seed_everything_keeps_pythonhashseed_valid_for_subprocesses(monkeypatch):
    import os
    import subprocess
    import sys

    from gradlab.core.seeding import seed_everything

    monkeypatch.setenv("PYTHONHASHSEED", "0")
    seed_everything(2**40 + 5)
    assert int(os.environ["PYTHONHASHSEED"]) < 2**32
    out = subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0 and out.stdout.strip() == "ok"
