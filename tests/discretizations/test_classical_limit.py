"""docs/theory.md §7 (THEORY.md §7): the classical objective's stationary measure P* on theta = (a, w) has the
two-timescale optimum mu* as its w-marginal and ``a | w ~ N(a_mu*(w), I_T / lam_a)``, whatever the second
layer's speed. Checked on grids, both stationary measures solved directly (the proximal Gibbs fixed point)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mfld.discretizations.mesh import Grid
from mfld.discretizations.stationary import solve_stationary
from mfld.model.classical import ClassicalFunctional
from mfld.model.two_timescale import TwoTimescaleFunctional
from mfld.validation.problems import low_dim_problem


@pytest.mark.parametrize("cells", [16, 32, 64])  # three resolutions: the distance does not depend on h
def test_the_classical_optimum_is_the_two_timescale_one_with_a_gaussian_second_layer(cells):
    """On the grids the identity is exact, not O(h^2): the a-quadrature of a Gaussian on cells finer than its
    standard deviation is exact to round-off, and the two solves share the w cells. What is left is the solvers'
    own distance to their fixed points, which Pinsker's inequality bounds by their certificates:
    ``|m - m*|_1 <= sqrt(2 KL) <= sqrt(2 certificate / lam)``. Measured: 6e-8 at 48, 96 and 192 cells alike."""
    pb = low_dim_problem(1, lam=0.05)  # tanh without bias, d = 1, T = 1: theta = (a, w) is a 2-D grid
    w_grid = Grid.box(6.0, cells, 1)
    star = solve_stationary(TwoTimescaleFunctional(pb), w_grid, tol=1e-15)
    # a ~ N(a_mu(w), 1 / lam_a): a box of +-10 leaves a tail below 1e-20 of the mass for |a_mu| < 1.
    grid = Grid((-10.0, -6.0), (10.0, 6.0), (2 * cells, cells))
    P = solve_stationary(ClassicalFunctional(pb), grid, tol=1e-15)
    assert star.converged and P.converged
    bound = math.sqrt(2 * star.certificate / pb.lam) + math.sqrt(2 * P.certificate / pb.lam)

    density = P.density.reshape(grid.shape)
    h_a, a = grid.spacing[0], grid.axes()[0]
    marginal = density.sum(axis=0) * h_a
    mu = star.density.ravel()
    assert np.abs(marginal - mu).sum() * w_grid.spacing[0] <= bound

    conditional = density / marginal[None, :] * h_a  # a | w, one column per w cell
    mean = a @ conditional
    var = ((a[:, None] - mean[None, :]) ** 2 * conditional).sum(axis=0)
    F = TwoTimescaleFunctional(pb)
    points = w_grid.centers()
    a_star = F.second_layer(F.fit(points, mu * w_grid.cell_volume, F.features(points))).ravel()
    weights = mu * w_grid.cell_volume
    # E_mu |mean - a_mu*| <= (largest |a| in the box) x the L1 distance of the two solutions
    assert weights @ np.abs(mean - a_star) <= 10.0 * bound
    np.testing.assert_allclose(var, 1.0 / pb.lam_a, rtol=1e-12)


def _classical(rate: float) -> ClassicalFunctional:
    from mfld.model.classical import ClassicalOptions

    return ClassicalFunctional(low_dim_problem(1, lam=0.05), options=ClassicalOptions(second_layer_rate=rate))


def test_a_mobility_scales_each_axis_rates_and_keeps_the_gibbs_density():
    """``d_t m = div(D (lam grad m + m grad V))`` on the finite volumes: the rates along axis k times ``D_k``, the
    Gibbs density of a frozen V still in the kernel, columns still summing to 0."""
    from mfld.discretizations.scharfetter_gummel import Mobile, fokker_planck_matrix, rates

    rng = np.random.default_rng(0)
    grid = Grid((-2.0, -1.0), (2.0, 1.0), (7, 5))
    V, lam = rng.standard_normal(grid.size), 0.3
    A = fokker_planck_matrix(Mobile(grid, (4.0, 1.0)), V, lam).toarray()
    plain = fokker_planck_matrix(grid, V, lam).toarray()
    a0, _ = rates(grid, V, lam, 0)
    a0_mobile, _ = rates(Mobile(grid, (4.0, 1.0)), V, lam, 0)
    np.testing.assert_allclose(a0_mobile, 4.0 * a0, rtol=1e-14)
    np.testing.assert_allclose(A.sum(axis=0), 0.0, atol=1e-12 * np.abs(A).max())
    gibbs = np.exp(-(V - V.min()) / lam)
    assert np.abs(A @ gibbs).max() <= 1e-12 * np.abs(A).max() * gibbs.max()
    assert not np.allclose(A, plain)


def test_the_second_layer_rate_speeds_the_a_coordinates_of_a_particle_step():
    """One Euler-Maruyama step: ``Delta a = r eta b_a + sqrt(r) sqrt(2 eta lam) xi_a``, ``Delta w`` unchanged."""
    from mfld.discretizations.particles import Particles

    W0 = np.random.default_rng(1).standard_normal((40, 2))
    steps = {}
    for rate, langevin in ((1.0, False), (1.0, True), (4.0, True)):
        system = Particles(_classical(rate), W0.copy(), 0.05, 7, langevin=langevin)
        system.step()
        steps[rate, langevin] = system.positions - W0
    drift = steps[1.0, False]
    noise = steps[1.0, True] - drift
    np.testing.assert_allclose(steps[4.0, True][:, 0], 4.0 * drift[:, 0] + 2.0 * noise[:, 0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(steps[4.0, True][:, 1], steps[1.0, True][:, 1], rtol=1e-12, atol=1e-14)


def test_an_unstable_second_layer_step_is_refused_by_its_keys():
    from mfld.discretizations.particles import Particles

    with pytest.raises(ValueError, match=r"model.second_layer_rate = 1000 is unstable .* use time.eta < "):
        Particles(_classical(1000.0), np.zeros((4, 2)), 0.5, 0)


def test_the_stationary_measure_does_not_depend_on_the_rate():
    """THEORY.md §7: P* = p_{P*} for every r. The finite-volume dynamics at r = 1 and r = 8, run with adaptive
    steps to a certificate of 1e-11, end at the same density (within the certificates' Pinsker bound)."""
    from mfld.discretizations import loop
    from mfld.discretizations.adaptive import StepControl
    from mfld.discretizations.grid import FiniteVolume
    from mfld.discretizations.mesh import gaussian_density

    grid = Grid((-10.0, -6.0), (10.0, 6.0), (40, 24))
    ends = []
    for rate in (1.0, 8.0):
        F = _classical(rate)
        fv = FiniteVolume(F, grid, gaussian_density(grid, [0.0, 0.0], np.eye(2)), 0.01, control=StepControl(0.02, 50))
        rec = loop.Recorder(lambda s: {"certificate": s.diagnostics()["certificate"]}, 1, record_start=False)
        loop.run(fv, until=1e4, observers=[rec], stop=loop.below(rec, "certificate", 1e-11))
        ends.append((fv.density, rec.latest["certificate"]))
    (m1, c1), (m8, c8) = ends
    bound = math.sqrt(2 * c1 / 0.05) + math.sqrt(2 * c8 / 0.05)
    assert np.abs(m1 - m8).sum() * grid.cell_volume <= bound


def test_rate_one_is_the_classical_dynamics_bit_for_bit():
    """``second_layer_rate = 1`` applies no mobility: finite-volume and particle steps equal those of the classical
    objective built without the option, bit for bit."""
    from mfld.discretizations.grid import FiniteVolume
    from mfld.discretizations.mesh import gaussian_density
    from mfld.discretizations.particles import Particles

    plain = ClassicalFunctional(low_dim_problem(1, lam=0.05))
    grid = Grid((-10.0, -6.0), (10.0, 6.0), (20, 12))
    m0 = gaussian_density(grid, [0.0, 0.0], np.eye(2))
    W0 = np.random.default_rng(2).standard_normal((30, 2))
    ends = []
    for F in (plain, _classical(1.0)):
        fv, p = FiniteVolume(F, grid, m0, 0.1), Particles(F, W0.copy(), 0.05, 3)
        for _ in range(3):
            fv.step()
            p.step()
        ends.append((fv.density, p.positions))
    assert np.array_equal(ends[0][0], ends[1][0]) and np.array_equal(ends[0][1], ends[1][1])


# A step of 1e3 lands near the Gibbs density of the frozen initial potential, whose second layer sits at the box's
# edge (a_mu / (lam lam_a) is large): the box warning is right, and the scheme must still keep mass and sign.
@pytest.mark.filterwarnings("ignore::mfld.discretizations.mesh.BoxWarning")
@pytest.mark.parametrize("eta", [1e-3, 1.0, 1e3])
def test_a_fast_second_layer_keeps_mass_and_positivity_at_any_step(eta):
    """The rate-r finite volumes are the plain operator of rescaled spacings (an M-matrix step): mass to 1e-12 and
    no negative density, from a step far below the second layer's time scale 1 / (r lam lam_a) to far above."""
    from mfld.discretizations.grid import FiniteVolume
    from mfld.discretizations.mesh import gaussian_density

    grid = Grid((-10.0, -6.0), (10.0, 6.0), (24, 16))
    fv = FiniteVolume(_classical(256.0), grid, gaussian_density(grid, [1.0, 0.5], np.eye(2)), eta)
    for _ in range(5):
        fv.step()
        assert abs(fv.density.sum() * grid.cell_volume - 1.0) <= 1e-12
        assert fv.density.min() >= 0.0
