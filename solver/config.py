"""Run configuration: TOML files over the shipped default, with validation.

The default is ``data/configs/default.toml`` (``mfld.data``); a user file and
``--set section.key=value`` overrides are merged over it key by key. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` naming the
dotted key.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from mfld.discretizations.density import GRID_DIAGNOSTICS
from mfld.discretizations.grid import GRID_SCHEMES
from mfld.discretizations.implicit_solvers import LINEAR_SOLVERS
from mfld.discretizations.kinds import DISCRETIZATIONS
from mfld.discretizations.particles import PARTICLE_SCHEMES
from mfld.discretizations.spectral import SPECTRAL_SCHEMES
from mfld.model.backend import BACKENDS
from mfld.model.datasets import INPUTS, LINKS, TARGETS
from mfld.model.features import FEATURE_MAPS, is_feature_name
from mfld.model.objectives import OBJECTIVES
from mfld.model.observables import OBSERVABLES
from mfld.model.problem import DATA_LIMIT
from mfld.model.registry import Registry
from mfld.model.two_timescale import SOLVE_METHODS

Config = dict[str, Any]
"""A configuration: the nested tables of the TOML file (``config["model"]["lam"]``)."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Key:
    """One configuration key: its type, its check, what the check requires, and what it means."""

    type: type | tuple[type, ...]
    check: Callable[[Any], bool] = lambda v: True
    requirement: str = ""
    doc: str = ""
    choices: Mapping[str, str] | None = None


def _choice(doc: str, options: Iterable[str] | Registry, docs: bool = True) -> Key:
    """A key whose value names an entry of ``options`` (a registry's entries are listed with their docs)."""
    names = list(options)
    table = {n: (options.doc(n) if docs and isinstance(options, Registry) else "") for n in names}
    # Membership is looked up when checking, so that an entry registered after import is accepted too.
    return Key(str, lambda v: v in options, "one of " + ", ".join(repr(o) for o in names), doc, table)


def _pos_int(doc: str) -> Key:
    return Key(int, lambda v: v >= 1, "an integer >= 1", doc)


def _nonneg_int(doc: str) -> Key:
    return Key(int, lambda v: v >= 0, "an integer >= 0", doc)


def _pos(doc: str) -> Key:
    return Key((int, float), lambda v: v > 0 and v == v and v != float("inf"), "a finite number > 0", doc)


def _nonneg(doc: str) -> Key:
    return Key((int, float), lambda v: v >= 0 and v != float("inf"), "a finite number >= 0", doc)


def _all(v: Any, ok: Callable[[Any], bool]) -> bool:
    items = v if isinstance(v, list) else [v]
    return 1 <= len(items) <= 3 and all(ok(x) for x in items)


def _is_pos_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < float("inf")


