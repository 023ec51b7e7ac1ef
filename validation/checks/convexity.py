"""Convexity of the limiting functional G (docs/theory.md §4.1, Theorem 3.1).

For pairs of measures ``mu0, mu1`` (grid densities and particle sets, several
feature maps, with and without label noise) this checks

* convexity along the linear interpolation ``mu_s = (1 - s) mu0 + s mu1``:
  ``G(mu_s) <= (1 - s) G(mu0) + s G(mu1)``;
* the linearisation inequality ``G(mu1) + <dG/dmu(mu1), mu2 - mu1> <= G(mu2)``;

and reports the worst violation relative to ``|G|``. The contrast: the finite-N
loss ``W -> G(mu_W)`` as a function of the particle positions, along
``W_s = (1 - s) W0 + s W1``, is not convex, and violations are found.
"""

from __future__ import annotations

import numpy as np

from mfld.discretizations.mesh import Grid
from mfld.model.datasets import make_dataset
from mfld.model.functional import Functional
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional

from ..report import Report

FEATURES = ("tanh", "tanh_bias", "sigmoid_bias", "erf_bias", "softplus_bias", "cos_bias")


def _functional(feature: str, d: int, noise: float, seed: int) -> TwoTimescaleFunctional:
    ds = make_dataset("single-index", d=d, n=30, n_test=10, noise=noise, seed=seed)
    return TwoTimescaleFunctional(Problem.from_dataset(ds, feature, 0.05, 0.5, 1.0))


