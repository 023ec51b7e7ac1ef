"""The features in cache-sized blocks: the same fit, drift and run as the whole-array passes, and as the formulas.

Test problems are far smaller than a cache block, so each test shrinks ``CACHE_BLOCK_BYTES`` to a few columns
(an odd number, so that the last block is short) and holds the result against the one-block passes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from conftest import small_problem
from mfld.config import load_config
from mfld.discretizations import loop
from mfld.model import backend
from mfld.model.features import FEATURE_MAPS, RidgeFeature, get_feature_map
from mfld.model.functional import DEFAULT_MEMORY_BUDGET
from mfld.model.two_timescale import DualSolve, TwoTimescaleFunctional
from mfld.solver import build

N_ROWS = 120


def _blocks_of(monkeypatch, columns: int) -> None:
    monkeypatch.setattr(backend, "CACHE_BLOCK_BYTES", 8 * N_ROWS * columns)


def _reference_drift(pb, W, q):
    """``-grad V`` written from docs/theory.md §2 with nothing shared with mfld's code but the problem's data:
    ``c = (H Q H^T + r I)^{-1} Y``, ``a = H^T c``, ``grad V(w_i) = -(lam_a_bar / T) sum_t a_it sum_j c_jt
    sigma'(z_ji) x~_j + lam_w_bar w_i`` for ``h = tanh``."""
    Xa = np.concatenate([pb.X, np.ones((pb.n, 1))], axis=1)
    H = np.tanh(Xa @ W.T)
    c = np.linalg.solve(H @ (q[:, None] * H.T) + pb.n * pb.lam_a_bar * np.eye(pb.n), pb.Y)
    a = H.T @ c
    D = 1.0 - H**2
    grad = np.zeros_like(W)
    for t in range(pb.T):
        grad += a[:, t : t + 1] * (D.T @ (c[:, t : t + 1] * Xa))
    return pb.lam_a_bar / pb.T * grad - pb.lam_w_bar * W


@pytest.mark.parametrize("name", ["tanh_bias", "sigmoid", "erf_bias"])
def test_features_formed_block_by_block_are_those_of_the_whole_array(name, monkeypatch, rng):
    fm = get_feature_map(name)
    X, W = rng.standard_normal((N_ROWS, 4)), rng.standard_normal((53, fm.dim(4)))
    Xa = fm.augment(X)
    Z = Xa @ W.T
    whole = fm.values(Z)
    _blocks_of(monkeypatch, 7)
    cache, H = fm.evaluate(Xa, W)
    np.testing.assert_allclose(H, whole, rtol=1e-15, atol=1e-16)
    assert H[:, 7:14].flags.f_contiguous and cache[:, 7:14].flags.f_contiguous  # a block of particles: one piece
    if fm.activation.value_in_place is not None:  # the values are the cache: no pre-activations are kept
        assert cache is H
    np.testing.assert_allclose(fm.derivative(cache, H), fm.activation.derivative(np, Z), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("N", [400, 60])  # n = 120: the n-side system, then the N-side one
@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("method", ["cholesky", "pcg"])
@pytest.mark.parametrize("budget", [DEFAULT_MEMORY_BUDGET, 8 * N_ROWS * 100])  # whole, or chunks of 100
def test_the_blocked_step_equals_the_whole_array_step_and_the_formulas(N, T, method, budget, monkeypatch, rng):
    pb = small_problem("tanh_bias", n=N_ROWS, d=4, T=T)
    whole, blocked = (TwoTimescaleFunctional(pb, budget, solve=DualSolve(method, tol=1e-11)) for _ in range(2))
    W = pb.sample_prior(N, rng)
    q = rng.random(N) + 0.5
    q /= q.sum()
    for _ in range(4):  # pcg: the first solve is exact, the later ones iterate from the old factor
        fit_w = whole.fit(W, q)
        g_w = whole.grad_potential(fit_w)
        _blocks_of(monkeypatch, 11)
        fit_b = blocked.fit(W, q)
        g_b = blocked.grad_potential(fit_b)
        V_b, f_b = blocked.potential(fit_b), blocked.predict(fit_b, pb.X[:17])
        monkeypatch.undo()
        assert abs(fit_b.U - fit_w.U) <= 1e-12 * abs(fit_w.U)
        assert np.linalg.norm(g_b - g_w) <= 1e-12 * np.linalg.norm(g_w)
        for b, w in ((V_b, whole.potential(fit_w)), (f_b, whole.predict(fit_w, pb.X[:17]))):
            assert np.linalg.norm(b - w) <= 1e-12 * np.linalg.norm(w)  # norm-wise: V crosses zero
        # pcg stops at the relative residual 1e-11: its drift is within cond(K) tol of the exact one.
        tol = 1e-12 if method == "cholesky" else 1e-8
        assert np.linalg.norm(-g_b - _reference_drift(pb, W, q)) <= tol * np.linalg.norm(g_w)
        W = W + 0.05 * rng.standard_normal(W.shape)
    if method == "pcg":
        assert list(blocked.iterations) == list(whole.iterations) and max(blocked.iterations) > 0


def test_a_pcg_run_in_blocks_follows_the_run_before_blocks(tmp_path, monkeypatch):
    """30 steps of a small pcg run with features in blocks of 13 particles against the same run the way it went
    before blocks: the pre-activations kept, ``h(Z)`` a second array, every pass over the whole array."""
    config = load_config(
        None,
        [
            "data.d=4",
            f"data.n={N_ROWS}",
            "particles.N=300",
            "particles.solve=pcg",
            "output.plot=false",
            'output.progress="off"',
        ],
    )
    _blocks_of(monkeypatch, 13)
    blocked = build.build_system(config, build.build_problem(config))
    loop.run(blocked, 30)
    tanh = get_feature_map("tanh_bias")
    before = RidgeFeature(dataclasses.replace(tanh.activation, value_in_place=None), tanh.bias)
    monkeypatch.setattr(backend, "CACHE_BLOCK_BYTES", 2**62)
    with FEATURE_MAPS.registered("tanh_bias", before, "tanh, before blocks"):
        whole = build.build_system(config, build.build_problem(config))
    assert whole.functional.feature_arrays == 2 and blocked.functional.feature_arrays == 1
    loop.run(whole, 30)
    W_w, W_b = whole.measure()[0], blocked.measure()[0]
    assert np.linalg.norm(W_b - W_w) <= 1e-10 * np.linalg.norm(W_w)
