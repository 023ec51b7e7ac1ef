"""Run configuration: TOML files over the shipped default, with validation.

The default is ``data/configs/default.toml`` (``mfld.data``); a user file and
``--set section.key=value`` overrides are merged over it key by key. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` naming the
dotted key.
"""

from __future__ import annotations

import math
import re
import textwrap
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import tomli_w

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
from mfld.model.registry import Registry

Config = dict[str, Any]
"""A configuration: the nested tables of the TOML file (``config["model"]["lam"]``)."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """The top-level keys: what the measure is represented by, on which arrays, with which seed and threads."""

    section: ClassVar[str] = ""
    threads: int = nonneg_int(0, "BLAS threads of each process; 0: the cores idle at the start shared among the MPI "
                              "ranks (mfld.solver.threads), stored in the file for its resume; the environment "
                              "variable MFLD_THREADS overrides it. Two runs agree bit for bit only on equal "
                              "counts: fix it to compare runs started separately", since="0.2.0.dev1")
    seed: int = nonneg_int(0, "seeds the data (stream `[seed, 0x5EED]`) and the particles (stream `[seed, 1]`)")
    discretization: str = choice("particles", "how the measure is represented", DISCRETIZATIONS)
    backend: str = choice("numpy", "array library", BACKENDS)
    dtype: str = choice("float64", "floating-point precision", ("float64", "float32"), docs=False)


@dataclass(frozen=True, kw_only=True)
class TimeOptions:
    """The ``[time]`` keys: the step and how many to take."""

    section: ClassVar[str] = "time"
    eta: float = positive(0.4, "step size (particles: refused when eta lam lam_w >= 1; grids: the implicit step)")
    steps: int = nonneg_int(1000, "number of steps")


@dataclass(frozen=True, kw_only=True)
class OutputOptions:
    """The ``[output]`` keys: the checkpoint file, how often it and the observables are written, and the rest."""

    section: ClassVar[str] = "output"
    path: str = option("mfld-run.h5", "checkpoint file (`--out` overrides)", str, lambda v: len(v) > 0,
                       "a non-empty path")
    checkpoint_every: int = positive_int(250, "steps between saved frames")
    metrics_every: int = positive_int(25, "steps between recorded observables")
    plot: bool = flag(True, "write `<path>.png` at the end")
    author: str = text("", "the H5MD author of the file (empty: the login name)")
    checksum: bool = flag(False, "Fletcher-32 checksums on every stored array, verified on every read",
                          since="0.2.0.dev1")
    progress: str = choice("auto", "`auto` (terminal, runs > 2 s), `on` or `off`", ("auto", "on", "off"), docs=False)


SECTIONS: tuple[type, ...] = (RunOptions, DataOptions, ModelOptions, StationaryOptions, TimeOptions, OutputOptions)
"""The run's own sections; every other key is an option of a registered component (:data:`COMPONENTS`)."""

COMPONENTS: tuple[Registry[Any], ...] = (OBJECTIVES, FEATURE_MAPS, DISCRETIZATIONS, PARTICLE_SCHEMES, GRID_SCHEMES,
                                         SPECTRAL_SCHEMES, LINEAR_SOLVERS, OBSERVABLES, GRID_DIAGNOSTICS)
"""The registries whose entries may declare options (and whose installed plug-ins are read for them)."""

ORDER = ("", "data", "model", "particles", "grid", "spectral", "stationary", "time", "output")
"""The order of sections in the tables and the default file; a section of a plug-in comes after these."""


def schema() -> dict[str, Key]:
    """Every configuration key, composed from the run's sections and the options of every registered component
    (installed plug-ins included), in :data:`ORDER` of sections, then as declared."""
    for registry in COMPONENTS:
        registry.load_plugins()
    found: dict[str, Key] = {}
    declarers: dict[str, str] = {}
    options = [*SECTIONS, *(o for r in COMPONENTS for o in (r.options(n) for n in r) if o is not None)]
    for cls in options:
        for key, spec in declared(cls).items():
            if key in found and found[key] is not spec:
                raise ConfigError(f"configuration key {key!r} is declared by both {declarers[key]} and "
                                  f"{cls.__module__}.{cls.__qualname__}; declare it once and refer to it with ref()")
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


def __getattr__(name: str) -> Any:
    """``SCHEMA`` and ``KEY_SINCE``, composed when asked (so that a component registered later is in them)."""
    if name == "SCHEMA":
        return schema()
    if name == "KEY_SINCE":
        return key_since()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def defaults() -> Config:
    """The default configuration: every key at its declared default."""
    tree: Config = {}
    for key, spec in schema().items():
        _set(tree, key, list(spec.default) if isinstance(spec.default, list) else spec.default)
    return tree


