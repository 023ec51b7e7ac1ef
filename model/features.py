"""Feature maps ``h(x; w)`` of the first layer (docs/theory.md §1).

A feature map is anything that satisfies :class:`FeatureMap`: it evaluates
``h(X; W)`` (n x N) with a cache of its own, and contracts ``grad_w h`` with
coefficient matrices, which is all the functionals need. The shipped maps are
ridge functions ``h(x; w) = s * sigma(u . x + b)``: the parameter is
``w = (u, b)`` in ``R^{d+1}`` with a bias, or ``w = u`` in ``R^d`` without.
Writing ``x~ = (x, 1)`` (or ``x~ = x``) and ``z = w . x~``,

    h(x; w)        = s sigma(z)
    grad_w h(x; w) = s sigma'(z) x~

so every quantity reduces to matrix products with the data. All code is
backend-neutral (NumPy or CuPy arrays alike).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

from .backend import Array, cache_columns, chunks, namespace
from .registry import Registry


class FeatureMap(Protocol):
    """What a functional needs of ``h(x; w)``, ``w in R^p``.

    ``Xa = augment(X)`` is the inputs in the form the map consumes, computed once
    per data set. ``evaluate`` returns ``(cache, H)`` with ``H[j, i] = h(x_j; w_i)``;
    the cache (for ridge maps the pre-activations) is handed back to the
    contractions so that nothing is recomputed.
    """

    @property
    def name(self) -> str:
        """The name a configuration gives it (a plain attribute does)."""
        ...

    def dim(self, d: int) -> int:
        """Parameter dimension ``p`` for input dimension ``d``."""
        ...

    def augment(self, X: Array) -> Array: ...

    def evaluate(self, Xa: Array, W: Array) -> tuple[Array, Array]: ...

    def contract_grad(self, Xa: Array, W: Array, cache: Array, H: Array, C: Array, A: Array) -> Array:
        """``G[i] = sum_j sum_t C[j, t] A[i, t] grad_w h(x_j; w_i)`` (N x p), ``C`` n x T, ``A`` N x T."""
        ...

    def pullback(self, Xa: Array, W: Array, cache: Array, H: Array, M: Array) -> Array:
        """``G[i] = sum_j M[j, i] grad_w h(x_j; w_i)`` (N x p) for a full n x N coefficient matrix."""
        ...

    def __call__(self, X: Array, W: Array) -> Array:
        """``h(X; W)`` as an n x N matrix."""
        ...


def _erf(xp: ModuleType) -> Callable[[Array], Array]:
    if xp.__name__ == "numpy":
        from scipy.special import erf
    else:  # pragma: no cover - GPU only
        from cupyx.scipy.special import erf
    return erf


def _sigmoid(xp: ModuleType, z: Array) -> Array:
    return 0.5 * (1.0 + xp.tanh(0.5 * z))


def _tanh_in_place(xp: ModuleType, z: Array) -> None:
    xp.tanh(z, out=z)


def _sigmoid_in_place(xp: ModuleType, z: Array) -> None:
    """``z <- 0.5 (1 + tanh(z / 2))``, the same operations as :func:`_sigmoid`, in place."""
    xp.multiply(z, 0.5, out=z)
    xp.tanh(z, out=z)
    xp.add(z, 1.0, out=z)
    xp.multiply(z, 0.5, out=z)


@dataclass(frozen=True)
class Activation:
    """A scalar activation with its derivative, both ``(xp, z) -> array``.

    ``derivative_from_value``, where the derivative is a cheap function of the
    value (tanh: ``1 - s^2``), spares a second transcendental per entry; with
    ``value_in_place``, which overwrites pre-activations by the values, the
    features are then one n x N array and the pre-activations are not kept.
    """

    name: str
    value: Callable[[ModuleType, Array], Array]
    derivative: Callable[[ModuleType, Array], Array]
    scale: float = 1.0
    derivative_from_value: Callable[[Array], Array] | None = None
    value_in_place: Callable[[ModuleType, Array], None] | None = None


def _tanh_d(xp: ModuleType, z: Array) -> Array:
    t = xp.tanh(z)
    return 1.0 - t * t


def _sigmoid_d(xp: ModuleType, z: Array) -> Array:
    s = _sigmoid(xp, z)
    return s * (1.0 - s)


def _one_minus_square(s: Array) -> Array:
    """``1 - s^2`` with one temporary and two passes over it (the expression ``1.0 - s * s`` makes two temporaries,
    and is 2.5x slower; negating in place first made three passes, 1.27x slower at 1000 x 2000)."""
    xp = namespace(s)
    d = xp.multiply(s, s)
    xp.subtract(1.0, d, out=d)
    return d


def _s_one_minus_s(s: Array) -> Array:
    """``s (1 - s) = s - s^2`` with one temporary and two passes over it."""
    xp = namespace(s)
    d = xp.multiply(s, s)
    xp.subtract(s, d, out=d)
    return d


def _softplus(xp: ModuleType, z: Array) -> Array:
    # log(1 + e^z) without overflow for large |z|.
    return xp.logaddexp(0.0, z)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)

ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", lambda xp, z: xp.tanh(z), _tanh_d, 1.0, _one_minus_square, _tanh_in_place),
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_d, 1.0, _s_one_minus_s, _sigmoid_in_place),
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
    """``h(x; w) = scale * sigma(u . x + b)`` with ``w = (u, b)`` or ``w = u``; its cache is ``Z = X~ W^T``."""

    activation: Activation
    bias: bool

    @property
    def name(self) -> str:
        return self.activation.name + ("_bias" if self.bias else "")

    def dim(self, d: int) -> int:
        """Parameter dimension ``p`` for input dimension ``d``."""
        return d + 1 if self.bias else d

    def augment(self, X: Array) -> Array:
        """``X~``: the inputs with a column of ones appended when there is a bias."""
        if not self.bias:
            return X
        xp = namespace(X)
        return xp.concatenate([X, xp.ones((X.shape[0], 1), dtype=X.dtype)], axis=1)

    def evaluate(self, Xa: Array, W: Array) -> tuple[Array, Array]:
        """``(Z, H)`` with ``Z[j, i] = w_i . x~_j`` and ``H = h(Z)``; ``(H, H)`` where the derivative is a function
        of the value and the activation can be applied in place.

        In that case ``H`` is formed block by block of :func:`~mfld.model.backend.cache_columns` columns, each
        block's pre-activations overwritten by their values while they are in the cache: one n x N array
        written once, where ``Z`` then ``h(Z)`` write two and read one.

        Both are stored particle by particle (column-major, the transpose of an N x n array), so that a block of
        particles is one contiguous piece of memory: a pass over a block of a row-major array walks n rows of
        separate pages, and was 2.5x slower at n = 1000 (``1 - h^2`` over 10^5 particles: 172 ms against 70).
        """
        act = self.activation
        if act.derivative_from_value is None or act.value_in_place is None:
            Z = (W @ Xa.T).T
            return Z, self.values(Z)
        xp = namespace(Xa, W)
        Ht = xp.empty((W.shape[0], Xa.shape[0]), dtype=xp.result_type(Xa, W))
        for sl in chunks(W.shape[0], cache_columns(xp, Xa.shape[0], W.shape[0], Ht.itemsize)):
            block = Ht[sl]
            xp.matmul(W[sl], Xa.T, out=block)
            act.value_in_place(xp, block)
        H = Ht.T
        return H, H

    def values(self, Z: Array) -> Array:
        """``h`` evaluated on pre-activations."""
        xp = namespace(Z)
        h = self.activation.value(xp, Z)
        return h * self.activation.scale if self.activation.scale != 1.0 else h

    def derivative(self, Z: Array, H: Array | None = None) -> Array:
        """``dh/dz`` on pre-activations ``Z``; from the values ``H = h(Z)`` when that is cheaper."""
        act = self.activation
        if H is not None and act.derivative_from_value is not None:
            return act.derivative_from_value(H)  # scale is 1 for these activations
        g = act.derivative(namespace(Z), Z)
        return g * act.scale if act.scale != 1.0 else g

    def contract_grad(self, Xa: Array, W: Array, cache: Array, H: Array, C: Array, A: Array) -> Array:
        """``G[i] = sum_j sum_t C[j, t] A[i, t] grad_w h(x_j; w_i)`` (N x p).

        With ``grad_w h(x_j; w_i) = D[j, i] x~_j``, ``D = dh/dz``, this is
        ``sum_t A[:, t] * (D^T (C[:, t] * X~))``: T products of N x n by n x p,
        with no n x N temporary besides ``D``.
        """
        D = self.derivative(cache, H)
        G = A[:, :1] * (D.T @ (C[:, :1] * Xa))
        for t in range(1, C.shape[1]):
            G += A[:, t : t + 1] * (D.T @ (C[:, t : t + 1] * Xa))
        return G

    def pullback(self, Xa: Array, W: Array, cache: Array, H: Array, M: Array) -> Array:
        """``G[i] = sum_j M[j, i] grad_w h(x_j; w_i) = ((M * D)^T X~)[i]``."""
        return (M * self.derivative(cache, H)).T @ Xa

    def __call__(self, X: Array, W: Array) -> Array:
        """``h(X; W)`` as an n x N matrix."""
        return self.evaluate(self.augment(X), W)[1]


ENTRY_POINTS = "mfld.feature_maps"
"""The entry-point group through which installed packages offer feature maps."""


def _adopt(name: str, obj: object) -> FeatureMap:
    """A plug-in's feature map (or a callable without arguments returning one), once it passes its check."""
    if callable(obj) and not hasattr(obj, "evaluate"):
        try:
            obj = obj()
        except TypeError as e:
            raise ValueError(
                f"feature map {name!r} is a callable that needs arguments ({e}); give an object with dim, augment, "
                "evaluate, contract_grad and pullback (see mfld.model.features.FeatureMap), or a factory without "
                "arguments returning one"
            ) from None
    check_feature_map(obj, name)  # type: ignore[arg-type]
    from .plugin_guard import Guarded

    return Guarded(obj, name)


