"""Interacting particles: Euler-Maruyama for MFLD (THEORY.md section 3).

    w_i <- w_i - eta grad_w V_{mu_W}(w_i) + sqrt(2 eta lam) xi_i,   xi_i ~ N(0, I)

with ``mu_W = (1/N) sum_i delta_{w_i}``. With ``langevin=False`` the noise is
dropped and the step is the explicit Euler step of the mean-field gradient flow.
The scheme is a pure function :func:`euler_maruyama`; :class:`Particles` holds
the state (positions, step, time, random generator) around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from mfld.solver.backend import namespace, to_host
from mfld.solver.label_noise import procedure_gradient

from .noise import as_noise


def euler_maruyama(
    functional: Any, W: Any, q: Any, eta: float, xi: Any = None, fit: Any = None, grad: Any = None
) -> Any:
    """One step ``W - eta grad V_{mu_W}(W) + sqrt(2 eta lam) xi`` (no noise when ``xi`` is None).

    ``grad`` replaces ``grad V`` (the label-noise procedure's drift); ``fit`` reuses a solved second layer.
    """
    if grad is None:
        grad = functional.grad_potential(functional.fit(W, q) if fit is None else fit, W)
    W_new = W - eta * grad
    if xi is not None:
        W_new += math.sqrt(2.0 * eta * functional.problem.lam) * xi
    return W_new


@dataclass
class ParticleState:
    """Everything a run needs to continue bit for bit."""

    positions: Any
    step: int
    time: float
    rng_state: str


def check_step_size(problem: Any, eta: float) -> None:
    """Refuse steps at which even the prior's linear part is unstable.

    The confinement ``lam_w_bar w`` alone maps ``w -> (1 - eta lam_w_bar) w``; at
    ``eta lam_w_bar >= 1`` that factor is no longer a contraction towards 0 and
    the scheme cannot approximate the dynamics.
    """
    if not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"time.eta must be a finite number > 0, got {eta}")
    if eta * problem.lam_w_bar >= 1.0:
        raise ValueError(
            f"time.eta = {eta} is too large for stability: eta * lam * lam_w = {eta * problem.lam_w_bar:.3g} >= 1; "
            f"use time.eta < {1.0 / problem.lam_w_bar:.3g}"
        )


class Particles:
    """N equally weighted particles evolved by Euler-Maruyama.

    ``noise`` is a seed (noise keyed by step and global particle index, see
    :mod:`mfld.discretizations.noise`), a NumPy generator or a noise source; it is
    drawn on the host and moved to the device for CuPy, so CPU and GPU runs share
    the stream. ``langevin=False`` gives the noiseless gradient flow. With a
    communicator in the functional, ``positions`` are this process's block
    ``[offset, offset + len)`` of ``total`` particles.
    ``label_noise = s > 0`` runs the label-noise procedure (THEORY.md 4.6, see
    :mod:`mfld.solver.label_noise`): fresh ``eps ~ Unif[-s, s]`` every step, the
    drift of the clean loss of the second layer fitted on ``Y + eps``.
    """

    kind = "particles"

    def __init__(
        self,
        functional: Any,
        positions: Any,
        eta: float,
        noise: Any,
        langevin: bool = True,
        step: int = 0,
        time: float = 0.0,
        label_noise: float = 0.0,
        offset: int = 0,
        total: int | None = None,
    ) -> None:
        check_step_size(functional.problem, eta)
        if label_noise < 0:
            raise ValueError(f"model.label_noise must be >= 0, got {label_noise}")
        self.label_noise = float(label_noise)
        self.functional = functional
        self.eta = float(eta)
        self.langevin = langevin
        self.noise = as_noise(noise)
        xp = namespace(functional.problem.X)
        self.xp = xp
        self.positions = xp.asarray(positions, dtype=functional.problem.X.dtype)
        local = self.positions.shape[0]
        self.offset = int(offset)
        self.total = local if total is None else int(total)
        self.weights = xp.full(local, 1.0 / self.total, dtype=self.positions.dtype)
        self.step_count = int(step)
        self.time = float(time)
        self._fit = None

    def fit(self) -> Any:
        """The second layer of the current measure (cached until the next step)."""
        if self._fit is None:
            self._fit = self.functional.fit(self.positions, self.weights)
        return self._fit

    def measure(self) -> tuple[Any, Any]:
        """``(points, weights)`` of the current empirical measure."""
        return self.positions, self.weights

    def step(self) -> None:
        """Advance one Euler-Maruyama step of size ``eta``."""
        xi = None
        k = self.step_count + 1
        if self.langevin:
            local, p = self.positions.shape
            xi = self.xp.asarray(self.noise.normal(k, self.offset, self.offset + local, p), dtype=self.positions.dtype)
        grad = None
        if self.label_noise > 0:
            Y = self.functional.problem.Y
            s = self.label_noise
            eps = self.xp.asarray(self.noise.uniform(k, Y.shape, -s, s), dtype=Y.dtype)
            grad, _ = procedure_gradient(self.functional, self.positions, self.weights, eps)
        fit = None if grad is not None else self.fit()
        W_new = euler_maruyama(self.functional, self.positions, self.weights, self.eta, xi, fit, grad)
        if not bool(self.xp.all(self.xp.isfinite(W_new))):
            raise FloatingPointError(
                f"particle positions became NaN or infinite at step {self.step_count + 1}: the scheme diverged; "
                f"reduce time.eta (now {self.eta})"
            )
        self.positions, self._fit = W_new, None
        self.step_count += 1
        self.time += self.eta

    def entropy(self, max_points: int = 20000) -> float:
        """Kozachenko-Leonenko estimate of ``Ent(mu) = int mu log mu`` (see :func:`knn_entropy`).

        The estimate uses every ``stride``-th particle by global index, gathered
        from all processes, so it does not depend on how the particles are split.
        """
        stride = -(-self.total // max_points)
        first = (-self.offset) % stride
        sub = to_host(self.positions[first::stride])
        comm = getattr(self.functional, "comm", None)
        if comm is not None and comm.size > 1:
            sub = np.concatenate(comm.allgather(sub))
        return knn_entropy(sub)

    def state(self) -> ParticleState:
        """Host copy of the positions and the noise source's state."""
        return ParticleState(to_host(self.positions).copy(), self.step_count, self.time, self.noise.state())


def knn_entropy(W: np.ndarray) -> float:
    """Kozachenko-Leonenko nearest-neighbour estimate of ``int mu log mu``.

        Ent ~ -[psi(N) - psi(1) + log V_p + (p/N) sum_i log eps_i]

    with ``eps_i`` the distance from ``w_i`` to its nearest neighbour and ``V_p``
    the volume of the unit ball in ``R^p``. Consistent as ``N -> infinity`` but
    biased in high dimension; runs use it only to report the objective.
    """
    from scipy.spatial import cKDTree
    from scipy.special import digamma, gammaln

    W = np.asarray(W, dtype=np.float64)
    N, p = W.shape
    dist, _ = cKDTree(W).query(W, k=2)
    eps = np.maximum(dist[:, 1], 1e-300)
    log_vp = 0.5 * p * math.log(math.pi) - gammaln(0.5 * p + 1.0)
    return -float(digamma(N) - digamma(1) + log_vp + p * np.mean(np.log(eps)))