def _is_cell_count(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 3


SCHEMA: dict[str, Key] = {
    "threads": _nonneg_int("BLAS threads of each process; 0: the cores idle at the start shared among the MPI "
                           "ranks (mfld.solver.threads), stored in the file for its resume; the environment "
                           "variable MFLD_THREADS overrides it. Two runs agree bit for bit only on equal "
                           "counts: fix it to compare runs started separately"),
    "seed": _nonneg_int("seeds the data (stream `[seed, 0x5EED]`) and the particles (stream `[seed, 1]`)"),
    "discretization": _choice("how the measure is represented", DISCRETIZATIONS),
    "backend": _choice("array library", BACKENDS),
    "dtype": _choice("floating-point precision", ("float64", "float32"), docs=False),
    "data.source": Key(str, doc="a data file instead of a generated set: `.npz` (arrays X, Y, optionally X_test, "
                           "Y_test) or CSV with a header; relative to the configuration file (or, with `--set`, to "
                           "the working directory); empty: the generator below"),
    "data.test_source": Key(str, doc="a test set in the same format (when the data file holds none)"),
    "data.x_columns": Key(list, lambda v: all(isinstance(c, str) for c in v), "a list of column names",
                          "CSV: the input columns (empty: every column that is not a target)"),
    "data.y_columns": Key(list, lambda v: len(v) > 0 and all(isinstance(c, str) for c in v),
                          "a non-empty list of column names", "CSV: the target columns (one per task)"),
    "data.target": _choice("`x1x2` (f = x1 x2), `single-index` (f = g(u.x)), `sparse-sin` "
                           "(f = sin(2 pi omega u.x), u m-sparse)", TARGETS, docs=False),
    "data.inputs": _choice("`gaussian` N(0, I) or `hypercube` {-1, 1}^d", INPUTS, docs=False),
    "data.d": _pos_int("input dimension d"),
    "data.n": _pos_int("training samples n"),
    "data.n_test": _pos_int("test samples; test targets are the clean f(x)"),
    "data.noise": Key((int, float), lambda v: 0 <= v <= DATA_LIMIT, f"a number in [0, {DATA_LIMIT:g}] (beyond, the "
                      "targets overflow float64 in the kernel system)", "label noise sigma, eps ~ Unif[-sigma, sigma]"),
    "data.link": _choice("single-index link g (`he2` = z^2 - 1, `he3` = z^3 - 3z)", LINKS, docs=False),
    "data.m": _pos_int("sparse-sin: number of relevant coordinates"),
    "data.frequency": _pos("sparse-sin: omega"),
    "model.objective": _choice("the functional", OBJECTIVES),
    "model.feature": Key(str, is_feature_name, "a registered feature map, an installed plug-in or module:attribute",
                         "feature map h(x; w); `_bias` for w = (u, b); `cos` is sqrt 2 cos (Fourier); also a plug-in "
                         "(entry point `mfld.feature_maps`) or `package.module:attribute`: "
                         + ", ".join(f"`{n}`" for n in FEATURE_MAPS)),
    "model.lam": _pos("temperature lambda"),
    "model.lam_a": _pos("second-layer ridge lambda_a (lam_a_bar = lam lam_a)"),
    "model.lam_w": _pos("prior precision lambda_w, nu = N(0, I / lam_w) (lam_w_bar = lam lam_w)"),
    "model.label_noise": _nonneg("s > 0: the label-noise procedure (docs/theory.md §4.6): particles draw fresh "
                                 "eps ~ Unif[-s, s] each step; grids run its expectation, Obj + (s^2 / 6n) df"),
    "particles.N": Key(int, lambda v: v >= 2, "an integer >= 2", "number of particles"),
    "particles.init": _choice("the initial measure: `prior` nu = N(0, I / lam_w), or `gaussian` N(0, init_sd^2 I)",
                              ("prior", "gaussian"), docs=False),
    "particles.init_sd": _pos("standard deviation of the `gaussian` initial measure"),
    "particles.scheme": _choice("time scheme of the particles", PARTICLE_SCHEMES),
    "particles.langevin": Key(bool, doc="`false` drops the noise: the mean-field gradient flow"),
    "particles.memory_budget_mb": _nonneg_int(
        "bound on one chunk's features (MiB; the passes over them add a few 16 MiB cache blocks); 0: half the "
        "memory available when the run starts, divided by the processes, fixed then and stored in the file (so "
        "that pcg keeps the features whenever they fit)"),
    "particles.solve": _choice("the dual system (S + n lam_a_bar I) c = Y of each step: `cholesky` forms and factors "
                               "S (exact, the reference), `pcg` solves it matrix-free by conjugate gradients, "
                               "warm-started and preconditioned by an earlier factor, `auto` takes pcg when "
                               "the system solved (n x n, or N x N when N < n) has at least 400 rows",
                               SOLVE_METHODS, docs=False),
    "particles.solve_tol": Key((int, float), lambda v: 0 < v < 1, "a number in (0, 1)",
                               "pcg: relative residual per column; the drift then agrees with the exact one to about "
                               "cond(K) tol (measured along the paper run: the README's particle-step section)"),
    "particles.pcg_refresh": _pos_int("pcg: refactor the preconditioner after a solve of more iterations than this"),
    "grid.half_width": Key(
        (int, float, list), lambda v: _all(v, _is_pos_number), "a number > 0 or a list of 1 to 3 of them",
        "box [-L, L]^p (a list: one L per axis); refused if it cannot hold the prior",
    ),
    "grid.cells": Key((int, list), lambda v: _all(v, _is_cell_count), "an integer >= 3 or a list of 1 to 3 of them",
                      "cells per axis (a list: one count per axis)"),
    "grid.scheme": _choice("time scheme of the finite volumes", GRID_SCHEMES),
    "spectral.scheme": _choice("time scheme of the Fourier spectral solver (drift explicit, diffusion implicit)",
                               SPECTRAL_SCHEMES),
    "grid.linear_solver": _choice("how each implicit step's sparse system is solved (finite volumes)", LINEAR_SOLVERS),
    "grid.solver_tol": Key((int, float), lambda v: 0 < v < 1e-3, "a number in (0, 1e-3)",
                           "krylov: relative residual of each step's solve (the density then matches the direct "
                           "solver's to about this)"),
    "grid.edge_mass_warning": _pos("warn once when this fraction of mass reaches the outermost cells"),
    "grid.gap": Key(bool, doc="solve for mu* first and record `gap` = Obj(m_t) - Obj(mu*)"),
    "stationary.tol": _pos("the fixed-point solver stops when lam KL(mu || p_mu) < tol"),
    "stationary.max_iter": _pos_int("iteration limit of the fixed-point solver"),
    "stationary.damping": Key((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]",
                              "beta in psi <- psi + beta (G(psi) - psi), before Anderson mixing"),
    "stationary.memory": _nonneg_int("Anderson mixing depth (0: plain damped iteration)"),
    "time.eta": _pos("step size (particles: refused when eta lam lam_w >= 1; grids: the implicit step)"),
    "time.steps": _nonneg_int("number of steps"),
    "output.path": Key(str, lambda v: len(v) > 0, "a non-empty path", "checkpoint file (`--out` overrides)"),
    "output.checkpoint_every": _pos_int("steps between saved frames"),
    "output.metrics_every": _pos_int("steps between recorded observables"),
    "output.plot": Key(bool, doc="write `<path>.png` at the end"),
    "output.author": Key(str, doc="the H5MD author of the file (empty: the login name)"),
    "output.checksum": Key(bool, doc="Fletcher-32 checksums on every stored array, verified on every read"),
    "output.progress": _choice("`auto` (terminal, runs > 2 s), `on` or `off`", ("auto", "on", "off"), docs=False),
}


def default_text() -> str:
    """The shipped default configuration, as TOML text."""
    return resources.files("mfld.data").joinpath("configs/default.toml").read_text()


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def _set(tree: Config, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def parse_value(text: str) -> Any:
    """A ``--set`` value in TOML syntax (``0.1``, ``true``, ``"x"``); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _check(flat: Mapping[str, object]) -> None:
    for key, value in flat.items():
        spec = SCHEMA.get(key)
        if spec is None:
            close = [k for k in SCHEMA if k.split(".")[-1] == key.split(".")[-1]]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown configuration key {key!r}{hint}; see the README's configuration reference")
        ok_type = isinstance(value, spec.type) and not (isinstance(value, bool) and spec.type is not bool)
        if spec.type == (int, float) and isinstance(value, bool):
            ok_type = False
        if not ok_type or not spec.check(value):
            want = spec.requirement or getattr(spec.type, "__name__", str(spec.type))
            raise ConfigError(f"configuration key {key!r} must be {want}, got {value!r}")
    missing = sorted(set(SCHEMA) - set(flat))
    if missing:
        raise ConfigError(f"configuration is missing keys {missing}")


def shipped_configs() -> dict[str, str]:
    """The configurations that ship with mfld, ``{name: first comment line}`` (``mfld configs`` lists them)."""
    out = {}
    for f in sorted(resources.files("mfld.data").joinpath("configs").iterdir(), key=lambda f: f.name):
        if f.name.endswith(".toml"):
            first = f.read_text().splitlines()[0] if f.read_text() else ""
            out[f.name[: -len(".toml")]] = first.lstrip("# ").strip()
    return out


def read_config_text(path: str | Path) -> tuple[str, str, Path]:
    """``(text, where, folder)`` of a configuration: a file, or else a shipped configuration by name (``grid-1d``).

    ``folder`` is where the file's relative paths (``data.source``) start.
    """
    p = Path(path)
    name = p.name[: -len(".toml")] if p.name.endswith(".toml") else p.name
    if not p.exists() and str(p.parent) == "." and name in shipped_configs():
        shipped = resources.files("mfld.data").joinpath(f"configs/{name}.toml")
        return shipped.read_text(), f"shipped config {name!r}", Path(str(shipped)).parent
    if p.is_dir():
        raise ConfigError(f"configuration {str(path)!r} is a directory; give a TOML file or a shipped name "
                          f"({', '.join(shipped_configs())})")
    try:
        return p.read_text(encoding="utf-8"), f"configuration file {str(path)!r}", p.resolve().parent
    except FileNotFoundError:
        raise ConfigError(f"configuration file {str(path)!r} does not exist, nor is it a shipped configuration "
                          f"({', '.join(shipped_configs())}; `mfld configs` lists them)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"configuration file {str(path)!r} is not UTF-8 text (is it a TOML file?)") from None


def load_config(path: str | Path | None = None, overrides: Iterable[str] = (),
                values: Mapping[str, Any] | None = None) -> Config:
    """The default configuration, updated by the TOML file ``path``, ``key=value`` overrides, then ``values``.

    ``path`` may also name a shipped configuration (``"grid-1d"``); a file of that name takes precedence.
    ``values`` maps dotted keys (``{"particles.N": 500}``) or nested tables (``{"particles": {"N": 500}}``)
    to values, as Python objects.
    """
    config = tomllib.loads(default_text())
    if path is not None:
        text, where, folder = read_config_text(path)
        try:
            user = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{where} is not valid TOML: {e}") from None
        for key, value in _flatten(user).items():
            _check_known(key)
            _set(config, key, _absolute(key, value, folder))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        _check_known(key)
        _set(config, key, _absolute(key, parse_value(text.strip()), Path.cwd()))
    for key, value in _flatten(dict(values or {})).items():
        _check_known(key)
        _set(config, key, _absolute(key, value, Path.cwd()))
    validate(config)
    return config


PATH_KEYS = ("data.source", "data.test_source")


def _absolute(key: str, value: object, folder: Path) -> object:
    """A relative file path of the configuration made absolute against ``folder``: stored configs stay unambiguous."""
    if key in PATH_KEYS and isinstance(value, str) and value and not Path(value).is_absolute():
        return str((folder / value).resolve())
    return value


def _check_known(key: str) -> None:
    if key not in SCHEMA:
        _check({key: None})


def validate(config: Config) -> None:
    """Raise :class:`ConfigError` unless every key is known, typed and in range."""
    _check(_flatten(config))


def get(config: Config, dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``."""
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def to_toml(config: Config) -> str:
    """Serialise a configuration (as stored in checkpoints)."""
    return tomli_w.dumps(config)


# Keys that a file of an earlier mfld may lack: key -> the first version that writes it into every file.
# A stored configuration lacking one of these, written before that version, takes the key's default; one
# lacking any other key (or one of these from that version on) was edited or damaged, and is refused:
# today's default is not the value the run used. Add every new key here with the version that adds it.
KEY_SINCE: dict[str, str] = {key: "0.2.0.dev1" for key in (
    "threads", "data.source", "data.test_source", "data.x_columns", "data.y_columns", "particles.init",
    "particles.init_sd", "particles.solve", "particles.solve_tol", "particles.pcg_refresh", "grid.linear_solver",
    "grid.solver_tol", "spectral.scheme", "output.checksum")}
FIRST_VERSION = "0.1.0"  # files without provenance (mfld 0.1 and the first 0.2 development builds)


def version_order(version: str) -> tuple[float, ...]:
    """``"0.2.0.dev1"`` as ``(0, 2, 0, 1)`` and a release as ``(..., inf)``, for comparison; unknown: newest."""
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?(?:\.?dev(\d+))?(?:[+.].*)?", version.strip())
    if m is None:
        return (math.inf,)
    dev = math.inf if m[4] is None else int(m[4])
    return (int(m[1]), int(m[2]), int(m[3] or 0), dev)


def missing_keys(stored: Mapping[str, Any], written_by: str) -> list[str]:
    """The keys that a configuration stored by mfld ``written_by`` should hold and does not."""
    flat, made = _flatten(stored), version_order(written_by)
    return sorted(k for k in SCHEMA if k not in flat and (k not in KEY_SINCE or version_order(KEY_SINCE[k]) <= made))


def from_toml(text: str, written_by: str | None = None) -> Config:
    """Parse and validate a configuration stored as TOML text.

    Keys added to mfld after the text was written take their defaults, so files of earlier
    versions still load; unknown keys are refused, and so, with ``written_by`` (the version of
    mfld that stored the text), is a text lacking keys that version wrote (:data:`KEY_SINCE`).
    """
    stored = tomllib.loads(text)
    if written_by is not None:
        missing = missing_keys(stored, written_by)
        if missing:
            raise ConfigError(
                f"the stored configuration lacks {', '.join(missing)}, which mfld {written_by} wrote into every "
                "file: it was edited or damaged, and today's defaults are not what the run used; restore the keys "
                "(or start the run again)"
            )
    config = tomllib.loads(default_text())
    for key, value in _flatten(stored).items():
        _check_known(key)
        _set(config, key, value)
    validate(config)
    return config


def _cell(v: object) -> str:
    return "`" + (tomli_w.dumps({"v": v}).split("=", 1)[1].strip()) + "`"


def _escape(text: str) -> str:
    """A Markdown table cell: a literal ``|`` must not end the cell."""
    return text.replace("|", "\\|")


def reference_table() -> str:
    """The README's configuration reference, generated from :data:`SCHEMA`, the registries and the default."""
    default = _flatten(tomllib.loads(default_text()))
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, spec in SCHEMA.items():
        meaning = spec.doc
        # Choices are listed unless the description already names each of them.
        if spec.choices and any(f"`{n}`" not in spec.doc for n in spec.choices):
            meaning += ": " + ", ".join(f"`{n}`" + (f" ({d})" if d else "") for n, d in spec.choices.items())
        lines.append(f"| `{key}` | {_cell(default[key])} | {_escape(meaning)} |")
    return "\n".join(lines) + "\n"


def observables_table() -> str:
    """The README's list of observables, generated from the registries of observables and grid diagnostics."""
    lines = ["| observable | recorded for | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | every run | {_escape(OBSERVABLES.doc(n))} |" for n in OBSERVABLES]
    lines += [f"| `{n}` | grid and spectral runs | {_escape(GRID_DIAGNOSTICS.doc(n))} |" for n in GRID_DIAGNOSTICS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m mfld.solver.config [--observables]: print the README's tables
    import sys

    print(observables_table() if "--observables" in sys.argv else reference_table(), end="")
