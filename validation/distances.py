"""Distances between two measures: weighted point sets (particles) or densities on tensor grids (:class:`Cells`).

    W_p(mu, nu) = (min over couplings pi of mu and nu of  integral ||w - w'||^p dpi)^(1/p)

A density is a measure with its mass spread uniformly over each cell, not a set of atoms at the cell
centres: taken as atoms, the same density on 64 and on 256 cells is h_64 / 4 apart in W1 whatever the
solution (cells measured, not solutions). So (:func:`measure_distance`):

- **p = 1, exact.** ``W_p^p = integral_0^1 |F_a^-1(t) - F_b^-1(t)|^p dt``; the quantile function of a density
  is piecewise linear (piecewise constant for atoms), so the integral is summed exactly over the merged
  breakpoints. The same smooth density on two grids is then O(h^2) apart (its cell averages keep F at the
  edges and interpolate it linearly between them).
- **p >= 2, sliced** (the mean over random directions theta of the 1-D distance of the projections, a lower
  bound that metrises the same convergence; POT's ``sliced_wasserstein_distance``). Two densities are
  first remapped, exactly and conservatively, onto the common refinement of their grids (the union of their
  edges on each axis) and compared as masses at its cells' centres; a density against particles is
  compared as masses at the centres of ``k^p`` sub-cells of each cell. Either way the W1 (and SW1) of the
  atoms differs from that of the densities by at most the **floor**
  ``sum_i |mass_a,i - mass_b,i| r_i`` (both densities; ``r_i`` = sqrt(sum_j h_ij^2 / 12) bounds the mean
  distance of a cell's uniform mass from its centre, by Kantorovich-Rubinstein duality W1 depends on a - b
  only) or ``max_i r_i / k`` (against atoms), which the compare table prints beside SW1. W2 has no such
  bound; it is reported without one.

The kernel distance is ``sup_{j,k} |k_mu(x_j, x_k) - k_nu(x_j, x_k)|`` on the training inputs, the
intrinsic kernels' Gram matrices ``S = H Q H^T`` (docs/theory.md §2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mfld.model.backend import chunks
from mfld.model.features import FeatureMap


def distance_names(p: int) -> tuple[str, str]:
    """What :func:`measure_distance` returns in dimension ``p``: W1, W2 (exact) for p = 1, SW1, SW2 (sliced) above."""
    return ("W1 (exact)", "W2 (exact)") if p == 1 else ("SW1 (sliced)", "SW2 (sliced)")


def wasserstein(
    Wa: np.ndarray,
    qa: np.ndarray | None,
    Wb: np.ndarray,
    qb: np.ndarray | None,
    rng: np.random.Generator | None = None,
    projections: int = 200,
) -> tuple[float, float]:
    """``(W1, W2)`` between ``sum_i qa_i delta_{Wa_i}`` and ``sum_i qb_i delta_{Wb_i}`` (None: uniform weights).

    Exact in one dimension, sliced over ``projections`` directions drawn from ``rng`` otherwise.
    """
    import ot

    if Wa.shape[1] != Wb.shape[1]:
        raise ValueError(f"the measures live in different dimensions: {Wa.shape[1]} and {Wb.shape[1]}")
    if Wa.shape[1] == 1:
        w1 = float(ot.wasserstein_1d(Wa[:, 0], Wb[:, 0], qa, qb, p=1))
        w2 = math.sqrt(float(ot.wasserstein_1d(Wa[:, 0], Wb[:, 0], qa, qb, p=2)))
        return w1, w2
    seed = int((rng or np.random.default_rng(0)).integers(2**31))
    kw = {"n_projections": projections, "seed": seed}
    w1 = float(ot.sliced_wasserstein_distance(Wa, Wb, qa, qb, p=1, **kw))
    w2 = float(ot.sliced_wasserstein_distance(Wa, Wb, qa, qb, p=2, **kw))
    return w1, w2


@dataclass(frozen=True)
class Cells:
    """A density on a tensor grid as a measure: ``mass`` (cells_1 x ... x cells_p, the mass of each cell, summing
    to 1) spread uniformly over each cell, whose edges on axis j are ``edges[j]``."""

    mass: np.ndarray
    edges: tuple[np.ndarray, ...]

    @classmethod
    def on(cls, mass: np.ndarray, lower: tuple[float, ...], upper: tuple[float, ...]) -> Cells:
        """Cells of equal size on the box ``[lower, upper]``; negative masses (a spectral density's undershoots)
        are set to 0 and the rest renormalised: a distance between measures needs measures."""
        mass = np.maximum(np.asarray(mass, dtype=float), 0.0)
        edges = tuple(np.linspace(lo, hi, n + 1) for lo, hi, n in zip(lower, upper, mass.shape, strict=True))
        return cls(mass / mass.sum(), edges)

    def centres(self) -> np.ndarray:
        mids = [0.5 * (e[1:] + e[:-1]) for e in self.edges]
        return np.stack([g.ravel() for g in np.meshgrid(*mids, indexing="ij")], axis=1)

    def radii(self) -> np.ndarray:
        """``sqrt(sum_j h_j^2 / 12)`` of each cell: the root-mean-square distance of its uniform mass from its
        centre, which bounds the mean distance."""
        widths = np.meshgrid(*[np.diff(e) for e in self.edges], indexing="ij")
        return np.sqrt(sum(w**2 for w in widths) / 12.0).ravel()


def _overlaps(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """``A[i, k]`` = the fraction of coarse cell k inside fine cell i (one axis; ``fine`` refines ``coarse``
    where they overlap)."""
    lo = np.maximum(fine[:-1, None], coarse[None, :-1])
    hi = np.minimum(fine[1:, None], coarse[None, 1:])
    return np.maximum(hi - lo, 0.0) / np.diff(coarse)[None, :]


def common_refinement(a: Cells, b: Cells) -> tuple[Cells, Cells]:
    """``a`` and ``b`` remapped onto the union of their edges on each axis: exact (a piecewise-constant density is
    one on any refinement of its cells) and conservative."""
    edges = tuple(np.union1d(ea, eb) for ea, eb in zip(a.edges, b.edges, strict=True))

    def remap(c: Cells) -> Cells:
        mass = c.mass
        for axis, (fine, coarse) in enumerate(zip(edges, c.edges, strict=True)):
            mass = np.moveaxis(np.tensordot(_overlaps(fine, coarse), mass, axes=([1], [axis])), 0, axis)
        return Cells(mass, edges)

    return remap(a), remap(b)


def subdivided(c: Cells, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(points, weights)``: each cell's mass split equally over the centres of its ``k^p`` equal sub-cells."""
    edges = tuple(np.linspace(e[:-1], e[1:], k + 1, axis=1)[:, :-1].ravel() for e in c.edges)
    fine = tuple(np.append(e, c_e[-1]) for e, c_e in zip(edges, c.edges, strict=True))
    mass = c.mass
    for axis in range(mass.ndim):
        mass = np.repeat(mass, k, axis=axis) / k
    return Cells(mass, fine).centres(), mass.ravel()


def _quantile(measure: np.ndarray | Cells, weights: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(c, lo, hi)``: the quantile function of a 1-D measure as pieces ``[c_i, c_i+1]`` on which it runs linearly
    from ``lo_i`` to ``hi_i`` (a cell's edges; an atom's position twice)."""
    if isinstance(measure, Cells):
        e = measure.edges[0]
        mass, lo, hi = measure.mass.ravel(), e[:-1], e[1:]
    else:
        x = measure.ravel()
        mass = np.full(x.size, 1.0 / x.size) if weights is None else np.maximum(np.asarray(weights, float), 0.0)
        order = np.argsort(x, kind="stable")
        mass, lo = mass[order], x[order]
        hi = lo
    c = np.minimum(np.concatenate([[0.0], np.cumsum(mass / mass.sum())]), 1.0)  # round-off must not pass 1
    c[-1] = 1.0
    return c, lo, hi


def exact_1d(
    a: np.ndarray | Cells, b: np.ndarray | Cells, qa: np.ndarray | None = None, qb: np.ndarray | None = None
) -> tuple[float, float]:
    """``(W1, W2)`` between two 1-D measures, atoms (positions and weights ``q``; None: equal) or :class:`Cells`,
    exactly: the integral of ``|F_a^-1 - F_b^-1|`` (and its square) over the merged breakpoints, on each of which
    the difference is linear."""
    pieces = [_quantile(a, qa), _quantile(b, qb)]
    t = np.union1d(pieces[0][0], pieces[1][0])
    t0, t1 = t[:-1], t[1:]
    keep = t1 > t0
    t0, t1 = t0[keep], t1[keep]
    mid = 0.5 * (t0 + t1)
    ends = []
    for c, lo, hi in pieces:
        i = np.clip(np.searchsorted(c, mid, side="right") - 1, 0, lo.size - 1)
        width = c[i + 1] - c[i]  # 0 only where an interval of round-off size put mid on a breakpoint
        slope = np.divide(hi[i] - lo[i], width, out=np.zeros_like(width), where=width > 0)
        ends.append((lo[i] + slope * (t0 - c[i]), lo[i] + slope * (t1 - c[i])))
    g0, g1 = ends[0][0] - ends[1][0], ends[0][1] - ends[1][1]
    dt = t1 - t0
    a0, a1 = np.abs(g0), np.abs(g1)
    crossing = g0 * g1 < 0  # the difference changes sign inside: two triangles
    w1 = np.where(crossing, dt * (g0**2 + g1**2) / (2 * np.where(crossing, a0 + a1, 1.0)), 0.5 * (a0 + a1) * dt)
    w2 = dt * (g0**2 + g0 * g1 + g1**2) / 3.0
    return float(np.sum(w1)), math.sqrt(max(float(np.sum(w2)), 0.0))


SUBCELLS = {1: 1, 2: 4, 3: 2}
"""Sub-cells per axis of a density compared against particles in p dimensions (p = 3: 8 atoms a cell)."""


def _sliced_common(
    points: np.ndarray, qa: np.ndarray, qb: np.ndarray, rng: np.random.Generator | None, projections: int
) -> tuple[float, float]:
    """Sliced ``(SW1, SW2)`` of two weightings of the same points (directions uniform on the sphere, drawn from
    ``rng``): on each direction one sort serves both measures, and W1 is ``sum |F_a - F_b| dx`` over the sorted
    projections (POT's sliced distance sorts each measure apart, which costs most of the time at 10^5 cells)."""
    rng = rng or np.random.default_rng(0)
    directions = rng.standard_normal((points.shape[1], projections))
    directions /= np.linalg.norm(directions, axis=0)
    w1 = w2 = 0.0
    for theta in directions.T:
        x = points @ theta
        order = np.argsort(x, kind="stable")
        xs, gap = x[order], np.cumsum(qa[order] - qb[order])[:-1]
        w1 += float(np.sum(np.abs(gap) * np.diff(xs)))
        w2 += exact_1d(xs, xs, qa[order], qb[order])[1] ** 2
    return w1 / projections, math.sqrt(w2 / projections)


def measure_distance(
    a: tuple[np.ndarray, np.ndarray] | Cells,
    b: tuple[np.ndarray, np.ndarray] | Cells,
    rng: np.random.Generator | None = None,
    projections: int = 200,
) -> tuple[float, float, float]:
    """``(W1, W2, floor)`` between two measures, each particles ``(points, weights)`` or a density (:class:`Cells`):
    exact in one dimension (floor 0), sliced above, with the floor of the module docstring."""

    def atoms(m: tuple[np.ndarray, np.ndarray] | Cells) -> tuple[np.ndarray, np.ndarray]:
        return m if not isinstance(m, Cells) else subdivided(m, SUBCELLS[m.mass.ndim])

    dim = a.mass.ndim if isinstance(a, Cells) else a[0].shape[1]
    if dim == 1:
        pa = a if isinstance(a, Cells) else a[0][:, 0]
        pb = b if isinstance(b, Cells) else b[0][:, 0]
        w1, w2 = exact_1d(pa, pb, None if isinstance(a, Cells) else a[1], None if isinstance(b, Cells) else b[1])
        return w1, w2, 0.0
    if isinstance(a, Cells) and isinstance(b, Cells):
        ra, rb = common_refinement(a, b)
        floor = float(np.sum(np.abs(ra.mass - rb.mass).ravel() * ra.radii()))
        w1, w2 = _sliced_common(ra.centres(), ra.mass.ravel(), rb.mass.ravel(), rng, projections)
        return w1, w2, floor
    densities = [m for m in (a, b) if isinstance(m, Cells)]
    floor = max((float(np.max(m.radii())) / SUBCELLS[dim] for m in densities), default=0.0)
    (Wa, qa), (Wb, qb) = atoms(a), atoms(b)
    w1, w2 = wasserstein(Wa, qa, Wb, qb, rng, projections)
    return w1, w2, floor


class SlicedReference:
    """A large sample ``nu_M = (1/M) sum_k delta_{y_k}`` made ready for sliced distances to many measures.

    Along each of ``projections`` directions theta (uniform on the sphere, drawn once from ``rng``) the sample's
    projections are sorted once, with the running integrals of its quantile function ``G^-1`` (``y_(k)`` on
    ``[k/M, (k+1)/M)``, sorted from k = 0): ``Phi(t) = int_0^t G^-1(s) ds`` and ``Psi(t) = int_0^t G^-1(s)^2 ds``,
    piecewise linear in t. On the piece ``[a, b]`` of a measure ``sum_i q_i delta_{x_i}``'s quantile function
    where it equals ``x``, with ``s* = clip(G(x), a, b)`` (G^-1 < x below s*, >= x above; G^-1 is non-decreasing),

        int_a^b |x - G^-1| ds   = x (2 s* - a - b) - 2 Phi(s*) + Phi(a) + Phi(b)
        int_a^b (x - G^-1)^2 ds = x^2 (b - a) - 2 x (Phi(b) - Phi(a)) + Psi(b) - Psi(a)

    and summed over the pieces these are W1 and W2^2 of the projections, exactly (W2^2 up to round-off of about
    N eps E[y^2], from the differences of running sums: SW2 of the sample against itself is ~1e-7). A call
    costs O(N log M) per direction for N points; POT's sliced distance sorts both measures every call (5 to 7 s
    with M = 10^5 and 50 directions), which made more than 10^4 draws too slow for the crosscheck's 2752 calls.
    The directions are the same on every call: the distances of many measures to one reference are then one
    sliced metric, not each a fresh random estimate of it.
    """

    def __init__(self, sample: np.ndarray, rng: np.random.Generator, projections: int = 50) -> None:
        if sample.ndim != 2 or sample.shape[0] < 1:
            raise ValueError(f"the reference sample must be a non-empty (M, p) array, got shape {sample.shape}")
        directions = rng.standard_normal((sample.shape[1], projections))
        self.directions = directions / np.linalg.norm(directions, axis=0)
        self.size = sample.shape[0]
        self.sorted = np.sort((sample @ self.directions).T, axis=1)  # projections x M
        zero = np.zeros((projections, 1))
        self._sums = np.concatenate([zero, np.cumsum(self.sorted, axis=1)], axis=1) / self.size
        self._squares = np.concatenate([zero, np.cumsum(self.sorted**2, axis=1)], axis=1) / self.size

    def _integrals(self, d: int, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(Phi(t), Psi(t))`` along direction d, for t in [0, 1]."""
        k = np.minimum((t * self.size).astype(np.int64), self.size - 1)
        rest, y = t - k / self.size, self.sorted[d, k]
        return self._sums[d, k] + rest * y, self._squares[d, k] + rest * y * y

    def distances(self, W: np.ndarray, q: np.ndarray | None = None) -> tuple[float, float]:
        """``(SW1, SW2)`` between ``sum_i q_i delta_{W_i}`` (None: equal weights) and the sample: the mean over the
        directions of W1, and the root of the mean of W2^2."""
        if W.ndim != 2 or W.shape[1] != self.directions.shape[0]:
            raise ValueError(f"points must have shape (N, {self.directions.shape[0]}), got {W.shape}")
        weights = np.full(W.shape[0], 1.0 / W.shape[0]) if q is None else np.asarray(q, float) / np.sum(q)
        projected = W @ self.directions
        w1 = w2 = 0.0
        for d in range(self.directions.shape[1]):
            order = np.argsort(projected[:, d], kind="stable")
            x = projected[order, d]
            c = np.minimum(np.concatenate([[0.0], np.cumsum(weights[order])]), 1.0)
            c[-1] = 1.0
            a, b = c[:-1], c[1:]
            s = np.clip(np.searchsorted(self.sorted[d], x, side="left") / self.size, a, b)
            phi, psi = self._integrals(d, c)  # at every breakpoint once: a piece's end is the next one's start
            phi_a, phi_b, psi_a, psi_b = phi[:-1], phi[1:], psi[:-1], psi[1:]
            phi_s = self._integrals(d, s)[0]
            w1 += float(np.sum(x * (2 * s - a - b) - 2 * phi_s + phi_a + phi_b))
            w2 += float(np.sum(x * x * (b - a) - 2 * x * (phi_b - phi_a) + psi_b - psi_a))
        count = self.directions.shape[1]
        return w1 / count, math.sqrt(max(w2 / count, 0.0))


def gram(feature: FeatureMap, X: np.ndarray, W: np.ndarray, q: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """``S = h(X; W) diag(q) h(X; W)^T``, the intrinsic kernel on the inputs ``X``, in chunks of points."""
    S = np.zeros((X.shape[0], X.shape[0]))
    for sl in chunks(W.shape[0], chunk):
        H = feature(X, W[sl])
        S += (H * q[sl]) @ H.T
    return S


def kernel_distance(
    feature: FeatureMap, X: np.ndarray, Wa: np.ndarray, qa: np.ndarray, Wb: np.ndarray, qb: np.ndarray
) -> float:
    """``sup_{j,k} |k_a(x_j, x_k) - k_b(x_j, x_k)|`` on the inputs ``X``."""
    return float(np.max(np.abs(gram(feature, X, Wa, qa) - gram(feature, X, Wb, qb))))
