"""The label-noise procedure: its first variation, its expectation, and the df penalty."""

from __future__ import annotations

import numpy as np
import pytest
from test_functional import central_gradient, uniform

from conftest import one_sided_derivative, small_problem
from mfld.model.label_noise import (
    ExpectedLabelNoiseFunctional,
    df_first_variation,
    penalty_coefficient,
    procedure_gradient,
)
from mfld.model.observables import degrees_of_freedom
from mfld.model.two_timescale import TwoTimescaleFunctional


def clean_loss_of_noisy_fit(F, W, q, eps):
    """U_eps(mu) = (1/2n)||S c_eps - Y||^2 + (lam_a_bar/2) c_eps^T S c_eps, computed from its definition."""
    pb = F.problem
    fit = F.fit(W, q, Y=pb.Y + eps)
    S, c = fit.gram, fit.coef
    return (0.5 * np.sum((S @ c - pb.Y) ** 2) / pb.n + 0.5 * pb.lam_a_bar * np.sum(c * (S @ c))) / pb.T


def test_expected_clean_loss_is_U_plus_df_penalty(rng):
    """E U_eps = U + (s^2 / 6n) df: the coefficient has no factor lam_a_bar (see solver/label_noise.py)."""
    pb = small_problem("tanh_bias", n=30, lam=0.1, lam_a=3.0)
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(60, rng)
    q = uniform(60)
    fit = F.fit(W, q)
    s = 0.8
    draws = [clean_loss_of_noisy_fit(F, W, q, rng.uniform(-s, s, pb.Y.shape)) for _ in range(20000)]
    excess = np.mean(draws) - fit.U
    se = np.std(draws) / np.sqrt(len(draws))
    predicted = penalty_coefficient(pb, s) * degrees_of_freedom(F, fit)
    assert abs(excess - predicted) < 4 * se, (excess, predicted, se)
    # the paper's lam_a_bar s^2 / 6n would be 0.3 times as large here: far outside the error bar.
    assert abs(excess - pb.lam_a_bar * predicted) > 20 * se


def test_procedure_gradient_is_the_gradient_of_its_first_variation(rng):
    pb = small_problem("tanh_bias", n=30)
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(50, rng)
    q = uniform(50)
    eps = rng.uniform(-0.5, 0.5, pb.Y.shape)
    grad, clean = procedure_gradient(F, W, q, eps)
    fit_e = F.fit(W, q, Y=eps)
    np.testing.assert_allclose(clean.coef, F.fit(W, q).coef, rtol=1e-12)

    def first_variation(w):
        a = F.second_layer(clean, w[None])[0]
        b = F.second_layer(fit_e, w[None])[0]
        return float(-0.5 * pb.lam_a_bar * (a @ a - b @ b) + 0.5 * pb.lam_w_bar * w @ w)

    for i in (0, 25):
        num = central_gradient(first_variation, W[i])
        assert np.linalg.norm(grad[i] - num) / np.linalg.norm(num) < 1e-6


def test_first_variation_of_the_procedure_objective(rng):
    """d U_eps / d mu along (1 - e) mu + e delta_w matches -(lam_a_bar/2)(a^2 - b_eps^2) - E_mu[...]."""
    pb = small_problem("tanh_bias", n=30)
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(50, rng)
    q = uniform(50)
    eps = rng.uniform(-0.5, 0.5, pb.Y.shape)
    clean, noise = F.fit(W, q), F.fit(W, q, Y=eps)

    def fv(P):
        a, b = F.second_layer(clean, P), F.second_layer(noise, P)
        return -0.5 * pb.lam_a_bar * (np.sum(a * a, axis=1) - np.sum(b * b, axis=1)) / pb.T

    w = pb.sample_prior(1, rng)
    P = np.concatenate([W, w])

    def Ue(e):
        return clean_loss_of_noisy_fit(F, P, np.concatenate([(1 - e) * q, [e]]), eps)

    deriv = one_sided_derivative(Ue)
    assert abs(deriv - (fv(w)[0] - q @ fv(W))) < 1e-6


@pytest.mark.parametrize("N", [80])
def test_df_first_variation_is_the_directional_derivative_of_df(N, rng):
    pb = small_problem("tanh_bias", n=30)
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(N, rng)
    q = uniform(N)
    fit = F.fit(W, q)
    w = pb.sample_prior(1, rng)
    P = np.concatenate([W, w])

    def df(e):
        return degrees_of_freedom(F, F.fit(P, np.concatenate([(1 - e) * q, [e]])))

    deriv = one_sided_derivative(df)
    d = df_first_variation(F, fit)
    assert abs(deriv - (df_first_variation(F, fit, w)[0] - q @ d)) < 1e-6 * max(1, abs(deriv))
    G = ExpectedLabelNoiseFunctional(F, 0.5)
    assert G.energy(fit)["G"] > F.energy(fit)["G"]


def test_expected_functional_gradient_matches_finite_differences(rng):
    """grad_w of V + (s^2/6n) d df/dmu, the drift the spectral solver needs, against central differences."""
    pb = small_problem("tanh_bias", n=30)
    G = ExpectedLabelNoiseFunctional(TwoTimescaleFunctional(pb), 0.7)
    W = pb.sample_prior(80, rng)
    fit = G.fit(W, uniform(80))
    grad = G.grad_potential(fit)
    for i in (0, 40, 79):
        num = central_gradient(lambda w: float(G.potential(fit, w[None])[0]), W[i])
        assert np.linalg.norm(grad[i] - num) / np.linalg.norm(num) < 1e-6
    # The penalty's own gradient is not negligible here, so the check sees it.
    base = G.base.grad_potential(fit)
    assert np.linalg.norm(grad - base) > 1e-3 * np.linalg.norm(base)
