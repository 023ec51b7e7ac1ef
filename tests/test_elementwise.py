"""Elementwise passes on several threads (mfld.model.elementwise) give what one pass gives, bit for bit: each
entry is computed by the same ufunc loop, only the rows are split among threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import small_problem
from mfld.discretizations import loop
from mfld.model import elementwise
from mfld.model.two_timescale import DualSolve, TwoTimescaleFunctional
from mfld.solver import build
from mfld.solver.config import load_config


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of any size, so that the arrays of a small problem are split among threads."""
    monkeypatch.setattr(elementwise, "MIN_BLOCK", 1)


def test_a_pass_splits_its_rows_among_the_threads_it_is_given(small_blocks):
    seen: set[int] = set()

    def tanh(x, out):
        seen.add(threading.get_ident())
        np.tanh(x, out=out)

    x = np.random.default_rng(0).standard_normal((97, 13))
    assert elementwise.threads() == 1
    np.testing.assert_array_equal(elementwise.apply(tanh, x), np.tanh(x))
    assert len(seen) == 1
    with elementwise.limited(3):
        assert elementwise.threads() == 3
        with elementwise.limited(2):  # a nested limit holds inside, and the outer one again after it
            assert elementwise.threads() == 2
        assert elementwise.threads() == 3
        np.testing.assert_array_equal(elementwise.apply(tanh, x), np.tanh(x))
    assert elementwise.threads() == 1 and len(seen) >= 2  # the caller's thread and a pool's
    assert elementwise.apply(tanh, np.ones(5)).shape == (5,)  # one-dimensional arrays stay one pass


@pytest.mark.parametrize("N", [80, 12])  # the dual solve on the n side (N >= n = 30), then on the N side
@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("solve", ["cholesky", "pcg"])
def test_the_drift_on_threads_equals_the_drift_in_one_pass(N, T, solve, small_blocks, rng):
    pb = small_problem("tanh_bias", T=T)
    W, q = pb.sample_prior(N, rng), np.full(N, 1.0 / N)

    def drift() -> tuple[np.ndarray, np.ndarray]:
        F = TwoTimescaleFunctional(pb, solve=DualSolve(solve))
        fit = F.fit(W, q)
        return fit.coef, F.grad_potential(fit)

    one = drift()
    with elementwise.limited(3):
        threaded = drift()
    for a, b in zip(one, threaded, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_run_on_elementwise_threads_follows_the_run_in_one_pass(small_blocks):
    """A pcg run of 30 steps on the paper's feature map, with its passes split among 2 threads or not."""
    config = load_config(None, ["data.d=4", "data.n=40", "particles.N=64", "time.eta=0.1", "model.lam=0.05",
                                'particles.solve="pcg"'])
    runs = []
    for threads in (1, 2):
        system = build.build_system(config, build.build_problem(config))
        with elementwise.limited(threads):
            loop.run(system, 30)
        runs.append(system.positions)
    np.testing.assert_array_equal(runs[0], runs[1])
