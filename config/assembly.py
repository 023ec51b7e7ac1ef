"""A configuration made into its pieces: data -> problem -> functional -> discretisation (no files).

The one path from a configuration to a running system, shared by ``mfld run`` (which adds files and
observers, :mod:`mfld.solver.build`) and the experiments and checks (:mod:`mfld.validation`), which
sit below the run machinery: every piece is chosen from its registry
(:data:`~mfld.model.objectives.OBJECTIVES`, :data:`~mfld.discretizations.kinds.DISCRETIZATIONS`, ...)
and built from its typed options (:mod:`mfld.config.typed`); each sees the others only through their
interfaces.
"""

from __future__ import annotations

import logging
import math
import time
import warnings

import numpy as np

from mfld.discretizations.density import grid_for
from mfld.discretizations.kinds import DISCRETIZATIONS
from mfld.discretizations.mesh import Grid
from mfld.discretizations.state import DensityState, ParticleState
from mfld.discretizations.stationary import NotConvergedWarning, StationaryResult, solve_stationary
from mfld.discretizations.system import System
from mfld.model.backend import available_memory, get_backend
from mfld.model.datasets import make_dataset, read_dataset
from mfld.model.distributed import Communicator, Serial
from mfld.model.features import get_feature_map
from mfld.model.functional import Functional
from mfld.model.objectives import OBJECTIVES, make_functional
from mfld.model.observables import Evaluation, evaluate
from mfld.model.problem import Problem
from mfld.model.standard_data import is_standard, load_standard, standard_set

from .progress import SETTINGS, bar
from .tree import Config, get
from .typed import RunConfig, typed

log = logging.getLogger("mfld")
DATA_KEYS = ("X", "Y", "X_test", "Y_test", "relevant")

Data = dict[str, np.ndarray]
"""A run's data: ``{X, Y, X_test, Y_test, relevant}``."""


def generate_data(config: Config | RunConfig) -> Data:
    """The configuration's data as ``{X, Y, X_test, Y_test, relevant}``: read from ``data.source``, or generated."""
    rc = typed(config)
    c = rc.data
    if is_standard(c.source):
        ds = load_standard(c.source, seed=rc.run.seed)
    elif c.source:
        ds = read_dataset(c.source, c.x_columns, c.y_columns, c.test_source or None, c.comment)
    else:
        ds = make_dataset(
            c.target,
            d=c.d,
            n=c.n,
            n_test=c.n_test,
            noise=c.noise,
            inputs=c.inputs,
            link=c.link,
            m=c.m,
            frequency=c.frequency,
            seed=rc.run.seed,
        )
    return {k: getattr(ds, k) for k in DATA_KEYS}


def with_data_sizes(config: Config, data: Data) -> Config:
    """The configuration with ``data.d``, ``data.n`` (and ``data.n_test``) those of the data, as stored in files."""
    out = {**config, "data": dict(config["data"])}
    out["data"]["n"], out["data"]["d"] = (int(v) for v in data["X"].shape)
    if data.get("X_test") is not None:
        out["data"]["n_test"] = int(data["X_test"].shape[0])
    return out


def build_problem(
    config: Config | RunConfig, data: Data | None = None, backend: str | None = None, trust: bool = True
) -> Problem:
    """The :class:`Problem` of a configuration on ``backend`` (default: the configured one), in its dtype.

    To analyse a saved run on another machine, pass the data read from its file
    and the backend of this machine: ``build_problem(snap.config, snap.data, backend="numpy")``.
    ``trust = False`` (configurations read from files) refuses feature maps named by import path.
    """
    rc = typed(config)
    data = generate_data(rc) if data is None else data
    m = rc.model
    pb = Problem(
        data["X"],
        data["Y"],
        get_feature_map(m.feature, allow_import=trust),
        m.lam,
        m.lam_a,
        m.lam_w,
        data.get("X_test"),
        data.get("Y_test"),
        data.get("relevant"),
    )
    return pb.to(get_backend(rc.run.backend if backend is None else backend), np.dtype(rc.run.dtype))


