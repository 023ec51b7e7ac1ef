"""Interacting particles for MFLD (docs/theory.md §3).

The empirical measure ``mu_W = (1/N) sum_i delta_{w_i}`` moves under a drift
``b = -grad_w V_{mu_W}`` (a :class:`~mfld.model.functional.Drift`: plain MFLD,
or the label-noise procedure's) by a time scheme from :data:`PARTICLE_SCHEMES`:

    euler-maruyama:   w_i <- w_i + eta b(w_i) + sqrt(2 eta lam) xi_i,   xi_i ~ N(0, I)

With ``langevin=False`` the noise is dropped: the explicit Euler step of the
mean-field gradient flow. A one-step scheme is a pure function; :class:`Particles`
holds the state (positions, step, time, noise source) around it. A scheme with
memory (one that needs, say, the previous step's noise) is a class of
:class:`SchemeWithMemory` shape: built from its ``history`` (arrays of N x p, newest
first, empty for a new run), called like a function, and returning what it keeps
with ``history(like)``, which the run's state saves for an exact resume. Either kind
may declare ``check_step(problem, eta)``, the refusal of a step it cannot take
(:func:`step_check`; by default the explicit step's limit, :func:`check_step_size`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

import numpy as np

from mfld.model.backend import Array, namespace, to_host
from mfld.model.distributed import Communicator, Serial, shard
from mfld.model.functional import Drift, Fit, Functional, GradientDrift
from mfld.model.label_noise import LabelNoiseDrift
from mfld.model.options import choice, flag, internal, nonneg_int, option, positive, ref
from mfld.model.problem import Problem
from mfld.model.registry import Registry
from mfld.model.two_timescale import TwoTimescaleFunctional

from .entropy import knn_entropy, knn_entropy_se
from .kinds import DISCRETIZATIONS, Discretization
from .noise import KeyedNoise, NoiseSource, as_noise, noise_from_state
from .state import ParticleState, check_levels


class ParticleScheme(Protocol):
    """One step ``W -> W'`` of size ``eta`` given the drift, the step's noise ``xi`` (or None) and ``lam``."""

    def __call__(
        self,
        W: Array,
        q: Array,
        drift: Drift,
        eta: float,
        lam: float,
        xi: Array | None,
        step: int,
        fit: Fit | None = None,
    ) -> Array: ...


def euler_maruyama(
    W: Array, q: Array, drift: Drift, eta: float, lam: float, xi: Array | None, step: int, fit: Fit | None = None
) -> Array:
    """``W + eta b(W) + sqrt(2 eta lam) xi`` (no noise when ``xi`` is None); ``fit`` is the solved fit of ``W``."""
    W_new = W + eta * drift(W, q, step, fit)
    if xi is not None:
        W_new += math.sqrt(2.0 * eta * lam) * xi
    return W_new


class SchemeWithMemory(ParticleScheme, Protocol):
    """A particle scheme that keeps ``levels`` arrays of earlier steps (N x p each; NaN for those not there yet)."""

    levels: int

    def history(self, like: np.ndarray) -> tuple[np.ndarray, ...]: ...


def build_scheme(name: str, history: tuple[np.ndarray, ...] = (), options: Any = None) -> ParticleScheme:
    """The scheme registered as ``name``: the function itself (no levels), or an instance of the class, built from
    ``history`` (as many arrays as its ``levels``) and, for a scheme with options of its own, them."""
    entry = PARTICLE_SCHEMES[name]
    levels = int(getattr(entry, "levels", 0)) if isinstance(entry, type) else 0
    check_levels(PARTICLE_SCHEMES.key, name, levels, history)
    if isinstance(entry, type):
        scheme: ParticleScheme = entry(history) if options is None else entry(history, options)
        return scheme
    return entry


PARTICLE_SCHEMES: Registry[ParticleScheme | type] = Registry(
    "particles.scheme", group="mfld.particle_schemes", builtins="mfld.discretizations"
)
PARTICLE_SCHEMES.add("euler-maruyama", euler_maruyama, "Euler-Maruyama, weak order 1")


HOST_READS_PER_STEP = 4
"""Scalar reads from the device a particle step makes at most on a GPU backend (``backend = "cupy"``): that the new
positions are finite, the fit's check of its measure (points finite, weights valid: one read), the dual objective
U (one float), and, on a step that forms pcg's preconditioner anew, its precision probe. The label-noise procedure
adds one (the U of its noisy fit). No array is copied to the
host inside a step; the noise is drawn on the host and uploaded (one upload, three with label noise).
tests/discretizations/test_fake_cupy.py holds the step to these numbers."""


PARTICLE_DIAGNOSTICS = {
    "entropy_se": "standard error of the particles' entropy estimate, by subsampling in 8 disjoint groups (the "
    "objective's is lam times it; the estimate's bias is not in it)"
}
"""What a particle run records beside the observables (:meth:`Particles.diagnostics`), with its meaning."""


class StepSizeWarning(UserWarning):
    """The step is stable but close to the limit of the prior's linear part."""


