"""The interface every objective implements, and the solved second layer it returns.

A measure is given as points ``W`` (N x p) with non-negative weights ``q`` (N,)
summing to one: particles have ``q_i = 1/N``, a grid has ``q_i = m_i |cell|``.
A :class:`Functional` evaluates ``G(mu)`` and its first variation
``V_mu = dG/dmu`` on such point sets (docs/theory.md §2 and §6):

* ``fit(W, q)`` solves what the measure determines in closed form (for the
  two-timescale objective the second layer ``c_mu``) and returns a :class:`Fit`;
* ``potential(fit, W)`` is ``V_mu`` and ``grad_potential(fit, W)`` its gradient
  in ``w``, the negative drift of MFLD, at any points;
* ``energy(fit)`` gives ``U``, ``E||w||^2`` and ``G``; ``kernel_fit(fit)`` the fit
  whose Gram matrix is the intrinsic kernel ``k_mu`` (for df and alignment);
  ``predict(fit, X)`` the network at new inputs;
* ``solver_state()`` is what an iterative solver carries from one fit to the
  next (named arrays, empty for direct solves) and ``restore_solver(state)``
  puts it back, so that a run continued from a saved state fits as the
  original did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from .backend import Array, namespace, row_squares
from .distributed import Communicator
from .problem import Problem
from .registry import Registry

DEFAULT_MEMORY_BUDGET = 512 * 2**20


@dataclass
class Fit:
    """What a functional solved for one weighted point set.

    ``coef`` are the dual coefficients (``c_mu``, n x T) or, for the classical
    objective, the residual coefficients; ``pred`` is ``f_mu(X)``. For fits of
    the intrinsic kernel, ``side`` is ``"n"`` when ``factor`` is the Cholesky
    factor of ``S + r I`` (n x n) and ``"N"`` when it is that of ``B^T B + r I``
    (N x N), ``gram`` the matrix that was factored less ``r I``; otherwise
    ``side`` is ``"none"``. ``Z, H`` are the features of ``points`` when they
    were computed in one piece (the cache and the values of the feature map).
    ``exact`` is the exact (factored) fit of the same measure once an iterative
    fit needed it, kept so that it is formed once.
    """

    points: Array
    weights: Array
    coef: Array
    pred: Array
    U: float
    side: str
    gram: Array | None
    factor: Array | None
    Z: Array | None = None
    H: Array | None = None
    exact: Fit | None = None


class Functional(Protocol):
    """``G(mu)`` and its first variation on weighted point sets (see the module doc)."""

    name: str
    problem: Problem
    comm: Communicator

    @property
    def dim(self) -> int:
        """Dimension of the space the measure lives on."""
        ...

    def features(self, W: Array) -> tuple[Array, Array]:
        """Features of points ``W`` on the training inputs, to pass back to :meth:`fit` (fixed grids)."""
        ...

    def fit(
        self,
        W: Array,
        q: Array,
        features: tuple[Array, Array] | None = None,
        Y: Array | None = None,
        signed: bool = False,
    ) -> Fit: ...

    def potential(self, fit: Fit, W: Array | None = None) -> Array: ...

    def grad_potential(self, fit: Fit, W: Array | None = None) -> Array: ...

    def energy(self, fit: Fit) -> dict[str, float]: ...

    def kernel_fit(self, fit: Fit) -> Fit: ...

    def predict(self, fit: Fit, X: Array) -> Array: ...

    def solver_state(self) -> dict[str, Array]:
        """The state the next fit starts from, as named arrays (empty for direct solves)."""
        ...

    def restore_solver(self, state: Mapping[str, Array]) -> None:
        """Continue from a :meth:`solver_state` (of a functional of the same problem and options)."""
        ...


def validate_measure(W: Array, q: Array, p: int, signed: bool = False) -> None:
    """Refuse points of the wrong shape, non-finite values and (unless ``signed``) negative weights."""
    xp = namespace(W, q)
    if W.ndim != 2 or W.shape[1] != p:
        raise ValueError(f"points must have shape (N, p={p}), got {W.shape}")
    if q.shape != (W.shape[0],):
        raise ValueError(f"weights must have shape ({W.shape[0]},), got {q.shape}")
    finite = xp.all(xp.isfinite(W))
    total = xp.sum(q)
    valid = xp.isfinite(total) & (total > 0)
    valid = valid if signed else valid & ~xp.any(q < 0)
    if bool(finite & valid):  # one read from a GPU each fit, not three
        return
    if not bool(finite):
        raise ValueError("points contain NaN or infinite values (did the dynamics diverge? reduce time.eta)")
    raise ValueError("weights must be finite and non-negative, with a positive sum (they are the measure's masses)")


def second_moment(fit: Fit, W: Array) -> float:
    """``E_mu ||w||^2 = sum_i q_i ||w_i||^2`` for points ``W`` carrying the fit's weights (this process's share)."""
    xp = namespace(W)
    return float(xp.sum(fit.weights * row_squares(W)))


class Drift(Protocol):
    """The drift ``b(w) = -grad_w V`` of MFLD at the points of a measure, as a particle scheme receives it.

    ``step`` is the index of the step being taken (stochastic drifts such as the
    label-noise procedure's draw their randomness from it); ``fit`` is the solved
    fit of ``(W, q)`` when the caller already has it.
    """

    def __call__(self, W: Array, q: Array, step: int, fit: Fit | None = None) -> Array: ...


class GradientDrift:
    """``b = -grad_w V_{mu_W}`` of a functional: plain MFLD."""

    def __init__(self, functional: Functional) -> None:
        self.functional = functional

    def __call__(self, W: Array, q: Array, step: int, fit: Fit | None = None) -> Array:
        F = self.functional
        return -F.grad_potential(F.fit(W, q) if fit is None else fit, W)


Objective = Callable[..., Functional]
"""An objective: ``make(problem, memory_budget, comm, **options)`` -> its :class:`Functional`."""

OBJECTIVES: Registry[Objective] = Registry("model.objective", group="mfld.objectives", builtins="mfld.model")
"""``model.objective`` -> the functional's class; each registers itself in its own module
(``@OBJECTIVES.register("classical", doc=...)``) or comes from a plug-in (entry points ``mfld.objectives``)."""
