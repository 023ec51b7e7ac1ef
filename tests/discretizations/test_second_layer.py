"""The exact second-layer scheme (discretizations/second_layer.py) for the classical objective at rate r."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.linalg import expm

from mfld.discretizations.particles import Particles
from mfld.model.classical import ClassicalFunctional, ClassicalOptions
from mfld.model.two_timescale import TwoTimescaleFunctional
from mfld.validation.problems import low_dim_problem


def _classical(rate: float) -> ClassicalFunctional:
    return ClassicalFunctional(low_dim_problem(1, lam=0.05), options=ClassicalOptions(second_layer_rate=rate))


def _start(N: int = 30) -> np.ndarray:
    rng = np.random.default_rng(4)
    return np.hstack([rng.standard_normal((N, 1)), rng.standard_normal((N, 1))])


def test_the_second_layer_step_is_the_exact_flow_of_its_linear_ode():
    """Noise-free, one step's a is ``a* + expm(-r eta M) (a - a*)`` with the full N x N matrix
    ``M = lam lam_a I + H^T H / (N n T)`` and ``a* = M^{-1} H^T Y / (n T)``, formed densely here."""
    F, eta, rate = _classical(16.0), 0.05, 16.0
    Theta = _start()
    pb, N = F.problem, Theta.shape[0]
    H = F.features(Theta)[1]
    M = pb.lam_a_bar * np.eye(N) + H.T @ H / (N * pb.n * pb.T)
    star = np.linalg.solve(M, H.T @ pb.Y / (pb.n * pb.T))
    expected = star + expm(-rate * eta * M) @ (Theta[:, :1] - star)
    system = Particles(F, Theta.copy(), eta, 0, langevin=False, scheme="exact-second-layer")
    system.step()
    np.testing.assert_allclose(system.positions[:, :1], expected, rtol=1e-10, atol=1e-12)


def test_at_an_infinite_rate_a_step_is_the_two_timescale_step():
    """As ``r eta -> infinity`` the a's land on the finite-N kernel ridge solution, and the w step is then the
    two-timescale Euler step at the same w (the envelope identity of docs/theory.md §7), to round-off."""
    Theta, eta = _start(), 0.05
    system = Particles(_classical(1e12), Theta.copy(), eta, 0, langevin=False, scheme="exact-second-layer")
    system.step()
    limit = Particles(TwoTimescaleFunctional(low_dim_problem(1, lam=0.05)), Theta[:, 1:].copy(), eta, 0, langevin=False)
    limit.step()
    np.testing.assert_allclose(system.positions[:, 1:], limit.positions, rtol=1e-9, atol=1e-12)


def test_the_noise_leaves_the_second_layers_conditional_law_invariant():
    """For the w it starts from, the a-update's stationary law is ``N(a*, lam M^{-1})``: a's drawn from it keep
    that covariance after one exact step (the w step after it does not touch a). Monte Carlo, 4000 draws, N = 3."""
    F, eta = _classical(4.0), 0.3
    Theta = _start(3)
    pb = F.problem
    H = F.features(Theta)[1]
    M = pb.lam_a_bar * np.eye(3) + H.T @ H / (3 * pb.n * pb.T)
    star = np.linalg.solve(M, H.T @ pb.Y / (pb.n * pb.T))
    cov = pb.lam * np.linalg.inv(M)
    rng = np.random.default_rng(0)
    draws = []
    for k in range(4000):
        start = Theta.copy()
        start[:, :1] = star + np.linalg.cholesky(cov) @ rng.standard_normal((3, 1))
        system = Particles(F, start, eta, k, scheme="exact-second-layer")
        system.step()
        draws.append(system.positions[:, 0])
    draws = np.array(draws)
    # Each variance estimate has relative standard error sqrt(2 / 4000) = 2.2 %: 5 of them
    np.testing.assert_allclose(np.var(draws, axis=0), np.diag(cov), rtol=5 * math.sqrt(2 / 4000))


def test_the_exact_scheme_takes_steps_the_explicit_one_refuses():
    F = _classical(1000.0)
    with pytest.raises(ValueError, match="or particles.scheme = 'exact-second-layer'"):
        Particles(F, _start(), 0.5, 0)
    system = Particles(F, _start(), 0.5, 0, scheme="exact-second-layer")
    for _ in range(20):
        system.step()
    assert np.all(np.isfinite(system.positions))


def test_at_rate_one_the_scheme_runs_the_classical_dynamics():
    system = Particles(_classical(1.0), _start(), 0.05, 0, scheme="exact-second-layer")
    system.step()
    assert np.all(np.isfinite(system.positions))


def test_on_a_measure_without_a_second_layer_the_scheme_is_euler_maruyama():
    F = TwoTimescaleFunctional(low_dim_problem(1))
    ends = []
    for scheme in ("exact-second-layer", "euler-maruyama"):
        system = Particles(F, _start()[:, 1:], 0.05, 3, scheme=scheme)
        system.step()
        ends.append(system.positions)
    assert np.array_equal(*ends)