def check_step_size(problem: Problem, eta: float) -> None:
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
    if eta * problem.lam_w_bar >= 0.5:
        warnings.warn(
            f"time.eta = {eta} is within a factor 2 of the stability limit {1.0 / problem.lam_w_bar:.3g} "
            f"(eta * lam * lam_w = {eta * problem.lam_w_bar:.3g}): the confinement overshoots and E||w||^2 can "
            f"grow; time.eta < {0.5 / problem.lam_w_bar:.3g} is safe",
            StepSizeWarning,
            stacklevel=2,
        )


def check_mobility(functional: Functional, eta: float, scheme: str = "euler-maruyama") -> None:
    """Refuse a step at which the second layer's confinement, sped up by the classical objective's rate r
    (``model.second_layer_rate``), is unstable: ``eta r lam lam_a < 1`` as ``eta lam lam_w < 1`` for w (unless the
    scheme moves the second layer exactly, ``exact-second-layer``)."""
    mobility = getattr(functional, "mobility", None)
    if mobility is None or getattr(PARTICLE_SCHEMES[scheme], "second_layer_exact", False):
        return
    rate, lam_a_bar = float(max(mobility)), functional.problem.lam_a_bar
    if eta * rate * lam_a_bar >= 1.0:
        raise ValueError(
            f"time.eta = {eta} with model.second_layer_rate = {rate:g} is unstable for the second layer: "
            f"eta * r * lam * lam_a = {eta * rate * lam_a_bar:.3g} >= 1; use time.eta < {1.0 / (rate * lam_a_bar):.3g} "
            "or particles.scheme = 'exact-second-layer'"
        )


class MobileDrift:
    """``D b``: a drift ``b`` times a constant mobility per coordinate (the classical objective's ``diag(r I_T,
    I_p)``, THEORY.md §7)."""

    def __init__(self, drift: Drift, mobility: Array) -> None:
        self.drift, self.mobility = drift, mobility

    def __call__(self, W: Array, q: Array, step: int, fit: Fit | None = None) -> Array:
        return self.mobility * self.drift(W, q, step, fit)


def step_check(name: str) -> Callable[[Problem, float], None]:
    """The step-size check of the particle scheme registered as ``name``: its own ``check_step(problem, eta)``
    where it declares one, else :func:`check_step_size`, the limit every explicit step shares (the prior's
    linear part must contract)."""
    check: Callable[[Problem, float], None] = getattr(PARTICLE_SCHEMES[name], "check_step", check_step_size)
    return check


def initial_measure(functional: Functional, Z: np.ndarray, sd: float | None = None) -> np.ndarray:
    """Standard normals ``Z`` (N x dim) scaled to the initial measure.

    The prior ``nu``: ``w ~ N(0, I / lam_w)`` (and ``a ~ N(0, I / lam_a)`` for the classical
    objective); with ``sd``, ``N(0, sd^2 I)`` on every coordinate instead.
    """
    if sd is not None:
        return Z * sd
    pb = functional.problem
    T = functional.dim - pb.p
    return np.concatenate([Z[:, :T] / np.sqrt(pb.lam_a), Z[:, T:] / np.sqrt(pb.lam_w)], axis=1)


def initial_positions(
    functional: Functional, noise: NoiseSource, start: int, stop: int, sd: float | None = None
) -> np.ndarray:
    """Particles ``start .. stop - 1`` of the initial measure (:func:`initial_measure`), drawn from the
    noise at step 0 so that any split over processes gives the same."""
    return initial_measure(functional, noise.normal(0, start, stop, functional.dim), sd)


@dataclass(frozen=True, kw_only=True)
class ParticleOptions:
    """What a particle run is built from: the ``[particles]`` keys of its fields' names, and the step ``time.eta``,
    the ``seed`` of its noise and the label-noise level ``model.label_noise`` (``s > 0``: the procedure's drift)."""

    section: ClassVar[str] = "particles"
    N: int = option(300, "number of particles", int, lambda v: v >= 2, "an integer >= 2")
    init: str = choice(
        "prior",
        "the initial measure: `prior` nu = N(0, I / lam_w), or `gaussian` N(0, init_sd^2 I)",
        ("prior", "gaussian"),
        docs=False,
        since="0.2.0.dev1",
    )
    init_sd: float = positive(1.0, "standard deviation of the `gaussian` initial measure", since="0.2.0.dev1")
    scheme: str = choice("euler-maruyama", "time scheme of the particles", PARTICLE_SCHEMES)
    langevin: bool = flag(True, "`false` drops the noise: the mean-field gradient flow")
    memory_budget_mb: int = nonneg_int(
        0,
        "bound on one chunk's features (MiB; the passes over them add a few 16 MiB cache blocks); 0: half the "
        "memory available when the run starts, divided by the processes, fixed then and stored in the file (so "
        "that pcg keeps the features whenever they fit)",
    )
    eta: float = ref("time.eta")
    adaptive: bool = ref("time.adaptive")
    seed: int = ref("seed")
    label_noise: float = ref("model.label_noise")
    scheme_options: Any = internal()


