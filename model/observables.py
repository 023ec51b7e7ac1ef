"""Observables of a measure as pure functions (docs/theory.md §2 and §4).

Each observable is a function of an :class:`Evaluation` (a functional, the fit
of one measure and that measure's entropy) and is registered in
:data:`OBSERVABLES` with the line that documents it; :func:`evaluate` computes
any selection of them. Discretisations add their own diagnostics (a grid's
certificate and mass) next to these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

from .backend import Array, inverse_trace_from_cholesky, namespace
from .functional import Fit, Functional
from .problem import Problem
from .registry import Registry


def degrees_of_freedom(functional: Functional, fit: Fit) -> float:
    """``df(mu) = tr[S_mu (S_mu + n lam_a_bar I)^{-1}]`` of the intrinsic kernel.

    From the Cholesky factor: ``df = m - r tr(K^{-1})`` with ``m`` the side of
    the factored system (the non-zero spectra of ``B B^T`` and ``B^T B`` agree).
    """
    kf = functional.kernel_fit(fit)
    assert kf.factor is not None  # a kernel fit is factored
    r = functional.problem.n * functional.problem.lam_a_bar
    return float(kf.factor.shape[0] - r * inverse_trace_from_cholesky(kf.factor))


def kernel_alignment(functional: Functional, fit: Fit, Y: Array | None = None) -> float:
    """``A(mu) = tr(Y^T S_mu Y) / (||Y||_F^2 ||S_mu||_F)`` in [0, 1] (Definition 5.1)."""
    kf = functional.kernel_fit(fit)
    assert kf.gram is not None  # a kernel fit holds its Gram matrix
    Y = functional.problem.Y if Y is None else Y
    xp = namespace(Y)
    frob = float(xp.sqrt(xp.sum(kf.gram * kf.gram)))
    if kf.side == "n":
        num = float(xp.sum(Y * (kf.gram @ Y)))
    else:
        H = kf.H if kf.H is not None else functional.features(kf.points)[1]
        BtY = (H * xp.sqrt(kf.weights)).T @ Y
        num = float(xp.sum(BtY * BtY))
    return num / (float(xp.sum(Y * Y)) * frob)


TOP_EIGENVECTORS = 10
"""How many of the kernel's leading eigenvectors :func:`eigen_share` counts."""


def eigen_share(functional: Functional, fit: Fit, k: int = TOP_EIGENVECTORS) -> float:
    """``||P_k Y||_F^2 / ||Y||_F^2``: the share of the targets in the span of the ``k`` leading eigenvectors of the
    Gram matrix ``S_mu`` (n x n). With the N-side factor ``B = H diag(sqrt q)`` (``S = B B^T``), the eigenvectors
    are ``B v_i / sqrt(l_i)`` for the eigenpairs of ``B^T B``, and the share is ``sum_i (v_i^T B^T Y)^2 / l_i``.

    Not among the :data:`OBSERVABLES` every run records: an eigendecomposition of the Gram matrix per record would
    cost more than the step at the usual n (``mfld experiment real-data`` records it)."""
    kf = functional.kernel_fit(fit)
    assert kf.gram is not None  # a kernel fit holds its Gram matrix
    Y = functional.problem.Y
    xp = namespace(Y)
    values, vectors = xp.linalg.eigh(kf.gram)
    # Eigenvalues at round-off belong to S's null space, whose basis is arbitrary: only the range counts.
    keep = values[-k:] > 1e-12 * values[-1]
    top = vectors[:, -k:]
    if kf.side == "n":
        captured = float(xp.sum(keep[:, None] * (top.T @ Y) ** 2))
    else:
        H = kf.H if kf.H is not None else functional.features(kf.points)[1]
        BtY = (H * xp.sqrt(kf.weights)).T @ Y
        scale = xp.where(keep, values[-k:], xp.inf)
        captured = float(xp.sum((top.T @ BtY) ** 2 / scale[:, None]))
    return captured / float(xp.sum(Y * Y))