def build_functional(config: Config | RunConfig, problem: Problem, comm: Communicator | None = None) -> Functional:
    """The configured functional, built with its objective's options; for densities with label noise, its
    expectation ``G + (s^2/6n) df``.

    Particles run the label-noise procedure itself (:meth:`~mfld.discretizations.particles.Particles.build`).
    """
    rc = typed(config)
    density = DISCRETIZATIONS[rc.run.discretization].density
    return make_functional(
        rc.model.objective,
        problem,
        memory_budget(rc),
        comm,
        label_noise=rc.model.label_noise,
        options=rc.objective,
        expectation=density,
    )


def memory_budget(config: Config | RunConfig, processes: int = 1) -> int:
    """Bytes one chunk of particles' temporaries may take: ``particles.memory_budget_mb``, or for 0 half the
    memory available now shared among ``processes`` (at least 64 MiB)."""
    mb = get(typed(config).tree, "particles.memory_budget_mb")
    if mb > 0:
        return int(mb) * 2**20
    return max(64 * 2**20, available_memory() // (2 * processes))


def fix_memory_budget(config: Config, comm: Communicator | None = None) -> Config:
    """The configuration with ``particles.memory_budget_mb = 0`` replaced by the budget chosen now (rank 0's, on
    every process): the file stores it, so that a resume chunks the particles exactly as the run did and stays
    bit-identical wherever it runs."""
    if config["particles"]["memory_budget_mb"] > 0:
        return config
    comm = Serial() if comm is None else comm
    chosen = comm.bcast(memory_budget(config, comm.size) // 2**20 if comm.rank == 0 else 0)
    return {**config, "particles": {**config["particles"], "memory_budget_mb": chosen}}


def build_grid(config: Config | RunConfig, functional: Functional) -> Grid:
    """The box of ``grid.half_width`` and ``grid.cells``, refused if it cannot hold the prior."""
    tree = typed(config).tree
    return grid_for(functional, get(tree, "grid.half_width"), get(tree, "grid.cells"))


def stationary(
    config: Config | RunConfig, functional: Functional, grid: Grid, verbose: bool = True
) -> StationaryResult:
    """The optimum mu* on the configured grid (fixed point of the proximal Gibbs map); each accepted iterate is
    logged (``verbose``: at INFO, else DEBUG), and a solve that stops short of ``stationary.tol`` is refused with
    what happened and every way out."""
    rc = typed(config)
    s = rc.stationary
    # On a terminal the bar carries the iterations (its ETA from the decades of the certificate left); the log
    # lines then go to DEBUG, and stay at INFO in a batch job's log.
    shown = bar(SETTINGS[rc.output.progress] if verbose else False, desc="mu*", unit="decade", total=1.0)
    level = logging.INFO if verbose and shown.disable else logging.DEBUG
    started = time.perf_counter()
    first: list[float] = []

    def report(it: int, cert: float, obj: float, step: float) -> None:
        log.log(
            level,
            f"  mu*: step {it:4d}   lam KL(mu || p_mu) = {cert:.3e}   Obj = {obj:.12g}   damping {step:.3g}   "
            f"{time.perf_counter() - started:.1f} s",
        )
        if not first:
            first.append(cert)
            shown.total = round(max(math.log10(max(cert, s.tol) / s.tol), 0.01), 2)
        shown.n = round(min(shown.total, max(0.0, math.log10(first[0] / max(cert, 1e-300)))), 2)
        shown.set_postfix(certificate=f"{cert:.2e}", damping=f"{step:.2g}", refresh=False)
        shown.refresh()

    with warnings.catch_warnings(), shown:  # refused below with the configuration's key names instead
        warnings.simplefilter("ignore", NotConvergedWarning)
        result = solve_stationary(
            functional,
            grid,
            tol=s.tol,
            max_iter=s.max_iter,
            damping=s.damping,
            memory=s.memory,
            callback=report,
        )
    if not result.converged:
        certs = result.history["certificate"]
        what = (
            "it stalled: no step, down to a damping of 1e-10, lowers Obj any more (the certificate is at the "
            "round-off floor of this grid, or the map is too stiff)"
            if result.stalled
            else f"it ran out of evaluations while still converging (certificate {certs[0]:.3e} -> {certs[-1]:.3e} "
            f"in {result.iterations} accepted steps)"
        )
        raise RuntimeError(
            f"the fixed-point iteration for mu* did not reach stationary.tol = {s.tol:g} in {result.evaluations} "
            f"evaluations (stationary.max_iter = {s.max_iter}; best certificate {result.certificate:.3e}): {what}. "
            "Ways out: raise stationary.max_iter, loosen stationary.tol, lower stationary.damping (the largest "
            "step), or set grid.gap = false to run the dynamics without the gap to mu*"
        )
    log.log(
        level,
        f"  mu*: certificate {result.certificate:.3e} after {result.iterations} steps "
        f"({result.evaluations} evaluations, {time.perf_counter() - started:.1f} s)",
    )
    return result


def build_system(
    config: Config | RunConfig,
    problem: Problem,
    state: ParticleState | DensityState | None = None,
    comm: Communicator | None = None,
    reference_objective: float | None = None,
    functional: Functional | None = None,
) -> System:
    """A fresh discretisation of the configuration, or one continuing a saved state: the registered
    discretisation builds itself from its options, on ``functional`` (built here when not given).

    With a communicator of several processes (particles only), this process gets its block of the particles.
    A density run with ``grid.gap`` solves for Obj(mu*) unless ``reference_objective`` gives it (a resume
    reads it from its file).
    """
    rc = typed(config)
    comm = Serial() if comm is None else comm
    built = build_functional(rc, problem, comm) if functional is None else functional

    def optimum(grid: Grid) -> float:
        return stationary(rc, built, grid).objective if reference_objective is None else reference_objective

    return DISCRETIZATIONS[rc.run.discretization].build(rc.discretization, built, state, comm, optimum)


def memory_estimate(config: Config | RunConfig) -> dict[str, int]:
    """Bytes the largest arrays of a run will take, by the configuration key that sizes them (float64): the data
    (X and X_test) and what the discretisation says of its own (its registry entry's ``memory``)."""
    rc = typed(config)
    c, item = rc.data, 8
    n, d, n_test = c.n, c.d, c.n_test
    m = rc.model
    # The feature map says the dimension of w (one named by import path is not imported before it is trusted:
    # d + 1 then); an objective whose points carry more (the classical (a, w)) says so.
    tasks = standard_set(c.source).tasks if is_standard(c.source) else len(c.y_columns) if c.source else 1
    try:
        p = get_feature_map(m.feature, allow_import=False).dim(d)
    except ValueError:
        p = d + 1
    p = getattr(OBJECTIVES[m.objective], "dim_of", lambda p, T: p)(p, tasks)
    out = {"data.n": item * n * d, "data.n_test": item * n_test * d}
    spec = DISCRETIZATIONS[rc.run.discretization]
    for key, size in spec.memory(rc.discretization, n, n_test, p, memory_budget(rc)).items():
        out[key] = out.get(key, 0) + size
    return out


def check_memory(config: Config | RunConfig) -> None:
    """Refuse, before allocating, a run whose arrays cannot fit in the memory available, naming the key."""
    estimate = memory_estimate(config)
    total, available = sum(estimate.values()), available_memory()
    if total > available:
        key = max(estimate, key=estimate.__getitem__)
        tree = typed(config).tree
        value = get(tree, key)
        # The data's arrays are a count of samples times their dimension: name both.
        also = f" with data.d = {get(tree, 'data.d')}" if key in ("data.n", "data.n_test") else ""
        raise MemoryError(
            f"this run needs about {total / 2**30:.3g} GiB, more than the {available / 2**30:.3g} GiB available; "
            f"most of it ({estimate[key] / 2**30:.3g} GiB) comes from {key} = {value}{also}: reduce "
            + ("either" if also else "it")
        )


def check_inputs(config: Config | RunConfig, problem: Problem, functional: Functional | None = None) -> Functional:
    """The cheap checks of a configuration against its problem (box, dimension, step size), before any work, by
    its discretisation on its functional (built here when not given); returns the functional."""
    rc = typed(config)
    functional = build_functional(rc, problem) if functional is None else functional
    DISCRETIZATIONS[rc.run.discretization].check(rc.discretization, functional)
    return functional


def metrics_of(system: System) -> dict[str, float]:
    """The observables of the system's current measure and the discretisation's diagnostics."""
    out = evaluate(Evaluation(system.functional, system.fit(), system.entropy()))
    out.update(system.diagnostics())
    return out