DEFAULT_HEADER = """\
# The built-in default: the paper's Section 6 experiment scaled down (x1 x2, Gaussian inputs, tanh with bias).
# Sized so that feature learning shows in one short run: the kernel alignment rises and the test loss falls
# with the training loss (n = 1000 samples against N = 300 particles; docs/experiments.md, "The default run").
# Generated from the options the components declare (python -m mfld.solver.config --write); every key is in
# the README's configuration reference; `--set section.key=value` overrides one.
"""


def generated_default_text() -> str:
    """``data/configs/default.toml`` as the declared options make it: each key under a comment of its meaning."""
    lines = [DEFAULT_HEADER]
    section = None
    for key, spec in schema().items():
        head, _, leaf = key.rpartition(".")
        if head != section:
            section = head
            if head:
                lines.append(f"\n[{head}]")
        for part in textwrap.wrap(spec.doc, 114):
            lines.append(f"# {part}")
        lines.append(f"{leaf} = {tomli_w.dumps({'v': spec.default}).split('=', 1)[1].strip()}")
    return "\n".join(lines) + "\n"


def default_text() -> str:
    """The shipped default configuration, as TOML text (``data/configs/default.toml``)."""
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
    keys = schema()
    for key, value in flat.items():
        spec = keys.get(key)
        if spec is None:
            close = [k for k in keys if k.split(".")[-1] == key.split(".")[-1]]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown configuration key {key!r}{hint}; see the README's configuration reference")
        if not spec.accepts(value):
            want = spec.requirement or getattr(spec.type, "__name__", str(spec.type))
            raise ConfigError(f"configuration key {key!r} must be {want}, got {value!r}")
    missing = sorted(set(keys) - set(flat))
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
    config = defaults()
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
    if key not in schema():
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
    since = key_since()
    return sorted(k for k in schema() if k not in flat and (k not in since or version_order(since[k]) <= made))


def from_toml(text: str, written_by: str | None = None) -> Config:
    """Parse and validate a configuration stored as TOML text.

    Keys added to mfld after the text was written take their defaults, so files of earlier
    versions still load; unknown keys are refused, and so, with ``written_by`` (the version of
    mfld that stored the text), is a text lacking keys that version wrote (:func:`key_since`).
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
    config = defaults()
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
    """The README's configuration reference, generated from the declared options and the registries."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, spec in schema().items():
        meaning = spec.doc
        # Choices are listed unless the description already names each of them.
        if spec.choices and any(f"`{n}`" not in spec.doc for n in spec.choices):
            meaning += ": " + ", ".join(f"`{n}`" + (f" ({d})" if d else "") for n, d in spec.choices.items())
        lines.append(f"| `{key}` | {_cell(spec.default)} | {_escape(meaning)} |")
    return "\n".join(lines) + "\n"


def observables_table() -> str:
    """The README's list of observables, generated from the registries of observables and grid diagnostics."""
    lines = ["| observable | recorded for | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | every run | {_escape(OBSERVABLES.doc(n))} |" for n in OBSERVABLES]
    lines += [f"| `{n}` | grid and spectral runs | {_escape(GRID_DIAGNOSTICS.doc(n))} |" for n in GRID_DIAGNOSTICS]
    return "\n".join(lines) + "\n"


def _replace_table(text: str, header: str, table: str) -> str:
    start = text.index(header)
    end = text.index("\n\n", start) + 1
    return text[:start] + table + text[end:]


def write_generated(readme: Path) -> list[Path]:
    """Rewrite what the declared options generate: ``data/configs/default.toml`` and the README's configuration
    and observables tables (in a source checkout); returns the files changed."""
    changed = []
    default = Path(str(resources.files("mfld.data").joinpath("configs/default.toml")))
    readme_text = readme.read_text()
    new_readme = _replace_table(_replace_table(readme_text, "| key | default | meaning |", reference_table()),
                                "| observable | recorded for | meaning |", observables_table())
    for path, old, new in ((default, default.read_text(), generated_default_text()),
                           (readme, readme_text, new_readme)):
        if old != new:
            path.write_text(new)
            changed.append(path)
    return changed


if __name__ == "__main__":  # python -m mfld.solver.config [--observables | --write]: the README's tables
    import sys

    if "--write" in sys.argv:
        written = write_generated(Path(__file__).resolve().parent.parent / "README.md")
        print("rewrote " + ", ".join(map(str, written)) if written else "the generated files are current")
    else:
        print(observables_table() if "--observables" in sys.argv else reference_table(), end="")
