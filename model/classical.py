"""The classical mean-field objective on (a, w) (docs/theory.md §6).

The measure ``P`` lives on ``theta = (a, w)`` with ``a in R^T`` (first T
coordinates) and ``w in R^p``; with points ``Theta`` (N x (T+p)) and weights ``q``:

    f_P(x)    = sum_i q_i a_i h(x; w_i)
    L(P)      = (1 / nT) sum_j ell(f_P(x_j) - y_j),   ell(e) = ||e||^2 / 2
    G(P)      = L(P) + lam E_P[r(a, w)],   r = lam_a ||a||^2 / 2 + lam_w ||w||^2 / 2
    dG/dP     = sum_j R_j . a h(x_j; w) + lam r(a, w),   R = ell'(f_P(X) - Y) / (nT)
    grad_a    = h(X; w)^T R + lam lam_a a
    grad_w    = sum_j (R_j . a) grad_w h(x_j; w) + lam lam_w w

Same MFLD, same solvers, ``T`` more dimensions. ``U`` below denotes the data
term ``L(P)``; kernel metrics use the intrinsic kernel of the ``w``-marginal.
Another convex loss ``ell`` is a subclass that overrides :meth:`ClassicalFunctional.loss`
(its value and derivative); G stays convex in P since f_P is linear in P.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .backend import Array, chunks, namespace, row_squares
from .distributed import Communicator
from .functional import DEFAULT_MEMORY_BUDGET, OBJECTIVES, Fit, second_moment, validate_measure
from .kernel_backed import KernelBacked
from .options import option
from .problem import Problem


@dataclass(frozen=True, kw_only=True)
class ClassicalOptions:
    """The classical objective's key: the second layer's speed r (THEORY.md §7)."""

    section: ClassVar[str] = "model"
    second_layer_rate: float = option(
        1.0,
        "classical objective: the second layer moves r times faster, d theta = -D grad dt + sqrt(2 lam D) dB with "
        "D = diag(r I_T, I_p) (r = 1: the classical dynamics; the stationary measure does not depend on r)",
        (int, float),
        lambda v: 1 <= v < math.inf,
        "a finite number >= 1",
        since="0.2.0.dev2",
    )


@OBJECTIVES.register("classical", doc="the measure on (a, w), docs/theory.md §6", options=ClassicalOptions)
class ClassicalFunctional(KernelBacked):
    """Mean-field objective with the second layer as part of the measure; ``options.second_layer_rate`` (r) is
    the mobility of its ``a`` coordinates (:attr:`mobility`), which the discretisations apply."""

    name = "classical"

    def __init__(
        self,
        problem: Problem,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
        comm: Communicator | None = None,
        options: ClassicalOptions | None = None,
    ) -> None:
        super().__init__(problem, memory_budget, comm)
        self.rate = float(options.second_layer_rate) if options is not None else 1.0

    @property
    def mobility(self) -> np.ndarray | None:
        """``diag D``: r on the T coordinates of ``a``, 1 on those of ``w``; None at r = 1 (nothing to apply)."""
        if self.rate == 1.0:
            return None
        return np.array([self.rate] * self.problem.T + [1.0] * self.problem.p)

    @property
    def dim(self) -> int:
        return self.dim_of(self.problem.p, self.problem.T)

    @staticmethod
    def dim_of(p: int, T: int) -> int:
        """The dimension of the measure's points, ``theta = (a, w)``: ``T + p``."""
        return T + p

    def _split(self, Theta: Array) -> tuple[Array, Array]:
        T = self.problem.T
        return Theta[:, :T], Theta[:, T:]

    def features(self, Theta: Array) -> tuple[Array, Array]:
        """``(Z, H)`` of the ``w`` part of points ``Theta`` on the training inputs."""
        return self._kernel.features(self._split(Theta)[1])

    def fit(
        self,
        Theta: Array,
        q: Array,
        features: tuple[Array, Array] | None = None,
        Y: Array | None = None,
        signed: bool = False,
    ) -> Fit:
        """Network output ``f_P(X)`` and residual coefficients ``R`` for the measure."""
        pb = self.problem
        validate_measure(Theta, q, self.dim, signed)
        Y = pb.Y if Y is None else Y
        xp = namespace(Theta)
        A, W = self._split(Theta)
        F = xp.zeros_like(Y)
        Z = H = None
        if features is not None:
            Z, H = features
            F = H @ (q[:, None] * A)
        else:
            for sl in chunks(W.shape[0], self._kernel.chunk_size(pb.n)):
                F += self._kernel.features(W[sl])[1] @ (q[sl, None] * A[sl])
        U, R = self.loss(F - Y)
        return Fit(Theta, q, R, F, U, "none", None, None, Z, H)

    def loss(self, E: Array) -> tuple[float, Array]:
        """The data term and its derivative at the residuals ``E = f_P(X) - Y`` (n x T):
        ``L = (1/nT) sum_j ell(E_j)`` and ``R = ell'(E) / (nT)``, here ``ell(e) = ||e||^2 / 2``."""
        scale = self.problem.n * self.problem.T
        return 0.5 * float(namespace(E).sum(E * E)) / scale, E / scale

    def _regulariser(self, Theta: Array) -> Array:
        A, W = self._split(Theta)
        pb = self.problem
        return 0.5 * pb.lam * (pb.lam_a * row_squares(A) + pb.lam_w * row_squares(W))

    def potential(self, fit: Fit, Theta: Array | None = None) -> Array:
        """``dG/dP(a, w) = sum_j R_j . a h(x_j; w) + lam r(a, w)``."""
        Theta = fit.points if Theta is None else Theta
        xp = namespace(Theta)
        A, W = self._split(Theta)
        H = fit.H if (Theta is fit.points and fit.H is not None) else self._kernel.features(W)[1]
        return xp.sum((H.T @ fit.coef) * A, axis=1) + self._regulariser(Theta)

    def grad_potential(self, fit: Fit, Theta: Array | None = None) -> Array:
        """``(grad_a, grad_w)`` of ``dG/dP`` at ``Theta`` (N x (T+p))."""
        pb = self.problem
        Theta = fit.points if Theta is None else Theta
        xp = namespace(Theta)
        T = pb.T
        out = xp.empty_like(Theta)
        reuse = Theta is fit.points and fit.H is not None
        for sl in chunks(Theta.shape[0], Theta.shape[0] if reuse else self._kernel.chunk_size(pb.n)):
            A, W = self._split(Theta[sl])
            Z, H = (fit.Z, fit.H) if reuse and fit.Z is not None and fit.H is not None else self._kernel.features(W)
            out[sl, :T] = H.T @ fit.coef + pb.lam * pb.lam_a * A
            out[sl, T:] = pb.feature.contract_grad(pb.Xa, W, Z, H, fit.coef, A) + pb.lam * pb.lam_w * W
        return out

    def energy(self, fit: Fit) -> dict[str, float]:
        """``U`` (data term), ``second_moment = E||w||^2`` and ``G``."""
        xp = namespace(fit.points)
        reg = float(xp.sum(fit.weights * self._regulariser(fit.points)))
        m2 = second_moment(fit, self._split(fit.points)[1])
        return {"U": fit.U, "second_moment": m2, "G": fit.U + reg}

    def kernel_fit(self, fit: Fit) -> Fit:
        """Two-timescale fit of the ``w``-marginal: the intrinsic kernel ``k_mu``."""
        # The weights were checked when ``fit`` was made; a spectral density's undershoots stay admitted.
        return self._kernel.fit(self._split(fit.points)[1], fit.weights, signed=True)

    def predict(self, fit: Fit, X: Array) -> Array:
        """``f_P(x)`` at new inputs."""
        pb = self.problem
        A, W = self._split(fit.points)
        xp = namespace(W)
        Xa = pb.feature.augment(X)
        out = xp.zeros((X.shape[0], pb.T), dtype=W.dtype)
        for sl in chunks(W.shape[0], self._kernel.chunk_size(X.shape[0])):
            out += pb.feature.evaluate(Xa, W[sl])[1] @ (fit.weights[sl, None] * A[sl])
        return out
