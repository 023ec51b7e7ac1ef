"""Loading a configuration: the defaults, then a TOML file (or a shipped one by name), ``--set`` overrides and
Python values merged over them key by key, each key checked against the schema (:mod:`mfld.config.schema`);
and a configuration stored in a file, read back with the keys its version of mfld wrote."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from mfld.model.standard_data import is_standard

from .schema import defaults, key_since, schema, version_order
from .tree import Config, ConfigError, flatten, set_key


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
            close = [k for k in keys if k.split(".")[-1] == key.split(".")[-1]]  # the right name, another section
            close = close or difflib.get_close_matches(key, list(keys), n=2, cutoff=0.75)  # a typing slip
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
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


MAX_CONFIG_BYTES = 16 * 2**20
"""The largest configuration file read (a TOML file of keys is a few KiB)."""


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
        raise ConfigError(
            f"configuration {str(path)!r} is a directory; give a TOML file or a shipped name "
            f"({', '.join(shipped_configs())})"
        )
    if p.exists() and not p.is_file():  # /dev/zero, a FIFO: reading would never end
        raise ConfigError(f"configuration {str(path)!r} is not a regular file; give a TOML file")
    try:
        with p.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"configuration file {str(path)!r} is larger than {MAX_CONFIG_BYTES // 2**20} MiB: not a "
                "configuration (data goes in data.source)"
            )
        return raw.decode("utf-8"), f"configuration file {str(path)!r}", p.resolve().parent
    except FileNotFoundError:
        raise ConfigError(
            f"configuration file {str(path)!r} does not exist, nor is it a shipped configuration "
            f"({', '.join(shipped_configs())}; `mfld configs` lists them)"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"configuration file {str(path)!r} is not UTF-8 text (is it a TOML file?)") from None


def load_config(
    path: str | Path | None = None, overrides: Iterable[str] = (), values: Mapping[str, Any] | None = None
) -> Config:
    """The default configuration, updated by the TOML file ``path``, ``key=value`` overrides, then ``values``.

    ``path`` may also name a shipped configuration (``"grid-1d"``); a file of that name takes precedence. A
    file's top-level ``base = "other.toml"`` (relative to the file, or a shipped name) is read first and the
    file's keys over it, recursively.
    ``values`` maps dotted keys (``{"particles.N": 500}``) or nested tables (``{"particles": {"N": 500}}``)
    to values, as Python objects.
    """
    config = defaults()
    if path is not None:
        for key, value in _file_values(path, ()):
            set_key(config, key, value)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        _check_known(key)
        set_key(config, key, _absolute(key, parse_value(text.strip()), Path.cwd()))
    for key, value in flatten(dict(values or {})).items():
        _check_known(key)
        set_key(config, key, _absolute(key, value, Path.cwd()))
    validate(config)
    return config


PATH_KEYS = ("data.source", "data.test_source")


def _file_values(path: str | Path, chain: tuple[str, ...]) -> list[tuple[str, Any]]:
    """The dotted keys of a configuration file, those of the file its ``base`` names first (a path relative to the
    file, or a shipped configuration's name), recursively; a file extending itself through its bases is refused."""
    text, where, folder = read_config_text(path)
    try:
        user = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where} is not valid TOML: {e}") from None
    me = str(Path(path).resolve()) if Path(path).exists() else where
    if me in chain:
        cycle = " -> ".join([*chain[chain.index(me) :], me])
        raise ConfigError(f"configuration files extend each other in a cycle ({cycle}); remove one base")
    out: list[tuple[str, Any]] = []
    base = user.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{where}: base must name a configuration file (a path relative to it), got {base!r}")
        target = folder / base
        if not target.exists() and base not in shipped_configs():
            raise ConfigError(
                f"{where}: base = {base!r} is neither a file ({str(target)!r}) nor a shipped configuration "
                f"({', '.join(shipped_configs())})"
            )
        out = _file_values(target if target.exists() else base, (*chain, me))
    for key, value in flatten(user).items():
        _check_known(key)
        out.append((key, _absolute(key, value, folder)))
    return out


def _absolute(key: str, value: object, folder: Path) -> object:
    """A relative file path of the configuration made absolute against ``folder``: stored configs stay unambiguous."""
    if (
        key in PATH_KEYS
        and isinstance(value, str)
        and value
        and not Path(value).is_absolute()
        and not is_standard(value)
    ):
        return str((folder / value).resolve())
    return value


def _check_known(key: str) -> None:
    if key not in schema():
        _check({key: None})


def validate(config: Config) -> None:
    """Raise :class:`ConfigError` unless every key is known, typed and in range."""
    _check(flatten(config))


def to_toml(config: Config) -> str:
    """Serialise a configuration (as stored in checkpoints)."""
    return tomli_w.dumps(config)


def missing_keys(stored: Mapping[str, Any], written_by: str) -> list[str]:
    """The keys that a configuration stored by mfld ``written_by`` should hold and does not."""
    flat, made = flatten(stored), version_order(written_by)
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
    for key, value in flatten(stored).items():
        _check_known(key)
        set_key(config, key, value)
    validate(config)
    return config
