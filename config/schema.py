"""The configuration's keys, composed from the options that the run's sections and the registered components
declare (:mod:`mfld.model.options`): the schema, the defaults, and the version that added each key."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from mfld.discretizations.adaptive import TOL_MAX
from mfld.discretizations.density import GRID_DIAGNOSTICS
from mfld.discretizations.grid import GRID_SCHEMES
from mfld.discretizations.implicit_solvers import LINEAR_SOLVERS
from mfld.discretizations.kinds import DISCRETIZATIONS
from mfld.discretizations.particles import PARTICLE_SCHEMES
from mfld.discretizations.spectral import SPECTRAL_SCHEMES
from mfld.discretizations.stationary import StationaryOptions
from mfld.model.backend import BACKENDS
from mfld.model.datasets import DataOptions
from mfld.model.features import FEATURE_MAPS
from mfld.model.objectives import OBJECTIVES, ModelOptions
from mfld.model.observables import OBSERVABLES
from mfld.model.options import (
    FIRST_VERSION,
    Key,
    choice,
    declared,
    flag,
    nonneg_int,
    option,
    positive,
    positive_int,
    text,
)
from mfld.model.registry import Registry, generation

from .outputs import OUTPUTS
from .tree import Config, ConfigError, set_key


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """The top-level keys: what the measure is represented by, on which arrays, with which seed and threads."""

    section: ClassVar[str] = ""
    threads: int = nonneg_int(
        0,
        "BLAS threads of each process; 0: the cores idle at the start shared among the MPI "
        "ranks (mfld.solver.threads), stored in the file for its resume; the environment "
        "variable MFLD_THREADS overrides it. Two runs agree bit for bit only on equal "
        "counts: fix it to compare runs started separately",
        since="0.2.0.dev1",
    )
    seed: int = nonneg_int(0, "seeds the data (stream `[seed, 0x5EED]`) and the particles (stream `[seed, 1]`)")
    discretization: str = choice("particles", "how the measure is represented", DISCRETIZATIONS)
    backend: str = choice("numpy", "array library", BACKENDS)
    dtype: str = choice("float64", "floating-point precision", ("float64", "float32"), docs=False)


@dataclass(frozen=True, kw_only=True)
class TimeOptions:
    """The ``[time]`` keys: the step and how many to take."""

    section: ClassVar[str] = "time"
    eta: float = positive(
        0.4,
        "step size (particles: refused when eta lam lam_w >= 1; grids: the implicit step; adaptive: the first step)",
    )
    steps: int = nonneg_int(1000, "number of steps")
    adaptive: bool = flag(
        False,
        "grids: error-controlled steps (implicit or IMEX Euler doubled and extrapolated to order 2, each step's size "
        "chosen from `time.tol`; the steps taken are recorded as `step_size`)",
        since="0.2.0.dev2",
    )
    tol: float = option(
        0.01,
        "adaptive steps: a step's estimated error (L1) at most this fraction of the change it makes",
        (int, float),
        lambda v: 0 < v <= TOL_MAX,
        f"a number in (0, {TOL_MAX}]",
        since="0.2.0.dev2",
    )
    eta_max: float = positive(10.0, "adaptive steps: the largest step", since="0.2.0.dev2")


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """The ``[output]`` keys: the checkpoint file, how often it and the observables are written, and the rest."""

    section: ClassVar[str] = "output"
    path: str = option(
        "mfld-run.h5", "checkpoint file (`--out` overrides)", str, lambda v: len(v) > 0, "a non-empty path"
    )
    checkpoint_every: int = positive_int(250, "steps between saved frames")
    metrics_every: int = positive_int(25, "steps between recorded observables")
    plot: bool = flag(True, "write `<path>.png` at the end")
    author: str = text("", "the H5MD author of the file (empty: the login name)")
    checksum: bool = flag(
        False, "Fletcher-32 checksums on every stored array, verified on every read", since="0.2.0.dev1"
    )
    formats: list[str] = option(
        [],
        "also write the run in these formats at the end, each beside the checkpoint as `<path>.<format>` "
        "(the checkpoint stays the file that resumes); `mfld export FILE --format NAME` converts a saved file",
        list,
        lambda v: all(isinstance(f, str) and f in OUTPUTS for f in v),
        since="0.2.0.dev2",
        options=OUTPUTS,
    )
    progress: str = choice("auto", "`auto` (terminal, runs > 2 s), `on` or `off`", ("auto", "on", "off"), docs=False)


SECTIONS: tuple[type, ...] = (RunOptions, DataOptions, ModelOptions, StationaryOptions, TimeOptions, OutputOptions)
"""The run's own sections; every other key is an option of a registered component (:data:`COMPONENTS`)."""