def _G(F: Functional, W: np.ndarray, q: np.ndarray, features: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    return F.energy(F.fit(W, q, features))["G"]


def _random_density(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """A mixture of three random Gaussians on the grid, as cell weights."""
    X = grid.centers()
    m = np.zeros(X.shape[0])
    for _ in range(3):
        mean = rng.uniform(-2, 2, grid.dim)
        A = rng.standard_normal((grid.dim, grid.dim)) * 0.6
        P = np.linalg.inv(A @ A.T + 0.1 * np.eye(grid.dim))
        Z = X - mean
        m += rng.uniform(0.2, 1) * np.exp(-0.5 * np.einsum("ij,jk,ik->i", Z, P, Z))
    return m / m.sum()


def segment_violation(G0: float, G1: float, Gs: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``(G(mu_s) - chord) / |G(mu_s)|``: positive where convexity fails (zero at the ends)."""
    return (Gs - ((1 - s) * G0 + s * G1)) / np.abs(Gs)


def _interior_max(v: np.ndarray) -> float:
    return float(v[1:-1].max())


def measure_pairs(
    F: Functional, kind: str, pairs: int, rng: np.random.Generator, s: np.ndarray
) -> tuple[float, float, list[np.ndarray]]:
    """Worst relative violations of the chord and linearisation inequalities over random pairs."""
    p = F.problem.p
    if kind == "grid":
        grid = Grid.box(4.0, 24 if p > 1 else 200, p)
        pts = grid.centers()
        feats = F.features(pts)
    worst_chord, worst_lin, curves = -np.inf, -np.inf, []
    for _ in range(pairs):
        if kind == "grid":
            q0, q1, q2 = (_random_density(grid, rng) for _ in range(3))
            W0 = W1 = W2 = pts
            G = [_G(F, pts, q, feats) for q in (q0, q1, q2)]
            Gs = np.array([_G(F, pts, (1 - t) * q0 + t * q1, feats) for t in s])
            fit1 = F.fit(pts, q1, feats)
            lin = G[1] + float(F.potential(fit1) @ (q2 - q1))
        else:
            N = int(rng.integers(5, 60))
            W0, W1, W2 = (rng.standard_normal((N, p)) * rng.uniform(0.5, 2) for _ in range(3))
            q = np.full(N, 1.0 / N)
            G = [_G(F, W, q) for W in (W0, W1, W2)]
            P = np.concatenate([W0, W1])
            Gs = np.array([_G(F, P, np.concatenate([(1 - t) * q, t * q])) for t in s])
            fit1 = F.fit(W1, q)
            lin = G[1] + float(np.mean(F.potential(fit1, W2)) - np.mean(F.potential(fit1, W1)))
        v = segment_violation(G[0], G[1], Gs, s)
        curves.append(v)
        worst_chord = max(worst_chord, _interior_max(v))
        worst_lin = max(worst_lin, (lin - G[2]) / abs(G[2]))
    return worst_chord, worst_lin, curves


def position_pairs(
    F: Functional, pairs: int, rng: np.random.Generator, s: np.ndarray
) -> tuple[float, list[np.ndarray]]:
    """The finite-N loss along straight lines in position space: the worst chord violation."""
    p = F.problem.p
    worst, curves = -np.inf, []
    for _ in range(pairs):
        N = int(rng.integers(2, 12))
        W0, W1 = (rng.standard_normal((N, p)) * 2 for _ in range(2))
        q = np.full(N, 1.0 / N)
        Gs = np.array([_G(F, (1 - t) * W0 + t * W1, q) for t in s])
        v = segment_violation(Gs[0], Gs[-1], Gs, s)
        curves.append(v)
        worst = max(worst, _interior_max(v))
    return worst, curves


def run(full: bool = False, seed: int = 0) -> Report:
    """Random pairs of grid densities and particle sets; ``full`` uses ten times as many."""
    rng = np.random.default_rng(seed)
    pairs = 100 if full else 10
    s = np.linspace(0, 1, 11)
    report = Report("convexity", "Convexity of G in the measure (Theorem 3.1)")
    rows, all_measure, all_position = [], [], []
    worst_measure, worst_position = -np.inf, -np.inf
    for feature in FEATURES:
        for noise in (0.0, 0.5):
            F = _functional(feature, 1, noise, seed)
            for kind in ("grid", "particles"):
                chord, lin, curves = measure_pairs(F, kind, pairs, rng, s)
                all_measure += curves
                worst_measure = max(worst_measure, chord, lin)
                rows.append([feature, noise, kind, F.problem.p, pairs, chord, lin])
            pos, curves = position_pairs(F, pairs, rng, s)
            all_position += curves
            worst_position = max(worst_position, pos)
            rows.append([feature, noise, "positions (finite N)", F.problem.p, pairs, pos, "-"])
            report.progress(f"{feature}, label noise {noise:g}")
    report.table(
        "Worst relative violation over the pairs (negative: the inequality holds with that margin): "
        "max over 0 < s < 1 of (G(mu_s) - chord) / |G|, and (linearisation - G(mu2)) / |G|",
        ["feature", "label noise", "pairs of", "p", "pairs", "chord", "linearisation"],
        rows,
    )
    report.data = {
        "worst_measure_violation": worst_measure,
        "worst_position_violation": worst_position,
        "pairs_per_row": pairs,
        "rows": rows,
    }
    report.claim(
        f"G is convex in the measure: the largest relative excess over the chord or the linearisation "
        f"is {worst_measure:.2e} (a violation would be > 1e-10)",
        worst_measure < 1e-10,
    )
    report.claim(
        f"the finite-N loss is not convex in the positions: worst violation {worst_position:.2e} relative",
        worst_position > 1e-6,
    )
    fig, axes = report.figure("segments", 1, 2, figsize=(11, 4), constrained_layout=True)
    for v in all_measure:
        axes[0].plot(s, v, color="C0", alpha=0.3, lw=0.8)
    axes[0].set_title("measures: (G(mu_s) - chord) / |G|  (all <= 0)")
    for v in all_position:
        axes[1].plot(s, v, color="C3", alpha=0.3, lw=0.8)
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_title("positions, finite N: (G(mu_{W_s}) - chord) / |G|")
    for ax in axes:
        ax.set_xlabel("s")
    return report
