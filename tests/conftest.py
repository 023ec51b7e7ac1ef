"""Shared fixtures: small seeded problems, and the small run most file and process tests start."""

from __future__ import annotations

import numpy as np
import pytest

from mfld.model.datasets import make_dataset
from mfld.model.problem import Problem

SMALL_RUN = [
    "data.d=4",
    "data.n=40",
    "data.n_test=50",
    "particles.N=64",
    "time.steps=40",
    "time.eta=0.1",
    "output.checkpoint_every=10",
    "output.metrics_every=5",
    "output.plot=false",
    'output.progress="off"',
    "model.lam=0.05",
]
"""``--set`` overrides of a particle run small enough for a test: 64 particles, 40 steps, a frame every 10."""

SMALL_ANY = [
    'data.target="single-index"',
    "data.d=1",
    "data.n=20",
    "data.n_test=30",
    'model.feature="tanh"',
    "model.lam=0.05",
    "model.lam_a=1.0",
    "model.lam_w=1.0",
    "particles.N=40",
    "grid.cells=24",
    "grid.half_width=5.0",
    "grid.gap=false",
    "time.eta=0.05",
]
"""Overrides small enough for a test whatever the discretisation: p = 1 (so that grids apply), 40 particles or
24 cells."""


def small_problem(feature: str = "tanh_bias", n: int = 30, d: int = 3, T: int = 1, seed: int = 0, **kw) -> Problem:
    ds = make_dataset("single-index", d=d, n=n, n_test=40, noise=0.1, seed=seed)
    Y = ds.Y
    if T > 1:
        Y = np.concatenate([ds.Y, np.cos(ds.X[:, : T - 1])], axis=1)
        Yt = np.concatenate([ds.Y_test, np.cos(ds.X_test[:, : T - 1])], axis=1)
    else:
        Yt = ds.Y_test
    params = {"lam": 0.05, "lam_a": 2.0, "lam_w": 1.0} | kw
    return Problem(ds.X, Y, feature, X_test=ds.X_test, Y_test=Yt, relevant=ds.relevant, **params)


def one_sided_derivative(f, e: float = 1e-4) -> float:
    """Second-order one-sided difference ``(-3 f(0) + 4 f(e) - f(2e)) / 2e``: mixture weights stay >= 0."""
    return (-3 * f(0.0) + 4 * f(e) - f(2 * e)) / (2 * e)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs in an empty folder of its own: what a user's earlier runs left in theirs changes nothing."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(autouse=True)
def _one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every run of a test takes one BLAS thread, whatever the load (tests/solver/test_threads.py tests the policy).

    BLAS sums in a thread-dependent order (H H^T, H V, Cholesky: 1e-16 to 1e-14 apart between one and
    two threads), and ``threads = 0`` chooses from the load at each start, so two runs a test starts
    separately, a straight one and one resumed, would otherwise part at round-off when the load changed
    between them. Child processes inherit the variable.
    """
    monkeypatch.setenv("MFLD_THREADS", "1")