COMPONENTS: tuple[Registry[Any], ...] = (
    OBJECTIVES,
    FEATURE_MAPS,
    DISCRETIZATIONS,
    PARTICLE_SCHEMES,
    GRID_SCHEMES,
    SPECTRAL_SCHEMES,
    LINEAR_SOLVERS,
    OBSERVABLES,
    GRID_DIAGNOSTICS,
)
"""The registries whose entries may declare options (and whose installed plug-ins are read for them)."""

ORDER = ("", "data", "model", "particles", "grid", "spectral", "stationary", "time", "output")
"""The order of sections in the tables and the default file; a section of a plug-in comes after these."""


_CACHE: dict[int, dict[str, Key]] = {}


def schema() -> dict[str, Key]:
    """Every configuration key, composed from the run's sections and the options of every registered component
    (installed plug-ins included), in :data:`ORDER` of sections, then as declared."""
    for registry in COMPONENTS:
        registry.load_plugins()
    cached = _CACHE.get(generation())
    if cached is None:
        _CACHE.clear()
        cached = _CACHE[generation()] = _compose()
    return dict(cached)


def _compose() -> dict[str, Key]:
    found: dict[str, Key] = {}
    declarers: dict[str, str] = {}
    options = [*SECTIONS, *(o for r in COMPONENTS for o in (r.options(n) for n in r) if o is not None)]
    for cls in options:
        for key, spec in declared(cls).items():
            if key in found and found[key] is not spec:
                raise ConfigError(
                    f"configuration key {key!r} is declared by both {declarers[key]} and "
                    f"{cls.__module__}.{cls.__qualname__}; declare it once and refer to it with ref()"
                )
            found[key] = spec
            declarers[key] = f"{cls.__module__}.{cls.__qualname__}"

    def rank(key: str) -> int:
        section = key.rsplit(".", 1)[0] if "." in key else ""
        return ORDER.index(section) if section in ORDER else len(ORDER)

    return {key: found[key] for key in sorted(found, key=rank)}


def key_since() -> dict[str, str]:
    """Keys that a file of an earlier mfld may lack: key -> the first version that writes it into every file
    (each key's ``since``). A stored configuration lacking one of these, written before that version, takes the
    key's default; one lacking any other key (or one of these from that version on) was edited or damaged, and
    is refused: today's default is not the value the run used."""
    return {key: spec.since for key, spec in schema().items() if spec.since != FIRST_VERSION}


def defaults() -> Config:
    """The default configuration: every key at its declared default."""
    tree: Config = {}
    for key, spec in schema().items():
        set_key(tree, key, list(spec.default) if isinstance(spec.default, list) else spec.default)
    return tree


def version_order(version: str) -> tuple[float, ...]:
    """``"0.2.0.dev1"`` as ``(0, 2, 0, 1)`` and a release as ``(..., inf)``, for comparison; unknown: newest."""
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.?dev(\d+))?(?:[+.].*)?", version.strip())
    if m is None:
        return (math.inf,)
    dev = math.inf if m[4] is None else int(m[4])
    return (int(m[1]), int(m[2]), int(m[3] or 0), dev)
