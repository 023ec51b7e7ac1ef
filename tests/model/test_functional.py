"""The two-timescale and classical functionals against their definitions (docs/theory.md §2, §6)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import one_sided_derivative, small_problem
from mfld.discretizations.particles import euler_maruyama
from mfld.model.classical import ClassicalFunctional
from mfld.model.features import FEATURE_MAPS, RidgeFeature
from mfld.model.functional import OBJECTIVES, GradientDrift
from mfld.model.observables import degrees_of_freedom, kernel_alignment
from mfld.model.two_timescale import TwoTimescaleFunctional


def central_gradient(f, x: np.ndarray, h: float = 1e-5) -> np.ndarray:
    g = np.empty_like(x)
    for k in range(x.size):
        e = np.zeros_like(x)
        e[k] = h
        g[k] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def uniform(N: int) -> np.ndarray:
    return np.full(N, 1.0 / N)


@pytest.mark.parametrize("name", sorted(FEATURE_MAPS))
def test_feature_gradient_matches_finite_differences(name, rng):
    fm = FEATURE_MAPS[name]
    X = rng.standard_normal((7, 3))
    w = rng.standard_normal(fm.dim(3)) * 0.7
    Xa = fm.augment(X)
    C, A = rng.standard_normal((7, 2)), rng.standard_normal((1, 2))
    Z, H = fm.evaluate(Xa, w[None])
    analytic = fm.contract_grad(Xa, w[None], Z, H, C, A)[0]
    numeric = central_gradient(lambda v: float(C @ A[0] @ fm(X, v[None])[:, 0]), w)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-9)
    # The full contraction with M = C A^T is the same sum.
    np.testing.assert_allclose(fm.pullback(Xa, w[None], Z, H, C @ A.T)[0], analytic, rtol=1e-12)


@pytest.mark.parametrize("name", sorted(n for n, fm in FEATURE_MAPS.items() if isinstance(fm, RidgeFeature)))
def test_a_ridge_derivative_from_its_values_equals_the_derivative(name, rng):
    """Only what the FeatureMap protocol names is asked of every map (above); a ridge map's derivative from its
    values (tanh: 1 - h^2) is its own shortcut."""
    fm = FEATURE_MAPS[name]
    Z = rng.standard_normal((7, 4)) * 2.0
    np.testing.assert_allclose(fm.derivative(Z, fm.values(Z)), fm.derivative(Z), rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("feature", ["tanh_bias", "tanh", "sigmoid_bias", "erf", "softplus_bias", "cos_bias"])
@pytest.mark.parametrize("N", [80, 12])  # dual solve on the n side (N >= n = 30), then on the N side
@pytest.mark.parametrize("T", [1, 2])
def test_grad_potential_matches_finite_differences(feature, N, T, rng):
    pb = small_problem(feature, T=T)
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(N, rng)
    fit = F.fit(W, uniform(N))
    assert fit.side == ("n" if N >= pb.n else "N")
    G = F.grad_potential(fit)
    for i in (0, N // 2, N - 1):
        num = central_gradient(lambda w: float(F.potential(fit, w[None])[0]), W[i])
        err = np.linalg.norm(G[i] - num) / np.linalg.norm(num)
        assert err < 1e-6, (i, err)


@pytest.mark.parametrize("N", [80, 12])
def test_first_variation_is_the_directional_derivative_of_U(N, rng):
    """dU/dmu(w) - E_mu dU/dmu = d/de U((1-e) mu + e delta_w) at e = 0."""
    pb = small_problem("tanh_bias", T=2)
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(N, rng)
    q = uniform(N)
    fit = F.fit(W, q)
    dU = F.first_variation_U(fit)
    for w in (pb.sample_prior(1, rng), W[:1] * 0.5):
        P = np.concatenate([W, w])

        def U(e, P=P):
            return F.fit(P, np.concatenate([(1 - e) * q, [e]])).U

        deriv = one_sided_derivative(U)
        expected = float(F.first_variation_U(fit, w)[0] - q @ dU)
        assert abs(deriv - expected) < 1e-6 * max(1.0, abs(expected))


@pytest.mark.parametrize("N", [80, 12])
def test_U_is_invariant_under_splitting_particles(N, rng):
    pb = small_problem("tanh_bias", T=2)
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(N, rng)
    a = F.fit(W, uniform(N))
    b = F.fit(np.concatenate([W, W]), uniform(2 * N))
    assert abs(a.U - b.U) < 1e-12 * abs(a.U)
    np.testing.assert_allclose(F.grad_potential(a), F.grad_potential(b)[:N], rtol=1e-10, atol=1e-13)


def test_n_side_and_N_side_agree(rng):
    pb = small_problem("tanh_bias", n=30, T=2)
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(20, rng)
    q = rng.random(20)
    q /= q.sum()
    fN = F._fit_N_side(W, q, pb.Y)
    fn = F._fit_n_side(W, q, None, pb.Y)
    assert fN.side == "N" and fn.side == "n"
    np.testing.assert_allclose(fN.coef, fn.coef, rtol=1e-10)
    assert abs(fN.U - fn.U) < 1e-12 * fn.U
    assert abs(degrees_of_freedom(F, fN) - degrees_of_freedom(F, fn)) < 1e-9
    assert abs(kernel_alignment(F, fN) - kernel_alignment(F, fn)) < 1e-12
    np.testing.assert_allclose(F.grad_potential(fN), F.grad_potential(fn), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("feature, arrays", [("tanh_bias", 1), ("erf_bias", 2)])
def test_chunked_evaluation_matches_single_chunk(feature, arrays, rng):
    """A chunk's features are one n x chunk array where the cache is the values (tanh), two where the
    pre-activations are kept beside them (erf); the budget counts them."""
    pb = small_problem(feature, T=1)
    W = pb.sample_prior(500, rng)
    q = uniform(500)
    whole = TwoTimescaleFunctional(pb)
    tiny = TwoTimescaleFunctional(pb, memory_budget=arrays * 8 * pb.n * 37)  # 37 particles per chunk
    assert tiny.feature_arrays == arrays and tiny.chunk_size(pb.n) == 37
    a, b = whole.fit(W, q), tiny.fit(W, q)
    assert a.H is not None and b.H is None
    assert abs(a.U - b.U) < 1e-13 * a.U
    np.testing.assert_allclose(whole.grad_potential(a), tiny.grad_potential(b), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(whole.predict(a, pb.X_test), tiny.predict(b, pb.X_test), rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("method", ["cholesky", "pcg"])
def test_chunked_evaluation_keeps_one_chunk_of_temporaries_alive(rng, method, monkeypatch):
    """``memory_budget`` bounds the features of a chunk (tanh: one n x chunk array) alive at any time in a fit, a
    drift and a prediction, and the passes over it add at most four cache blocks' temporaries (here blocks of a
    tenth of a chunk: a product's output before it lands in its block's view, the derivative or the weighted copy,
    their products). Before, each chunk held three n x chunk arrays, and the Gram pass kept the previous chunk's
    alive beside the next one's; a view of a block left in a name keeps its whole chunk alive too."""
    import tracemalloc

    from mfld.model import backend
    from mfld.model.two_timescale import DualSolve

    pb = small_problem("tanh_bias", n=100, d=6)
    chunk = 2000  # 1.6 MB: the n x n arrays (80 kB each) are not what is measured
    one = 8 * pb.n * chunk
    monkeypatch.setattr(backend, "CACHE_BLOCK_BYTES", one // 10)
    F = TwoTimescaleFunctional(pb, memory_budget=one, solve=DualSolve(method))
    assert F.chunk_size(pb.n) == chunk
    W, q = pb.sample_prior(10 * chunk, rng), uniform(10 * chunk)
    F.fit(W, q)  # pcg: its first fit is exact; the next is iterative
    outputs = {"fit": 0, "grad_potential": W.nbytes, "predict": 8 * pb.X_test.shape[0] * pb.T}
    fit, moved = None, W + 1e-3
    for what in outputs:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        if what == "fit":
            fit = F.fit(moved, q)
        elif what == "grad_potential":
            F.grad_potential(fit)
        else:
            F.predict(fit, pb.X_test)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        # The n x n system, the dual coefficients and the outputs are not chunk temporaries.
        assert (peak - outputs[what] - 2 * 8 * pb.n * pb.n) / one <= 1.4 + 0.01, f"{what}: {peak / one:.2f} chunks"


@pytest.mark.parametrize("method", ["cholesky", "pcg"])
def test_the_N_side_fit_keeps_to_the_memory_budget_and_its_numbers(rng, method):
    """Issue 37: with fewer particles than samples the n x N features were formed whole whatever the budget (233 MiB
    peak under 1 MiB). Now by chunks of samples: the fit's peak, less its N x N system and n x T outputs, is at
    most one chunk of features (and a copy); its numbers are the whole-feature fit's to round-off."""
    import tracemalloc

    from mfld.model.two_timescale import DualSolve

    pb = small_problem("tanh_bias", n=20000, d=6)
    N = 60
    budget = 8 * 2000 * N  # a chunk of 2000 of the 20000 samples
    whole, chunked = TwoTimescaleFunctional(pb), TwoTimescaleFunctional(pb, budget, solve=DualSolve(method))
    W, q = pb.sample_prior(N, rng), uniform(N)
    chunked.fit(W - 1e-3, q)  # what a first call imports (SciPy's triangular solves) is not the fit's
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    fit = chunked.fit(W, q)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert fit.side == "N" and fit.H is None
    outputs = 4 * 8 * pb.n * pb.T + 3 * 8 * N * N  # C, pred, Y slices; the N x N system and its factor
    assert (peak - outputs) / budget <= 2.0 + 0.01, f"{peak / budget:.2f} chunks (the whole features: 10)"
    reference = whole.fit(W, q)
    np.testing.assert_allclose(fit.coef, reference.coef, rtol=1e-9, atol=1e-12 * np.abs(reference.coef).max())
    assert fit.U == pytest.approx(reference.U, rel=1e-10)
    np.testing.assert_allclose(chunked.grad_potential(fit), whole.grad_potential(reference), rtol=1e-8, atol=1e-12)


def test_prediction_identities(rng):
    """f_mu(X) = S c = Y - n lam_a_bar c and predict() reproduces it at the training inputs."""
    pb = small_problem("tanh_bias", T=2)
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(60, rng)
    fit = F.fit(W, uniform(60))
    np.testing.assert_allclose(fit.gram @ fit.coef, fit.pred, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(F.predict(fit, pb.X), fit.pred, rtol=1e-10, atol=1e-12)
    S = fit.gram
    r = pb.n * pb.lam_a_bar
    df = np.trace(S @ np.linalg.inv(S + r * np.eye(pb.n)))
    assert abs(degrees_of_freedom(F, fit) - df) < 1e-9
    A = np.trace(pb.Y.T @ S @ pb.Y) / (np.sum(pb.Y**2) * np.linalg.norm(S))
    assert abs(kernel_alignment(F, fit) - A) < 1e-12 and 0 <= A <= 1


def test_noiseless_step_is_gradient_descent(rng):
    pb = small_problem("tanh_bias")
    F = TwoTimescaleFunctional(pb)
    W = pb.sample_prior(50, rng)
    q = uniform(50)
    eta = 0.3
    expected = W - eta * F.grad_potential(F.fit(W, q))
    drift = GradientDrift(F)
    np.testing.assert_array_equal(euler_maruyama(W, q, drift, eta, pb.lam, None, 1), expected)
    # The noise enters as sqrt(2 eta lam) xi.
    xi = rng.standard_normal(W.shape)
    noisy = euler_maruyama(W, q, drift, eta, pb.lam, xi, 1)
    np.testing.assert_allclose(noisy, expected + np.sqrt(2 * eta * pb.lam) * xi)


def _classical_losses() -> list[str]:
    """The classical objective and every registered one that only changes its loss (docs/examples/extensions.patch
    adds the pseudo-Huber loss)."""
    return [
        name for name, make in OBJECTIVES.items() if isinstance(make, type) and issubclass(make, ClassicalFunctional)
    ]


@pytest.mark.parametrize("objective", _classical_losses())
@pytest.mark.parametrize("T", [1, 2])
def test_classical_gradient_matches_finite_differences(T, objective, rng):
    pb = small_problem("tanh_bias", T=T)
    F = OBJECTIVES[objective](pb)
    N = 40
    Theta = np.concatenate([rng.standard_normal((N, T)), pb.sample_prior(N, rng)], axis=1)
    fit = F.fit(Theta, uniform(N))
    G = F.grad_potential(fit)
    for i in (0, N - 1):
        num = central_gradient(lambda th: float(F.potential(fit, th[None])[0]), Theta[i])
        assert np.linalg.norm(G[i] - num) / np.linalg.norm(num) < 1e-6


@pytest.mark.parametrize("objective", _classical_losses())
def test_classical_first_variation_is_directional_derivative(objective, rng):
    pb = small_problem("tanh_bias", T=1)
    F = OBJECTIVES[objective](pb)
    N = 40
    Theta = np.concatenate([rng.standard_normal((N, 1)), pb.sample_prior(N, rng)], axis=1)
    q = uniform(N)
    fit = F.fit(Theta, q)
    V = F.potential(fit)
    th = Theta[:1] * 0.3
    P = np.concatenate([Theta, th])

    def G(e):
        return F.energy(F.fit(P, np.concatenate([(1 - e) * q, [e]])))["G"]

    deriv = one_sided_derivative(G)
    assert abs(deriv - float(F.potential(fit, th)[0] - q @ V)) < 1e-6


def test_an_evaluation_without_the_entropy_refuses_the_objective_instead_of_nan():
    from mfld.model.observables import Evaluation, evaluate

    pb = small_problem("tanh_bias")
    F = TwoTimescaleFunctional(pb)
    fit = F.fit(pb.sample_prior(50, np.random.default_rng(0)), np.full(50, 1 / 50))
    assert set(evaluate(Evaluation(F, fit), ["U", "kernel_alignment"])) == {"U", "kernel_alignment"}
    with pytest.raises(ValueError, match=r"need Ent\(mu\).*entropy=system.entropy\(\)"):
        evaluate(Evaluation(F, fit), ["objective"])
    assert np.isfinite(evaluate(Evaluation(F, fit, entropy=1.5), ["objective"])["objective"])
