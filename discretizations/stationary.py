"""The optimum mu* as the fixed point of the proximal Gibbs map (docs/theory.md §3).

    p_mu ∝ exp(-V_mu / lam),        mu* = p_{mu*}

On a grid the iteration runs on the log-density ``psi = log m`` (so positivity
holds by construction): ``G(psi) = log p_{exp(psi)}``, normalised to unit mass,
with residual ``f = G(psi) - psi``. Each iteration is a damped step
``psi + beta f`` improved by Anderson mixing over the last ``memory`` residuals
(type II: ``gamma = argmin ||f - dF gamma||``, ``psi <- psi + beta f - (dX + beta dF) gamma``).

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
    max_iter: int = positive_int(500, "iteration limit of the fixed-point solver")
    damping: float = option(
        0.5,
        "beta in psi <- psi + beta (G(psi) - psi), before Anderson mixing",
        (int, float),
        lambda v: 0 < v <= 1,
        "a number in (0, 1]",
    )
    memory: int = nonneg_int(5, "Anderson mixing depth (0: plain damped iteration)")


@dataclass
class StationaryResult:
    """The computed optimum and the history of the iteration."""

    density: Array
    objective: float
    certificate: float
    iterations: int
    converged: bool
    history: dict[str, list[float]] = field(default_factory=dict)


def _normalise(psi: Array, cell_volume: float) -> Array:
    xp = namespace(psi)
    top = float(xp.max(psi))
    return psi - (top + math.log(float(xp.sum(xp.exp(psi - top))) * cell_volume))


def solve_stationary(
    functional: Functional,
    grid: Grid,
    initial: Array | None = None,
    tol: float = 1e-12,
    max_iter: int = 500,
    damping: float = 0.5,
    memory: int = 5,
    callback: Callable[[int, float, float], None] | None = None,
) -> StationaryResult:
    """Iterate the proximal Gibbs map from ``initial`` (default: the prior) until the certificate is below ``tol``.

    The defaults are the ``[stationary]`` section's (``tol``, ``max_iter``, ``damping``, ``memory``). Not
    reaching ``tol`` in ``max_iter`` iterations warns (:class:`NotConvergedWarning`) and returns the iterate of the
    smallest certificate, with ``converged`` False.
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

    def evaluate(psi: Array) -> tuple[Array, float, float]:
        m = xp.exp(psi)
        fit = functional.fit(points, m * vol, features)
        g = _normalise(-functional.potential(fit) / lam, vol)
        f = g - psi
        cert = -lam * float(xp.sum(m * f)) * vol
        obj = functional.energy(fit)["G"] + lam * entropy(m, vol)
        return f, cert, obj

    dX: list[Array] = []
    dF: list[Array] = []
    history: dict[str, list[float]] = {"certificate": [], "objective": []}
    best = (math.inf, psi)
    f, cert, obj = evaluate(psi)
    it = 0
    for it in range(1, max_iter + 1):
        history["certificate"].append(cert)
        history["objective"].append(obj)
        if callback is not None:
            callback(it - 1, cert, obj)
        if cert < best[0]:
            best = (cert, psi)
        if cert < tol:
            break
        step = damping * f
        if dF:
            Fm = xp.stack(dF, axis=1)
            gamma = xp.linalg.lstsq(Fm, f, rcond=None)[0]
            step = step - (xp.stack(dX, axis=1) + damping * Fm) @ gamma
        new_psi = _normalise(psi + step, vol)
        new_f, new_cert, new_obj = evaluate(new_psi)
        if not math.isfinite(new_cert) or new_cert > 10 * best[0] + 1e-14:
            # Anderson overshot: restart the history from the best point with a plain damped step.
            dX.clear()
            dF.clear()
            psi = _normalise(best[1] + damping * evaluate(best[1])[0], vol)
            f, cert, obj = evaluate(psi)
            continue
        if memory > 0:
            dX.append(new_psi - psi)
            dF.append(new_f - f)
            if len(dX) > memory:
                dX.pop(0)
                dF.pop(0)
        psi, f, cert, obj = new_psi, new_f, new_cert, new_obj
    converged = cert < tol
    if not converged and best[0] < cert:
        psi = best[1]
        f, cert, obj = evaluate(psi)
    if not converged:
        warnings.warn(
            f"the fixed-point iteration did not reach tol = {tol:g} in max_iter = {max_iter} iterations "
            f"(certificate {cert:.3e}); raise max_iter or lower damping",
            NotConvergedWarning,
            stacklevel=2,
        )
    density = xp.exp(psi).reshape(grid.shape)
    return StationaryResult(density, obj, cert, it, converged, history)
