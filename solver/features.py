"""Feature maps ``h(x; w)`` of the first layer (THEORY.md section 1).

All maps shipped here are ridge functions ``h(x; w) = s * sigma(u . x + b)``: the
parameter is ``w = (u, b)`` in ``R^{d+1}`` with a bias, or ``w = u`` in ``R^d``
without. Writing ``x~ = (x, 1)`` (or ``x~ = x``) and ``z = w . x~``,

    h(x; w)        = s sigma(z)
    grad_w h(x; w) = s sigma'(z) x~

so every quantity the solvers need reduces to two matrix products with the
data. A feature map offers

* ``preactivation(X, W)``: ``Z = X~ W^T`` (n x N),
* ``values(Z)``: ``h`` on a pre-activation matrix,
* ``derivative(Z)``: ``dh/dz``,
* ``contract_grad(Xa, D, C, A)``: ``sum_j sum_t C[j, t] A[i, t] grad_w h(x_j; w_i)``
  (N x p) for ``D = dh/dz``, a rank-T coefficient ``C A^T`` that is never formed,

and is backend-neutral (NumPy or CuPy arrays alike).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .backend import namespace


def _erf(xp: Any) -> Callable[[Any], Any]:
    if xp.__name__ == "numpy":
        from scipy.special import erf
    else:  # pragma: no cover - GPU only
        from cupyx.scipy.special import erf
    return erf


def _sigmoid(xp: Any, z: Any) -> Any:
    return 0.5 * (1.0 + xp.tanh(0.5 * z))


@dataclass(frozen=True)
class Activation:
    """A scalar activation with its derivative, both ``(xp, z) -> array``.

    ``derivative_from_value``, where the derivative is a cheap function of the
    value (tanh: ``1 - s^2``), spares a second transcendental per entry.
    """

    name: str
    value: Callable[[Any, Any], Any]
    derivative: Callable[[Any, Any], Any]
    scale: float = 1.0
    derivative_from_value: Callable[[Any], Any] | None = None


def _tanh_d(xp: Any, z: Any) -> Any:
    t = xp.tanh(z)
    return 1.0 - t * t


def _sigmoid_d(xp: Any, z: Any) -> Any:
    s = _sigmoid(xp, z)
    return s * (1.0 - s)


def _softplus(xp: Any, z: Any) -> Any:
    # log(1 + e^z) without overflow for large |z|.
    return xp.logaddexp(0.0, z)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", lambda xp, z: xp.tanh(z), _tanh_d, 1.0, lambda s: 1.0 - s * s),
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_d, 1.0, lambda s: s * (1.0 - s)),
    "erf": Activation(
        "erf",
        lambda xp, z: _erf(xp)(z),
        lambda xp, z: _TWO_OVER_SQRT_PI * xp.exp(-z * z),
    ),
    # log(1 + e^z), a smoothed ReLU.
    "softplus": Activation("softplus", _softplus, _sigmoid),
    # sqrt(2) cos(z) has E[h^2] = 1 for a uniform phase: random Fourier features.
    "cos": Activation(
        "cos",
        lambda xp, z: xp.cos(z),
        lambda xp, z: -xp.sin(z),
        math.sqrt(2.0),
    ),
}


@dataclass(frozen=True)
class RidgeFeature:
    """``h(x; w) = scale * sigma(u . x + b)`` with ``w = (u, b)`` or ``w = u``."""

    activation: Activation
    bias: bool

    @property
    def name(self) -> str:
        return self.activation.name + ("_bias" if self.bias else "")

    def dim(self, d: int) -> int:
        """Parameter dimension ``p`` for input dimension ``d``."""
        return d + 1 if self.bias else d

    def augment(self, X: Any) -> Any:
        """``X~``: the inputs with a column of ones appended when there is a bias."""
        if not self.bias:
            return X
        xp = namespace(X)
        return xp.concatenate([X, xp.ones((X.shape[0], 1), dtype=X.dtype)], axis=1)

    def preactivation(self, Xa: Any, W: Any) -> Any:
        """``Z[j, i] = w_i . x~_j`` for augmented inputs ``Xa`` (n x p), ``W`` (N x p)."""
        return Xa @ W.T

    def values(self, Z: Any) -> Any:
        """``h`` evaluated on pre-activations."""
        xp = namespace(Z)
        h = self.activation.value(xp, Z)
        return h * self.activation.scale if self.activation.scale != 1.0 else h

    def derivative(self, Z: Any, H: Any = None) -> Any:
        """``dh/dz`` on pre-activations ``Z``; from the values ``H = h(Z)`` when that is cheaper."""
        act = self.activation
        if H is not None and act.derivative_from_value is not None:
            return act.derivative_from_value(H)  # scale is 1 for these activations
        g = act.derivative(namespace(Z), Z)
        return g * act.scale if act.scale != 1.0 else g

    @staticmethod
    def contract_grad(Xa: Any, D: Any, C: Any, A: Any) -> Any:
        """``G[i] = sum_j sum_t C[j, t] A[i, t] grad_w h(x_j; w_i)`` (N x p).

        With ``grad_w h(x_j; w_i) = D[j, i] x~_j`` this is
        ``sum_t A[:, t] * (D^T (C[:, t] * X~))``: T products of N x n by n x p,
        with no n x N temporary besides ``D``.
        """
        G = A[:, :1] * (D.T @ (C[:, :1] * Xa))
        for t in range(1, C.shape[1]):
            G += A[:, t : t + 1] * (D.T @ (C[:, t : t + 1] * Xa))
        return G

    def __call__(self, X: Any, W: Any) -> Any:
        """``h(X; W)`` as an n x N matrix."""
        return self.values(self.preactivation(self.augment(X), W))


FEATURE_MAPS: dict[str, RidgeFeature] = {}
for _act in ACTIVATIONS.values():
    for _bias in (True, False):
        _f = RidgeFeature(_act, _bias)
        FEATURE_MAPS[_f.name] = _f


def get_feature_map(name: str) -> RidgeFeature:
    """Look up a feature map by name, e.g. ``"tanh_bias"`` (the paper's) or ``"tanh"``."""
    try:
        return FEATURE_MAPS[name]
    except KeyError:
        raise ValueError(
            f"unknown feature map {name!r}; choose one of {sorted(FEATURE_MAPS)}"
        ) from None