class Particles:
    """N equally weighted particles moved by a particle scheme.

    ``noise`` is a seed (noise keyed by step and global particle index, see
    :mod:`mfld.discretizations.noise`), a NumPy generator or a noise source; it is
    drawn on the host and moved to the device for CuPy, so CPU and GPU runs share
    the stream. ``drift`` defaults to ``-grad V`` of the functional.
    ``langevin=False`` gives the noiseless gradient flow. With a communicator in
    the functional, ``positions`` are this process's block
    ``[offset, offset + len)`` of ``total`` particles.
    """

    kind = "particles"

    def __init__(
        self,
        functional: Functional,
        positions: Array,
        eta: float,
        noise: NoiseSource | np.random.Generator | int,
        langevin: bool = True,
        step: int = 0,
        time: float = 0.0,
        drift: Drift | None = None,
        scheme: str = "euler-maruyama",
        offset: int = 0,
        total: int | None = None,
        history: tuple[np.ndarray, ...] = (),
        scheme_options: Any = None,
    ) -> None:
        step_check(scheme)(functional.problem, eta)
        check_mobility(functional, eta, scheme)
        self.functional = functional
        self.drift: Drift = GradientDrift(functional) if drift is None else drift
        self.eta = float(eta)
        self.langevin = langevin
        self.noise = as_noise(noise)
        xp = namespace(functional.problem.X)
        self.xp = xp
        # A mobility D (the classical objective's second-layer rate): drift D b and noise sqrt(D) xi per coordinate.
        mobility = getattr(functional, "mobility", None)
        self._mobility = None if mobility is None else xp.asarray(mobility, dtype=functional.problem.X.dtype)
        self._noise_scale = None if self._mobility is None else xp.sqrt(self._mobility)  # once, not every step
        if self._mobility is not None:
            self.drift = MobileDrift(self.drift, self._mobility)
        self.positions = xp.asarray(positions, dtype=functional.problem.X.dtype)
        self.scheme = build_scheme(
            scheme, tuple(xp.asarray(h, dtype=self.positions.dtype) for h in history), scheme_options
        )
        local = self.positions.shape[0]
        self.offset = int(offset)
        self.total = local if total is None else int(total)
        self.weights = xp.full(local, 1.0 / self.total, dtype=self.positions.dtype)
        self.step_count = int(step)
        self.time = float(time)
        self._fit: Fit | None = None
        self._sample: tuple[int, np.ndarray] | None = None  # the entropy's sample, with its step
        self._solver = functional.solver_state()  # what the first fit at this step starts from

    @classmethod
    def build(
        cls,
        options: ParticleOptions,
        functional: Functional,
        state: ParticleState | None = None,
        comm: Communicator | None = None,
        optimum: Callable[..., float] | None = None,
    ) -> Self:
        """A fresh run of ``options`` (``state`` None: the initial measure drawn from the keyed noise at step 0)
        or one continuing ``state``; with a communicator of several processes, this process's block of the
        particles. ``optimum`` is not used: particles do not record a gap to mu*."""
        comm = Serial() if comm is None else comm
        start, stop = shard(options.N, comm.rank, comm.size)
        history: tuple[np.ndarray, ...] = ()
        if state is None:
            noise: NoiseSource = KeyedNoise(options.seed)
            sd = options.init_sd if options.init == "gaussian" else None
            W, step, time = initial_positions(functional, noise, start, stop, sd), 0, 0.0
        elif isinstance(state, ParticleState):
            noise, W, step, time, history = (
                noise_from_state(state.rng_state),
                state.positions,
                state.step,
                state.time,
                state.history,
            )
            # The solver continues where it was: each process from its block of the measure it was factored at
            # (a sharded file's rows of this process), with the first guesses every process shares.
            functional.restore_solver(state.solver)
        else:
            raise TypeError(f"a particle run continues from particles, not a {type(state).__name__}")
        drift = None
        if options.label_noise > 0:
            # make_functional refuses the procedure for the other objectives, before this.
            assert isinstance(functional, TwoTimescaleFunctional)
            drift = LabelNoiseDrift(functional, options.label_noise, noise.uniform)
        return cls(
            functional,
            W,
            options.eta,
            noise,
            options.langevin,
            step,
            time,
            drift=drift,
            scheme=options.scheme,
            offset=start,
            total=options.N,
            history=history,
            scheme_options=options.scheme_options,
        )

    @staticmethod
    def memory(options: ParticleOptions, n: int, n_test: int, p: int, budget: int) -> dict[str, int]:
        """Bytes (float64) of the largest arrays, by the configuration key that sizes them: the positions and their
        step temporaries (six N x p arrays); the features (n x N), in chunks of at most ``budget`` bytes when the
        n x n system is solved, whole (Z, h, h' and the weighted copies: five arrays) when N < n and the N x N one
        is; the dual system (a few copies); the test predictions (n_test x N, in chunks)."""
        N, item = options.N, 8
        out = {"particles.N": item * 6 * N * p, "data.n_test": min(budget, item * 3 * n_test * N)}
        if N >= n:
            out["particles.N"] += min(budget, item * 3 * n * N)
            out["data.n"] = item * 4 * n * n
        else:
            out["data.n"] = item * 5 * n * N
            out["particles.N"] += item * 4 * N * N
        return out

    @staticmethod
    def check(options: ParticleOptions, functional: Functional) -> None:
        """Refuse, before any work, a step size the scheme cannot take (:func:`step_check`), and adaptive steps."""
        if options.adaptive:
            raise ValueError(
                "time.adaptive = true: error-controlled steps are for the density discretisations ('grid', "
                "'spectral'); particles take the fixed step time.eta (set time.adaptive = false)"
            )
        step_check(options.scheme)(functional.problem, options.eta)
        check_mobility(functional, options.eta, options.scheme)

    def fit(self) -> Fit:
        """The functional's fit of the current measure (cached until the next step)."""
        if self._fit is None:
            self._fit = self.functional.fit(self.positions, self.weights)
        return self._fit

    def measure(self) -> tuple[Array, Array]:
        """``(points, weights)`` of the current empirical measure."""
        return self.positions, self.weights

    def step(self) -> None:
        """Advance one step of size ``eta``."""
        xi = None
        k = self.step_count + 1
        if self.langevin:
            local, p = self.positions.shape
            xi = self.xp.asarray(self.noise.normal(k, self.offset, self.offset + local, p), dtype=self.positions.dtype)
            if self._noise_scale is not None:
                xi = xi * self._noise_scale
        W_new = self.scheme(
            self.positions, self.weights, self.drift, self.eta, self.functional.problem.lam, xi, k, self._fit
        )
        if not bool(self.xp.all(self.xp.isfinite(W_new))):
            raise FloatingPointError(
                f"particle positions became NaN or infinite at step {self.step_count + 1}: the scheme diverged; "
                f"reduce time.eta (now {self.eta})"
            )
        self.positions, self._fit = W_new, None
        self.step_count += 1
        self.time = self.step_count * self.eta  # exact: a sum of etas drifts (40.0000000000003 after 400 of 0.1)
        self._solver = self.functional.solver_state()

    def entropy(self) -> float:
        """Kozachenko-Leonenko estimate of ``Ent(mu) = int mu log mu`` (see :func:`~.entropy.knn_entropy`)."""
        return knn_entropy(self._entropy_sample())

    def diagnostics(self) -> dict[str, float]:
        """:data:`PARTICLE_DIAGNOSTICS`: the standard error of :meth:`entropy` (the objective's is lam times it)."""
        return {"entropy_se": knn_entropy_se(self._entropy_sample())}

    def _entropy_sample(self, max_points: int = 20000) -> np.ndarray:
        """Every ``stride``-th particle by global index (at most ``max_points``), gathered from all processes, so
        that the estimates do not depend on how the particles are split. Kept for the step: a record asks for it
        twice (the entropy and its standard error), and each time is a host copy and, over MPI, an allgather."""
        if self._sample is not None and self._sample[0] == self.step_count:
            return self._sample[1]
        stride = -(-self.total // max_points)
        first = (-self.offset) % stride
        sub = to_host(self.positions[first::stride])
        comm = self.functional.comm
        if comm.size > 1:
            sub = np.concatenate(comm.allgather(sub))
        self._sample = (self.step_count, sub)
        return sub

    def state(self) -> ParticleState:
        """Host copy of the positions, the noise source's state, the scheme's history and the solver state as it
        entered this step (before any fit here: the observers' fits of this step are the step's own)."""
        positions = to_host(self.positions).copy()
        keeps = getattr(self.scheme, "history", None)
        history = keeps(positions) if callable(keeps) else ()
        solver = {name: to_host(value) for name, value in self._solver.items()}
        return ParticleState(positions, self.step_count, self.time, self.noise.state(), history, solver)


DISCRETIZATIONS.add(
    "particles",
    Discretization(
        ParticleOptions,
        Particles.build,
        Particles.check,
        PARTICLE_SCHEMES,
        ParticleState,
        Particles.memory,
    ),
    "interacting particles, any dimension",
)