def parameter_alignment(problem: Problem, W: Array, q: Array) -> float:
    """``P(mu) = E_mu ||R^T u||^2 / ||u||^2`` with ``u`` the input weights (bias dropped).

    ``R`` is the target's relevant subspace (``u°`` for a single-index target).
    """
    if problem.relevant is None:
        return math.nan
    xp = namespace(W)
    u = W[:, : problem.d]
    proj = u @ problem.relevant
    ratio = xp.sum(proj * proj, axis=1) / xp.maximum(xp.sum(u * u, axis=1), 1e-300)
    return float(xp.sum(q * ratio))


def half_mse(pred: Array, Y: Array) -> float:
    """``(1 / 2 n T) ||pred - Y||_F^2``."""
    xp = namespace(Y)
    return 0.5 * float(xp.mean((pred - Y) ** 2))


@dataclass
class Evaluation:
    """One measure seen through a functional: its fit and its entropy (from the discretisation).

    ``entropy`` is ``Ent(mu)``, which only the discretisation can estimate (``system.entropy()``);
    without it the observables ``objective`` and ``entropy`` are refused rather than given as NaN.
    """

    functional: Functional
    fit: Fit
    entropy: float | None = None

    def ent(self) -> float:
        """``Ent(mu)``, or a clear error when the evaluation was made without it."""
        if self.entropy is None:
            raise ValueError(
                "the objective and the entropy need Ent(mu), which the discretisation estimates: "
                "build Evaluation(F, fit, entropy=system.entropy())"
            )
        return self.entropy

    @cached_property
    def energy(self) -> dict[str, float]:
        return self.functional.energy(self.fit)

    @property
    def problem(self) -> Problem:
        return self.functional.problem


def _parameter_alignment(ev: Evaluation) -> float:
    W, pb = ev.fit.points, ev.problem
    # The classical objective's points are (a, w): w is the last p columns.
    return ev.functional.comm.sum(parameter_alignment(pb, W[:, W.shape[1] - pb.p :], ev.fit.weights))


def _test_loss(ev: Evaluation) -> float:
    pb = ev.problem
    if pb.X_test is None or pb.Y_test is None:
        return math.nan
    return half_mse(ev.functional.predict(ev.fit, pb.X_test), pb.Y_test)


Observable = Callable[[Evaluation], float]

OBSERVABLES: Registry[Observable] = Registry("observable", group="mfld.observables", builtins="mfld.model")
OBSERVABLES.add(
    "objective",
    lambda ev: ev.energy["G"] + ev.problem.lam * ev.ent(),
    "G + lam Ent (for particles Ent is a Kozachenko-Leonenko nearest-neighbour estimate, consistent "
    "but biased in high dimension; for grids exact up to quadrature)",
)
OBSERVABLES.add("G", lambda ev: ev.energy["G"], "U + (lam_w_bar / 2) E||w||^2 (the classical objective: its G)")
OBSERVABLES.add("entropy", lambda ev: ev.ent(), "Ent(mu) = int mu log mu")
OBSERVABLES.add("U", lambda ev: ev.energy["U"], "the data term U(mu)")
OBSERVABLES.add("second_moment", lambda ev: ev.energy["second_moment"], "E ||w||^2")
OBSERVABLES.add(
    "kernel_alignment", lambda ev: kernel_alignment(ev.functional, ev.fit), "A = Y^T S Y / (||Y||^2 ||S||_F)"
)
OBSERVABLES.add(
    "parameter_alignment",
    _parameter_alignment,
    "P = E ||R^T u||^2 / ||u||^2, R the target's relevant directions (u° for a single-index target, "
    "e1 and e2 for x1 x2)",
)
OBSERVABLES.add(
    "degrees_of_freedom", lambda ev: degrees_of_freedom(ev.functional, ev.fit), "tr S (S + n lam_a_bar I)^{-1}"
)
OBSERVABLES.add("train_loss", lambda ev: half_mse(ev.fit.pred, ev.problem.Y), "(1/2) mean squared training error")
OBSERVABLES.add("test_loss", _test_loss, "(1/2) mean squared error on the test set (clean targets)")


def evaluate(ev: Evaluation, names: Iterable[str] | None = None) -> dict[str, float]:
    """The observables ``names`` (default: all registered) of one evaluated measure."""
    return {name: float(OBSERVABLES[name](ev)) for name in (OBSERVABLES if names is None else names)}
