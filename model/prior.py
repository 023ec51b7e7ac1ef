"""The prior-only objective ``G(mu) = (lam_w_bar / 2) E||w||^2`` (``U`` switched off).

MFLD then is the Ornstein-Uhlenbeck process ``dw = -lam_w_bar w dt + sqrt(2 lam) dB``
with stationary measure ``nu = N(0, I / lam_w)``: Gaussian initial data stay
Gaussian with known mean and covariance, the exact reference for the solvers.
"""

from __future__ import annotations

from .backend import Array, namespace, row_squares
from .functional import OBJECTIVES, Fit, second_moment, validate_measure
from .kernel_backed import KernelBacked


@OBJECTIVES.register("prior", doc="U = 0: Ornstein-Uhlenbeck, exact Gaussian solutions")
class PriorOnlyFunctional(KernelBacked):
    """``G(mu) = (lam_w_bar / 2) E||w||^2``: MFLD is Ornstein-Uhlenbeck (see the module doc)."""

    name = "prior"

    @property
    def dim(self) -> int:
        return self.problem.p

    def features(self, W: Array) -> tuple[Array, Array]:
        """None are needed (U = 0): empty ``0 x N`` arrays."""
        empty = namespace(W).empty((0, W.shape[0]), dtype=W.dtype)
        return empty, empty

    def fit(
        self,
        W: Array,
        q: Array,
        features: tuple[Array, Array] | None = None,
        Y: Array | None = None,
        signed: bool = False,
    ) -> Fit:
        validate_measure(W, q, self.dim, signed)
        xp = namespace(W)
        pred = xp.full_like(self.problem.Y, xp.nan)  # no second layer is fitted
        return Fit(W, q, pred, pred, 0.0, "none", None, None)

    def potential(self, fit: Fit, W: Array | None = None) -> Array:
        W = fit.points if W is None else W
        return 0.5 * self.problem.lam_w_bar * row_squares(W)

    def grad_potential(self, fit: Fit, W: Array | None = None) -> Array:
        W = fit.points if W is None else W
        return self.problem.lam_w_bar * W

    def energy(self, fit: Fit) -> dict[str, float]:
        m2 = second_moment(fit, fit.points)
        return {"U": 0.0, "second_moment": m2, "G": 0.5 * self.problem.lam_w_bar * m2}

    def kernel_fit(self, fit: Fit) -> Fit:
        """The intrinsic kernel ``k_mu`` of the measure (defined whether or not U is on)."""
        # The weights were checked when ``fit`` was made; a spectral density's undershoots stay admitted.
        return self._kernel.fit(fit.points, fit.weights, signed=True)

    def predict(self, fit: Fit, X: Array) -> Array:
        """No second layer is fitted: NaN."""
        xp = namespace(X)
        return xp.full((X.shape[0], self.problem.T), xp.nan, dtype=X.dtype)