FEATURE_MAPS: Registry[FeatureMap] = Registry("model.feature", group=ENTRY_POINTS, builtins="mfld.model", adopt=_adopt)
for _act in ACTIVATIONS.values():
    for _bias in (True, False):
        _f = RidgeFeature(_act, _bias)
        FEATURE_MAPS.add(_f.name, _f, f"{_act.name}(u.x{' + b' if _bias else ''})")

_PLUGINS: dict[str, FeatureMap] = {}
"""Feature maps imported by ``module:attribute`` in this process."""


def plugin_names() -> list[str]:
    """Feature maps offered by installed packages (entry points of the group ``mfld.feature_maps``)."""
    return FEATURE_MAPS.plugins()


def is_feature_name(name: str) -> bool:
    """Whether ``name`` can name a feature map: registered, installed as a plug-in, or ``module:attribute``."""
    return name in FEATURE_MAPS or _is_import_path(name)


def _is_import_path(name: str) -> bool:
    module, _, attr = name.partition(":")
    return bool(module and attr) and all(part.isidentifier() for part in module.split(".") + attr.split("."))


def get_feature_map(name: str, allow_import: bool = True) -> FeatureMap:
    """The feature map ``name``: a registered one (``"tanh_bias"``, the paper's), an installed plug-in
    (entry point group ``mfld.feature_maps``), or ``"package.module:attribute"`` (a feature map, or a
    callable without arguments returning one; the module is looked for on the Python path and in the
    working directory). Plug-ins pass :func:`check_feature_map` once.

    ``allow_import = False`` refuses import paths: a name read from a file must not choose code to run.
    """
    if name in FEATURE_MAPS:
        return FEATURE_MAPS[name]
    if name in _PLUGINS:
        return _PLUGINS[name]
    if not _is_import_path(name):
        raise ValueError(
            f"unknown feature map {name!r}; choose one of {sorted(FEATURE_MAPS)}, an installed plug-in "
            f"({', '.join(plugin_names()) or 'none installed'}) or 'package.module:attribute'"
        )
    if not allow_import:
        raise ValueError(
            f"the feature map {name!r} is an import path read from a file: mfld does not import "
            "code named by a file; pass --trust-plugins (trust=True) if you trust this file"
        )
    from importlib import import_module

    module, _, attr = name.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` would: a module in the working directory is found
        sys.path.append(os.getcwd())
    try:
        obj: object = import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"feature map {name!r} cannot be imported: {e}") from None
    _PLUGINS[name] = _adopt(name, obj)
    return _PLUGINS[name]


def check_feature_map(fm: FeatureMap, name: str = "feature map", d: int = 3) -> None:
    """Refuse a feature map whose shapes, values or gradients are wrong, with a message saying which.

    On a few random inputs and parameters: ``h`` is n x N and finite, ``contract_grad`` is N x p
    and matches central differences of ``sum_j sum_t C[j, t] A[i, t] h(x_j; w_i)`` to 1e-5
    relative, and ``pullback`` with ``M = C A^T`` equals ``contract_grad``.
    """
    import numpy as np

    def fail(what: str) -> ValueError:
        return ValueError(f"feature map {name!r} fails its conformance check: {what}")

    rng = np.random.default_rng(0)
    X = rng.standard_normal((5, d))
    try:
        p = fm.dim(d)
        if not isinstance(p, int | np.integer) or isinstance(p, bool) or p < 1:
            raise fail(f"dim({d}) must return an integer >= 1, got {p!r}")
        p = int(p)
        W = 0.7 * rng.standard_normal((4, p))
        Xa = fm.augment(X)
        out = fm.evaluate(Xa, W)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise fail(f"evaluate must return a pair (cache, H), got {type(out).__name__}")
        cache, H = out
        if not isinstance(H, np.ndarray):
            raise fail(f"evaluate must return H as an array of the inputs' backend, got {type(H).__name__}")
        if H.shape != (5, 4) or not np.all(np.isfinite(H)):
            raise fail(f"evaluate must give finite h of shape (n, N) = (5, 4), got {H.shape}")
        C, A = rng.standard_normal((5, 2)), rng.standard_normal((4, 2))
        G = np.asarray(fm.contract_grad(Xa, W, cache, H, C, A))
        M = np.asarray(fm.pullback(Xa, W, cache, H, C @ A.T))
    except ValueError as e:
        if str(e).startswith(f"feature map {name!r} fails"):
            raise
        raise fail(f"ValueError: {e}") from None
    except Exception as e:  # any failure of foreign code is reported as a failed check
        raise fail(f"{type(e).__name__}: {str(e) or '(no message)'}") from None
    if G.shape != (4, p) or not np.all(np.isfinite(G)):
        raise fail(f"contract_grad must give a finite (N, p) = (4, {p}) array, got {G.shape}")
    step = 1e-6
    for i in range(4):
        num = np.empty(p)
        for k in range(p):
            shift = np.zeros(p)
            shift[k] = step
            try:
                up, down = fm.evaluate(Xa, (W[i] + shift)[None])[1], fm.evaluate(Xa, (W[i] - shift)[None])[1]
                num[k] = float(C @ A[i] @ (np.asarray(up) - np.asarray(down))[:, 0]) / (2 * step)
            except Exception as e:  # foreign code again, at points near the first ones
                raise fail(f"evaluate near w = {W[i]}: {type(e).__name__}: {str(e) or '(no message)'}") from None
        if np.linalg.norm(G[i] - num) > 1e-5 * max(1.0, float(np.linalg.norm(num))):
            raise fail(f"contract_grad disagrees with central differences of h at a point: {G[i]} against {num}")
    if not np.allclose(M, G, rtol=1e-8, atol=1e-12):
        raise fail("pullback with M = C A^T differs from contract_grad")
