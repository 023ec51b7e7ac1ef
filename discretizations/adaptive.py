"""Error-controlled time steps for the density solvers: step doubling with Richardson extrapolation.

Let ``Phi_h`` be a first-order one-step scheme (implicit Euler on the finite volumes, IMEX Euler spectrally). A
step of size ``h`` from the density ``m`` is attempted whole and in two halves,

    m_1 = Phi_h(m),     m_2 = Phi_{h/2}(Phi_{h/2}(m)),

``m_2 - m_1`` estimates the local error (it is ``C h^2 + O(h^3)``, and ``m_1``'s error is twice ``m_2``'s to leading
order), and the step taken is the Richardson extrapolation

    m_new = 2 m_2 - m_1,

second order in time. Its mass is the scheme's exactly (weights 2 and -1 sum to 1). Its positivity is not implied
by the scheme's: in the far tails, where a density of 1e-30 changes by orders of magnitude in one step, ``m_1 >
2 m_2`` happens at any practical step. Where the density must stay non-negative (finite volumes) the negative
values are set to zero and the mass restored by a factor ``1 + delta``. This costs no accuracy the estimate does not
already allow: at a cell where ``2 m_2 - m_1 < 0`` (both ``m_1``, ``m_2`` >= 0) the value removed is
``m_1 - 2 m_2 <= |m_2 - m_1|``, so the L1 change, ``2 delta`` at most, is within twice the accepted error estimate.

The error is measured against the change the step makes, in L1 (``|.|`` summed over cells times the cell volume):

    err = |m_2 - m_1| / (tol |m_2 - m| + atol).

A step is accepted when ``err <= 1``. The ratio is ``O(h / tau)`` with ``tau`` the time over which the density
changes appreciably, so ``tol`` bounds the step by a fixed fraction of that time scale: near mu*, where the
distance falls like ``exp(-kappa t)``, the steps settle at ``h ~ 4 tol / kappa`` and the decay rate measured from
them is exact to ``O(tol^2)`` (the steps of an absolute tolerance would grow without bound as ``m -> mu*`` and
misreport the rate). Because implicit Euler damps fast modes completely, the ratio is not monotone in ``h`` for
large steps (it peaks at ``1/9`` for a single decaying mode), which is why ``tol`` is capped well below that.
``atol`` only keeps the ratio defined when the density no longer changes (round-off).

The next step is ``h min(grow, max(shrink, safety / err))`` (the elementary controller for an error of order 1 in
``h``), at most ``eta_max``. Nothing of a rejected attempt is kept: the attempt is a pure function of ``m`` and
``h``. The controller's state (the next step, the last accepted one, the count of rejections) is part of the
run's state, so that a resumed run takes the same steps bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from mfld.model.backend import Array, namespace

TOL_MAX = 0.05
"""The largest ``time.tol``: below the peak 1/9 of the error ratio of implicit Euler on one decaying mode, with a
margin for the controller's safety factor."""


HOST_READS_PER_ATTEMPT = 11
"""Scalar reads from the device one attempt makes at most on a GPU backend, besides those of a fixed step: that the
extrapolation is finite, the change, the error, the minimum and, when clipping, two masses (six), the fit of the
midpoint's density (two), and one per solve of the scheme's (three: krylov's sign test). No array goes to the
host. tests/discretizations/test_fake_cupy.py holds an adaptive step to this."""


@dataclass(frozen=True)
class StepControl:
    """The tolerance and limits of the step-size controller (see the module doc)."""

    tol: float
    eta_max: float
    safety: float = 0.9
    grow: float = 5.0
    shrink: float = 0.2
    atol: float = 1e-14
    eta_min: float = 1e-12

    def __post_init__(self) -> None:
        if not 0 < self.tol <= TOL_MAX:
            raise ValueError(f"time.tol must be in (0, {TOL_MAX}], got {self.tol}")
        if not (math.isfinite(self.eta_max) and self.eta_max > 0):
            raise ValueError(f"time.eta_max must be a finite number > 0, got {self.eta_max}")


@dataclass(frozen=True)
class Controller:
    """The controller's state: the step it tries next, the last it accepted, and the rejections so far."""

    next: float
    last: float = 0.0
    rejected: int = 0

    def array(self) -> np.ndarray:
        """``[next, last, rejected]``, how a state stores it."""
        return np.array([self.next, self.last, float(self.rejected)])

    @classmethod
    def from_array(cls, values: np.ndarray) -> Controller:
        values = np.asarray(values, dtype=float).ravel()
        if values.shape != (3,) or not np.isfinite(values).all() or values[0] <= 0 or values[2] < 0:
            raise ValueError(
                f"the saved step control {values.tolist()} is not [next step > 0, last step, rejections >= 0]: "
                "the file was damaged or altered"
            )
        return cls(float(values[0]), float(values[1]), int(values[2]))


@dataclass(frozen=True)
class Attempt:
    """One attempted step: the extrapolated density (None when rejected), the error ratio and why it was rejected
    (``"error"``: above the tolerance; ``"not finite"``)."""

    density: Array | None
    err: float
    reason: str = ""


def attempt(
    step: Callable[[Array, float], Array], m: Array, h: float, control: StepControl, cell_volume: float, positive: bool
) -> Attempt:
    """Step doubling of the scheme ``step(m, h)`` from ``m`` (see the module doc): accepted or not, and ``err``."""
    xp = namespace(m)
    full = step(m, h)
    two = step(step(m, 0.5 * h), 0.5 * h)
    new = 2.0 * two - full
    if not bool(xp.all(xp.isfinite(new))):
        return Attempt(None, math.inf, "not finite")
    change = float(xp.sum(xp.abs(two - m))) * cell_volume
    err = float(xp.sum(xp.abs(two - full))) * cell_volume / (control.tol * change + control.atol)
    if err > 1.0:
        return Attempt(None, err, "error")
    if positive and float(xp.min(new)) < 0:
        new = xp.maximum(new, 0.0)
        new *= float(xp.sum(m)) / float(xp.sum(new))
    return Attempt(new, err)


def advance(
    step: Callable[[Array, float], Array],
    m: Array,
    controller: Controller,
    control: StepControl,
    cell_volume: float,
    positive: bool,
    where: str,
    limit: float = math.inf,
) -> tuple[Array, Controller]:
    """The next accepted step from ``m``, at most ``limit`` long, and the controller after it; rejected attempts
    are retried smaller. A step shortened to ``limit`` (to land on an end time) leaves the proposal for the next
    one as it was.

    Raises FloatingPointError naming ``where`` (the time) when the step would fall below ``control.eta_min``.
    """
    h = min(controller.next, limit)
    rejected = 0
    while True:
        trial = attempt(step, m, h, control, cell_volume, positive)
        if trial.density is not None:
            factor = (
                control.grow if trial.err == 0 else min(control.grow, max(control.shrink, control.safety / trial.err))
            )
            following = min(control.eta_max, h * factor)
            if rejected == 0 and h < controller.next:
                following = max(following, controller.next)
            return trial.density, replace(controller, next=following, last=h, rejected=controller.rejected + rejected)
        rejected += 1
        factor = max(control.shrink, min(0.5, control.safety / trial.err)) if trial.reason == "error" else 0.5
        h *= factor
        if h < control.eta_min:
            raise FloatingPointError(
                f"the adaptive step fell below {control.eta_min:g} at {where} (last attempt: {trial.reason}, error "
                f"ratio {trial.err:.3g}): the density cannot be advanced to time.tol = {control.tol:g}; raise "
                "time.tol, refine grid.cells, or set time.adaptive = false with a small time.eta"
            )
