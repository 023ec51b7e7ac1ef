"""The optimum mu* as the fixed point of the proximal Gibbs map (docs/theory.md §3).

    p_mu ∝ exp(-V_mu / lam),        mu* = p_{mu*}

On a grid the iteration runs on the log-density ``psi = log m`` (so positivity
holds by construction): ``G(psi) = log p_{exp(psi)}``, normalised to unit mass,
with residual ``f = G(psi) - psi``. A damped step ``psi + s f`` is the entropic
mirror-descent step of step ``s / lam`` on ``Obj = F + lam Ent`` (whose first
variation is ``V_mu + lam log mu = -lam f`` up to a constant), so for ``s`` small
enough it lowers Obj (Obj is convex along it). The iteration is safeguarded by that:
a step is accepted only when it lowers the merit Obj (or, within round-off of Obj,
when it lowers the certificate); Anderson mixing over the last ``memory`` accepted
steps (type II: ``gamma = argmin ||f - dF gamma||``, ``psi + s f - (dX + s dF) gamma``)
is tried first, then the plain damped step, whose ``s`` is halved after a rejection
and doubled (up to ``damping``) after an acceptance, but only once :data:`HOLD`
steps have been accepted since the last rejection. The best iterate is never lost.

Stopping uses the certificate of Nitanda, Wu and Suzuki (2022),

    Obj(mu) - Obj(mu*) <= lam KL(mu || p_mu) = -lam sum m f |cell|,

which needs no knowledge of mu*.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from mfld.model.backend import Array, namespace
from mfld.model.functional import Functional
from mfld.model.options import nonneg_int, option, positive, positive_int

from .density import entropy
from .mesh import Grid


class NotConvergedWarning(RuntimeWarning):
    """The fixed-point iteration stopped at ``max_iter`` with its certificate above ``tol``."""


@dataclass(frozen=True, kw_only=True)
class StationaryOptions:
    """The ``[stationary]`` keys: the fixed-point solver of mu* = p_{mu*} (:func:`solve_stationary`)."""

    section: ClassVar[str] = "stationary"
    tol: float = positive(1e-12, "the fixed-point solver stops when lam KL(mu || p_mu) < tol")
    max_iter: int = positive_int(
        500, "limit on the fixed-point solver's evaluations of the map (rejected trials count)"
    )
    damping: float = option(
        0.5,
        "the largest step s in psi <- psi + s (G(psi) - psi) (Anderson-mixed); halved while a step would raise Obj",
        (int, float),
        lambda v: 0 < v <= 1,
        "a number in (0, 1]",
    )
    memory: int = nonneg_int(5, "Anderson mixing depth (0: plain damped iteration)")


@dataclass
class StationaryResult:
    """The computed optimum and the history of the iteration (one entry per accepted iterate; ``evaluations``
    counts every map evaluation, rejected trials included). ``stalled``: no step lowered the merit any more
    (the round-off floor of Obj, or a map too stiff for the smallest step)."""

    density: Array
    objective: float
    certificate: float
    iterations: int
    converged: bool
    history: dict[str, list[float]] = field(default_factory=dict)
    evaluations: int = 0
    stalled: bool = False


def _normalise(psi: Array, cell_volume: float) -> Array:
    xp = namespace(psi)
    top = float(xp.max(psi))
    return psi - (top + math.log(float(xp.sum(xp.exp(psi - top))) * cell_volume))


MIN_STEP = 1e-10
"""The smallest damping tried before the iteration is declared stalled."""


HOLD = 9
"""Accepted steps at a backtracked size before the step is doubled again. A step that raised Obj once tends to
raise it again at the next iterates: doubling back at once (HOLD = 0) retried it every other evaluation, and left
a plain damped iteration (memory 0, damping 0.8, lam 0.2) short of 1e-12 in 300 evaluations. Over 400 cases
(lam 0.002 to 0.2, 4 data seeds, memory 0 to 6, damping 0.05 to 1; tests/discretizations/test_stationary.py's
problem) HOLD = 9 converges in all, with 16925 evaluations in total against 23392 and one failure at 0, 17445 and
one failure at 4, 16856 at 16; never growing again fails in 16."""


def _better(new: tuple[float, float], old: tuple[float, float]) -> bool:
    """Whether ``(Obj, certificate)`` ``new`` improves on ``old``: Obj lower, or equal to round-off with a lower
    certificate (near mu*, Obj's changes fall below its round-off while the certificate still falls)."""
    (obj, cert), (obj0, cert0) = new, old
    if not (math.isfinite(obj) and math.isfinite(cert)):
        return False
    return obj < obj0 or (obj <= obj0 + 8 * 2.2e-16 * max(abs(obj0), 1.0) and cert < cert0)


def solve_stationary(
    functional: Functional,
    grid: Grid,
    initial: Array | None = None,
    tol: float = 1e-12,
    max_iter: int = 500,
    damping: float = 0.5,
    memory: int = 5,
    callback: Callable[[int, float, float, float], None] | None = None,
) -> StationaryResult:
    """Iterate the proximal Gibbs map from ``initial`` (default: the prior) until the certificate is below ``tol``.

    The defaults are the ``[stationary]`` section's (``tol``, ``max_iter`` map evaluations, ``damping`` the
    largest step, ``memory``). ``callback(iteration, certificate, objective, step)`` sees every accepted iterate.
    Stopping short of ``tol`` (``max_iter`` evaluations, or stalled) warns (:class:`NotConvergedWarning`) and
    returns the iterate of the smallest certificate, with ``converged`` False.
    """
    if not 0 < damping <= 1:
        raise ValueError(f"stationary.damping must lie in (0, 1], got {damping}")
    if tol <= 0 or max_iter < 1 or memory < 0:
        raise ValueError("stationary.tol must be > 0, stationary.max_iter >= 1 and stationary.memory >= 0")
    pb = functional.problem
    xp = namespace(pb.X)
    vol, lam = grid.cell_volume, pb.lam
    points = xp.asarray(grid.centers(), dtype=pb.X.dtype)
    features = functional.features(points)
    if initial is None:
        psi = -0.5 * pb.lam_w * xp.sum(points * points, axis=1)
    else:
        psi = xp.log(xp.maximum(xp.asarray(initial, dtype=pb.X.dtype).ravel(), 1e-300))
    psi = _normalise(psi, vol)
    evaluations = 0

    def evaluate(psi: Array) -> tuple[Array, float, float]:
        nonlocal evaluations
        evaluations += 1
        m = xp.exp(psi)
        fit = functional.fit(points, m * vol, features)
        g = _normalise(-functional.potential(fit) / lam, vol)
        f = g - psi
        cert = -lam * float(xp.sum(m * f)) * vol
        obj = functional.energy(fit)["G"] + lam * entropy(m, vol)
        return f, cert, obj

    dX: list[Array] = []
    dF: list[Array] = []
    history: dict[str, list[float]] = {"certificate": [], "objective": [], "step": []}
    f, cert, obj = evaluate(psi)
    best = (cert, psi, obj)
    step, accepted, stalled = damping, 0, False
    hold = 0  # accepted steps to take at the backtracked size before trying a larger one again

    def record() -> None:
        history["certificate"].append(cert)
        history["objective"].append(obj)
        history["step"].append(step)
        if callback is not None:
            callback(accepted, cert, obj, step)

    record()
    while cert >= tol and evaluations < max_iter:
        trials = []
        if dF:  # Anderson's extrapolation first, kept only if it lowers the merit
            Fm = xp.stack(dF, axis=1)
            gamma = xp.linalg.lstsq(Fm, f, rcond=None)[0]
            trials.append(step * f - (xp.stack(dX, axis=1) + step * Fm) @ gamma)
        trials.append(step * f)
        kept = False
        for move in trials:
            new_psi = _normalise(psi + move, vol)
            new_f, new_cert, new_obj = evaluate(new_psi)
            kept = _better((new_obj, new_cert), (obj, cert))
            if kept or evaluations >= max_iter:
                break
            dX.clear()  # a rejected Anderson step: its history is of no use (a no-op after the plain step)
            dF.clear()
        if not kept:
            step /= 2  # backtrack: a smaller damped step lowers Obj (mirror descent)
            hold = HOLD  # doubling back at once would retry the step just rejected, every other evaluation
            if step < MIN_STEP:
                stalled = True
                break
            continue
        if memory > 0:
            dX.append(new_psi - psi)
            dF.append(new_f - f)
            if len(dX) > memory:
                dX.pop(0)
                dF.pop(0)
        psi, f, cert, obj = new_psi, new_f, new_cert, new_obj
        accepted += 1
        if hold:
            hold -= 1
        else:
            step = min(damping, 2 * step)
        if cert < best[0]:
            best = (cert, psi, obj)
        record()
    converged = cert < tol
    if not converged and best[0] < cert:
        cert, psi, obj = best
    if not converged:
        why = (
            "stalled: no step lowers Obj any more"
            if stalled
            else f"stopped at max_iter = {max_iter} evaluations while the certificate still fell"
        )
        warnings.warn(
            f"the fixed-point iteration did not reach tol = {tol:g}: {why} (certificate {cert:.3e} after "
            f"{accepted} accepted steps); raise max_iter, or lower tol to what the grid can resolve",
            NotConvergedWarning,
            stacklevel=2,
        )
    density = xp.exp(psi).reshape(grid.shape)
    return StationaryResult(density, obj, cert, accepted, converged, history, evaluations, stalled)
