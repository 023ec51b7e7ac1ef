"""Distances between densities as densities: exact in 1-D (checked against POT on atoms), the same density at two
resolutions O(h^2) apart (not the h/4 of cell atoms), an exact conservative remap, and a floor that bounds what
comparing atoms costs."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
from scipy.special import erf

from mfld.validation.distances import (
    Cells,
    SlicedReference,
    common_refinement,
    exact_1d,
    measure_distance,
    subdivided,
)


def gaussian_cells(n: int, shifts: tuple[float, ...] = (0.0,), L: float = 6.0) -> Cells:
    """Cell averages (exact, by erf) of a product of Gaussians N(shift_j, 0.8^2) on [-L, L]^p, n cells per axis."""
    edges = np.linspace(-L, L, n + 1)
    masses = [np.diff(0.5 * (1 + erf((edges - s) / (0.8 * math.sqrt(2))))) for s in shifts]
    mass = masses[0]
    for m in masses[1:]:
        mass = np.multiply.outer(mass, m)
    return Cells.on(mass, (-L,) * len(shifts), (L,) * len(shifts))


def order(hs: list[float], errors: list[float]) -> float:
    return float(np.polyfit(np.log(hs), np.log(errors), 1)[0])


def test_the_1d_distance_is_pots_on_atoms(rng):
    for _ in range(5):
        a, b = rng.standard_normal(40), 0.3 + 1.5 * rng.standard_normal(65)
        qa, qb = rng.random(40), rng.random(65)
        w1, w2 = exact_1d(a, b, qa, qb)
        assert w1 == pytest.approx(float(ot.wasserstein_1d(a, b, qa / qa.sum(), qb / qb.sum(), p=1)), rel=1e-12)
        assert w2**2 == pytest.approx(float(ot.wasserstein_1d(a, b, qa / qa.sum(), qb / qb.sum(), p=2)), rel=1e-12)


def test_a_density_against_itself_on_a_finer_grid_is_second_order_and_atoms_are_first():
    """The cell averages of one density keep its CDF at the edges: W1 to a fine reference falls like h^2. As atoms
    at the cell centres the same densities are h/4 apart, whatever the solution."""
    ref = gaussian_cells(4096)
    ns = [32, 64, 128]
    exact = [measure_distance(gaussian_cells(n), ref)[0] for n in ns]
    hs = [12.0 / n for n in ns]
    assert order(hs, exact) == pytest.approx(2.0, abs=0.1), exact
    atoms = []
    for n in ns:
        c = gaussian_cells(n)
        atoms.append(float(ot.wasserstein_1d(c.centres()[:, 0], ref.centres()[:, 0], c.mass, ref.mass, p=1)))
    assert atoms == pytest.approx([h / 4 for h in hs], rel=0.01)


def test_the_remap_onto_the_common_refinement_is_exact_and_conservative():
    a, b = gaussian_cells(12, (0.0, 0.5)), gaussian_cells(20, (0.3, -0.2))
    ra, rb = common_refinement(a, b)
    assert ra.mass.shape == rb.mass.shape and ra.edges[0].size == np.union1d(a.edges[0], b.edges[0]).size
    assert ra.mass.sum() == pytest.approx(1.0, abs=1e-14) and rb.mass.sum() == pytest.approx(1.0, abs=1e-14)
    # Summing the refined cells that make up each original cell gives back its mass: the remap is exact.
    ia = [np.searchsorted(a.edges[k], 0.5 * (ra.edges[k][1:] + ra.edges[k][:-1])) - 1 for k in range(2)]
    back = np.zeros_like(a.mass)
    np.add.at(back, (ia[0][:, None], ia[1][None, :]), ra.mass)
    np.testing.assert_allclose(back, a.mass, rtol=0, atol=1e-15)


def test_in_two_dimensions_the_sliced_distance_across_resolutions_falls_faster_than_h():
    ref = gaussian_cells(160, (0.0, 0.5))
    ns = [10, 20, 40]
    rows = [measure_distance(gaussian_cells(n, (0.0, 0.5)), ref, np.random.default_rng(0), 100) for n in ns]
    assert order([12.0 / n for n in ns], [r[0] for r in rows]) > 1.8, rows
    assert all(0 < r[2] < r[0] for r in rows[:2])  # the floor is below what is measured at these sizes


def test_the_floor_bounds_what_atoms_at_the_common_cells_cost():
    """In 1-D, where the density's exact W1 is known: |W1(densities) - W1(atoms at the common cells' centres)| is
    at most sum |mass_a - mass_b| r (Kantorovich-Rubinstein: W1 depends on a - b only)."""
    for na, nb, shift in ((10, 14, 0.3), (33, 8, -1.0), (64, 64, 0.05)):
        a, b = gaussian_cells(na, (0.0,)), gaussian_cells(nb, (shift,))
        ra, rb = common_refinement(a, b)
        centres = ra.centres()[:, 0]
        atoms = float(ot.wasserstein_1d(centres, centres, ra.mass, rb.mass, p=1))
        floor = float(np.sum(np.abs(ra.mass - rb.mass) * ra.radii()))
        assert abs(exact_1d(a, b)[0] - atoms) <= floor


def test_particles_against_a_density_in_two_dimensions_say_their_floor(rng):
    c = gaussian_cells(24, (0.0, 0.0))
    points, weights = subdivided(c, 4)
    assert points.shape == (24 * 24 * 16, 2) and weights.sum() == pytest.approx(1.0)
    x = rng.standard_normal((4000, 2)) * 0.8
    w1, w2, floor = measure_distance((x, np.full(4000, 1 / 4000)), c, np.random.default_rng(0))
    assert floor == pytest.approx(math.sqrt(2 * (12 / 24) ** 2 / 12) / 4)
    assert 0 < w1 <= w2 < 0.1  # a sample of the same Gaussian: close, at the sample's own noise


def test_negative_masses_of_a_spectral_density_are_clipped_before_the_distance():
    mass = np.array([0.2, 0.5, 0.31, -0.01])
    c = Cells.on(mass, (0.0,), (4.0,))
    assert c.mass.min() == 0.0 and c.mass.sum() == pytest.approx(1.0)


def _sliced_by_pot(
    ref: SlicedReference, sample: np.ndarray, W: np.ndarray, q: np.ndarray | None
) -> tuple[float, float]:
    """The same sliced distances by POT, one direction at a time (its 1-D distance merges both measures)."""
    w1, w2 = [], []
    for theta in ref.directions.T:
        weights = None if q is None else q / q.sum()
        w1.append(float(ot.wasserstein_1d(W @ theta, sample @ theta, weights, None, p=1)))
        w2.append(float(ot.wasserstein_1d(W @ theta, sample @ theta, weights, None, p=2)))
    return float(np.mean(w1)), math.sqrt(float(np.mean(w2)))


@pytest.mark.parametrize(("N", "M"), [(37, 1000), (1000, 37), (64, 64), (5, 1)])
def test_the_reference_sample_gives_pots_sliced_distances_with_the_same_directions(rng, N, M):
    sample = rng.standard_normal((M, 3))
    sample[: M // 3] = sample[0]  # ties in the reference
    ref = SlicedReference(sample, rng, projections=6)
    W = 0.4 + 1.3 * rng.standard_normal((N, 3))
    W[N // 2 :] = W[0]  # and in the measure
    for q in (None, rng.random(N)):
        got, want = ref.distances(W, q), _sliced_by_pot(ref, sample, W, q)
        assert got == pytest.approx(want, rel=1e-11, abs=1e-13)


def test_a_translated_copy_of_the_reference_is_its_shift_along_each_direction(rng):
    sample = rng.standard_normal((5000, 2))
    ref = SlicedReference(sample, rng, projections=9)
    shift = np.array([0.3, -0.2])
    along = np.abs(shift @ ref.directions)
    w1, w2 = ref.distances(sample + shift)
    assert w1 == pytest.approx(float(np.mean(along)), rel=1e-10)
    assert w2 == pytest.approx(math.sqrt(float(np.mean(along**2))), rel=1e-10)
    w1, w2 = ref.distances(sample)
    # W2^2 is summed from differences of running sums of size E y^2: round-off of eps E y^2 on each of the N
    # pieces (the docstring's precision), here about 1e-12, i.e. 1e-6 in W2 itself.
    assert w1 < 1e-12 and w2**2 < sample.shape[0] * np.finfo(float).eps * float(np.mean(sample**2))


def test_the_reference_refuses_measures_of_another_dimension(rng):
    ref = SlicedReference(rng.standard_normal((10, 3)), rng)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        ref.distances(rng.standard_normal((4, 2)))
    with pytest.raises(ValueError, match="non-empty"):
        SlicedReference(np.zeros((0, 3)), rng)
