"""The learning problem: data, feature map and hyper-parameters (docs/theory.md §1).

Symbols: inputs ``X`` (n x d), targets ``Y`` (n x T), temperature ``lam``, ridge
``lam_a``, prior precision ``lam_w``; ``lam_a_bar = lam lam_a``,
``lam_w_bar = lam lam_w``; prior ``nu = N(0, I / lam_w)`` on ``w in R^p``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .backend import Array, namespace, to_host
from .features import FeatureMap, get_feature_map


class DataSet(Protocol):
    """What a problem takes from a data set (:class:`~mfld.model.datasets.Dataset` is one)."""

    @property
    def X(self) -> Array: ...

    @property
    def Y(self) -> Array: ...

    @property
    def X_test(self) -> Array | None: ...

    @property
    def Y_test(self) -> Array | None: ...

    @property
    def relevant(self) -> Array | None: ...


# Inputs and targets enter products of two or three of themselves (u.x, the Gram matrix, Y^T S Y):
# beyond 1e100 these overflow float64 (max ~1.8e308), so larger data cannot be a mistake worth running.
DATA_LIMIT = 1e100


def check_values(name: str, a: Array) -> None:
    """Refuse data with NaN or infinite entries, or entries beyond :data:`DATA_LIMIT` in magnitude."""
    xp = namespace(a)
    if not bool(xp.all(xp.isfinite(a))):
        bad = int(to_host(xp.sum(~xp.isfinite(a))))
        raise ValueError(f"{name} contains {bad} NaN or infinite entries; clean the data before building a Problem")
    largest = float(to_host(xp.max(xp.abs(a)))) if a.size else 0.0
    if largest > DATA_LIMIT:
        raise ValueError(
            f"{name} has entries of magnitude up to {largest:.3g}, above {DATA_LIMIT:g}: their products "
            "overflow float64 (the features and the Gram matrix); rescale the data"
        )


def _finite_matrix(name: str, a: Array, ndim_ok: tuple[int, ...]) -> Array:
    if not (hasattr(a, "ndim") and hasattr(a, "dtype")):
        raise TypeError(
            f"{name} must be an array (NumPy or CuPy) of floating point numbers, got a {type(a).__name__}: "
            f"pass numpy.asarray({name}, dtype=float)"
        )
    if a.dtype.kind != "f":
        what = {"U": "text", "S": "text", "O": "Python objects (None, text, mixed)", "b": "booleans"}.get(
            a.dtype.kind, f"{a.dtype} numbers"
        )
        raise TypeError(
            f"{name} holds {what} (dtype {a.dtype}), not floating point numbers: convert it with "
            f"numpy.asarray({name}, dtype=float) (which fails on what is not a number)"
        )
    if a.ndim not in ndim_ok:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndim_ok))} dimensions, got shape {a.shape}")
    check_values(name, a)
    return a


def _data_pair(xname: str, yname: str, X: Array, Y: Array) -> tuple[Array, Array]:
    """Finite inputs (rows) and targets as a matrix (one column per task)."""
    X = _finite_matrix(xname, X, (2,))
    Y = _finite_matrix(yname, Y, (1, 2))
    return X, (Y[:, None] if Y.ndim == 1 else Y)


def _positive(name: str, v: float) -> float:
    v = float(v)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return v


@dataclass(frozen=True, init=False)
class Problem:
    """Data, feature map and hyper-parameters of the two-layer mean-field model.

    ``relevant`` is an optional orthonormal basis (d x k) of the target's relevant
    input subspace, used for the parameter alignment
    ``P(mu) = E_mu ||relevant^T u||^2 / ||u||^2`` (for a single-index target
    ``f(x) = g(u° . x)`` it is ``u°`` and P is the definition of docs/theory.md §4.4).
    """

    X: Array
    Y: Array
    feature: FeatureMap
    lam: float
    lam_a: float
    lam_w: float
    X_test: Array | None = None
    Y_test: Array | None = None
    relevant: Array | None = None
    Xa: Array = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        X: Array,
        Y: Array,
        feature: FeatureMap | str,
        lam: float,
        lam_a: float,
        lam_w: float,
        X_test: Array | None = None,
        Y_test: Array | None = None,
        relevant: Array | None = None,
    ) -> None:
        # Written out (not the dataclass's) because ``feature`` may be given by name.
        values = {
            "X": X,
            "Y": Y,
            "lam": lam,
            "lam_a": lam_a,
            "lam_w": lam_w,
            "X_test": X_test,
            "Y_test": Y_test,
            "relevant": relevant,
            "feature": get_feature_map(feature) if isinstance(feature, str) else feature,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)
        self._check()

    @classmethod
    def from_dataset(cls, data: DataSet, feature: FeatureMap | str, lam: float, lam_a: float, lam_w: float) -> Problem:
        """The problem of a data set (:class:`~mfld.model.datasets.Dataset`): its training and test data and its
        relevant subspace, with the feature map and hyper-parameters given."""
        return cls(data.X, data.Y, feature, lam, lam_a, lam_w, data.X_test, data.Y_test, data.relevant)

    def _check(self) -> None:
        for name in ("lam", "lam_a", "lam_w"):
            object.__setattr__(self, name, _positive(name, getattr(self, name)))
        X, Y = _data_pair("X", "Y", self.X, self.Y)
        if 0 in X.shape or Y.shape[1] == 0:
            raise ValueError(
                f"X has shape {X.shape} and Y {Y.shape}: a problem needs at least one sample, one input "
                "dimension and one target"
            )
        if Y.shape[0] != X.shape[0]:
            raise ValueError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}; give one target row per input")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "Y", Y)
        if (self.X_test is None) != (self.Y_test is None):
            raise ValueError("give both X_test and Y_test, or neither")
        if self.X_test is not None and self.Y_test is not None:
            Xt, Yt = _data_pair("X_test", "Y_test", self.X_test, self.Y_test)
            if Xt.shape[1] != X.shape[1]:
                raise ValueError(f"X_test has {Xt.shape[1]} columns but X has {X.shape[1]}")
            if Yt.shape != (Xt.shape[0], Y.shape[1]):
                raise ValueError(f"Y_test has shape {Yt.shape}, expected {(Xt.shape[0], Y.shape[1])}")
            object.__setattr__(self, "X_test", Xt)
            object.__setattr__(self, "Y_test", Yt)
        if self.relevant is not None:
            R = self.relevant if self.relevant.ndim == 2 else self.relevant[:, None]
            if R.shape[0] != X.shape[1]:
                raise ValueError(f"relevant has {R.shape[0]} rows, expected d = {X.shape[1]}")
            object.__setattr__(self, "relevant", R)
        object.__setattr__(self, "Xa", self.feature.augment(X))

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def d(self) -> int:
        return int(self.X.shape[1])

    @property
    def T(self) -> int:
        return int(self.Y.shape[1])

    @property
    def p(self) -> int:
        """Dimension of the first-layer parameter ``w``."""
        return self.feature.dim(self.d)

    @property
    def lam_a_bar(self) -> float:
        return self.lam * self.lam_a

    @property
    def lam_w_bar(self) -> float:
        return self.lam * self.lam_w

    @property
    def xp(self) -> ModuleType:
        return namespace(self.X)

    def to(self, xp: ModuleType, dtype: npt.DTypeLike | None = None) -> Problem:
        """The same problem with its arrays moved to ``xp`` (numpy or cupy) and ``dtype``."""

        def conv(a: Array) -> Array:
            a = xp.asarray(to_host(a) if xp is np else a)
            return a.astype(dtype) if dtype is not None else a

        def conv_optional(a: Array | None) -> Array | None:
            return None if a is None else conv(a)

        return replace(
            self,
            X=conv(self.X),
            Y=conv(self.Y),
            X_test=conv_optional(self.X_test),
            Y_test=conv_optional(self.Y_test),
            relevant=conv_optional(self.relevant),
        )

    def sample_prior(self, N: int, rng: np.random.Generator) -> np.ndarray:
        """``N`` draws from ``nu = N(0, I / lam_w)`` (N x p, on the host)."""
        return rng.standard_normal((N, self.p)) / math.sqrt(self.lam_w)
