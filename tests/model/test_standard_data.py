"""scikit-learn's data sets as ``data.source = "sklearn:<name>"``: split, standardised, refused clearly."""

from __future__ import annotations

import builtins
import sys

import numpy as np
import pytest

from mfld.model.observables import eigen_share
from mfld.model.standard_data import SETS, accuracy, load_standard
from mfld.model.two_timescale import TwoTimescaleFunctional
from mfld.validation.problems import low_dim_problem

pytest.importorskip("sklearn")


@pytest.mark.parametrize("name", sorted(SETS))
def test_each_set_is_split_and_standardised_as_documented(name):
    spec = SETS[name]
    a, b = load_standard(f"sklearn:{name}", seed=1), load_standard(f"sklearn:{name}", seed=1)
    assert np.array_equal(a.X, b.X) and np.array_equal(a.Y_test, b.Y_test)  # the split is the seed's
    assert a.X.shape[0] + a.X_test.shape[0] == spec.n and a.X.shape[1] == spec.d
    assert a.Y.shape[1] == a.Y_test.shape[1] == spec.tasks
    assert a.X_test.shape[0] == pytest.approx(0.25 * spec.n, abs=1)
    np.testing.assert_allclose(a.X.mean(axis=0), 0.0, atol=1e-12)
    sd = a.X.std(axis=0)
    assert np.all((np.abs(sd - 1) < 1e-12) | (sd == 0))  # constant inputs (corner pixels) stay 0
    if spec.kind == "classes":
        assert set(np.unique(a.Y)) == {0.0, 1.0} and np.all(a.Y.sum(axis=1) == 1)
    elif spec.kind == "binary":
        assert set(np.unique(a.Y)) == {-1.0, 1.0}
    else:
        assert abs(a.Y.mean()) < 1e-12 and a.Y.std() == pytest.approx(1.0)
    other = load_standard(f"sklearn:{name}", seed=2)
    assert not np.array_equal(a.X, other.X)


def test_a_malformed_name_is_refused_with_the_names():
    with pytest.raises(ValueError, match=r"names no scikit-learn data set; choose one of sklearn:digits, "):
        load_standard("sklearn:mnist")


def test_a_missing_scikit_learn_is_refused_with_the_install_line(monkeypatch):
    real = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("No module named 'sklearn'")
        return real(name, *args, **kwargs)

    for module in [m for m in sys.modules if m == "sklearn" or m.startswith("sklearn.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match=r'needs scikit-learn: pip install "mfld\[data\]"'):
        load_standard("sklearn:digits")


def test_a_run_reads_a_standard_set_and_stores_it(tmp_path):
    """The split and the standardised arrays are what the run's file records, so a run can be analysed without
    scikit-learn; ``data.source`` stays the name, not a path made absolute."""
    import h5py

    from mfld import load, run

    run({"data": {"source": "sklearn:breast-cancer"}, "time": {"steps": 3}, "seed": 4}, out=tmp_path / "bc.h5")
    data = load_standard("sklearn:breast-cancer", seed=4)
    with h5py.File(tmp_path / "bc.h5", "r") as f:
        np.testing.assert_array_equal(f["parameters/data/X"][()], data.X)
        np.testing.assert_array_equal(f["parameters/data/Y_test"][()], data.Y_test)
    assert load(tmp_path / "bc.h5").config["data"]["source"] == "sklearn:breast-cancer"


def test_accuracy_counts_classes_and_signs():
    onehot = np.eye(3)[[0, 1, 2, 1]]
    assert accuracy(onehot[[0, 1, 2, 0]] + 0.1, onehot) == 0.75
    assert accuracy(np.array([[0.3], [-2.0]]), np.array([[1.0], [1.0]])) == 0.5


@pytest.mark.parametrize("N", [5, 200])
def test_the_eigen_share_is_the_targets_share_in_the_leading_singular_vectors(N):
    """Both sides of the kernel fit (n x n Gram, or N x N with B = H sqrt(q)) against an SVD of B."""
    F = TwoTimescaleFunctional(low_dim_problem(3, n=60))
    rng = np.random.default_rng(N)
    W, q = rng.standard_normal((N, 3)), rng.random(N)
    q /= q.sum()
    B = F.features(W)[1] * np.sqrt(q)
    U, sv, _ = np.linalg.svd(B, full_matrices=False)
    k = min(10, int(np.sum(sv > 1e-6 * sv[0])))
    Y = F.problem.Y
    expected = np.sum((U[:, :k].T @ Y) ** 2) / np.sum(Y * Y)
    for fit in (F.fit(W, q), F.fit(W, q, F.features(W))):
        assert eigen_share(F, fit) == pytest.approx(expected, rel=1e-9)
