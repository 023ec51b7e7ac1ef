"""Run configuration: TOML files over the shipped default, with validation.

The default is ``data/configs/default.toml`` (``mfld.data``); a user file and
``--set section.key=value`` overrides are merged over it key by key. Unknown
keys, wrong types and out-of-range values raise :class:`ConfigError` naming the
dotted key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import tomli_w

from .datasets import INPUTS, LINKS, TARGETS
from .features import FEATURE_MAPS


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    check: Callable[[Any], bool] = lambda v: True
    requirement: str = ""


def _choice(*options: str) -> Key:
    return Key(str, lambda v: v in options, "one of " + ", ".join(repr(o) for o in options))


_POS_INT = Key(int, lambda v: v >= 1, "an integer >= 1")
_NONNEG_INT = Key(int, lambda v: v >= 0, "an integer >= 0")
_POS = Key((int, float), lambda v: v > 0 and v == v and v != float("inf"), "a finite number > 0")
_NONNEG = Key((int, float), lambda v: v >= 0 and v != float("inf"), "a finite number >= 0")


def _all(v: Any, ok: Callable[[Any], bool]) -> bool:
    items = v if isinstance(v, list) else [v]
    return 1 <= len(items) <= 3 and all(ok(x) for x in items)


def _is_pos_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and 0 < x < float("inf")


def _is_cell_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 3

SCHEMA: dict[str, Key] = {
    "seed": _NONNEG_INT,
    "discretization": _choice("particles", "grid", "spectral"),
    "backend": _choice("numpy", "cupy"),
    "dtype": _choice("float64", "float32"),
    "data.target": _choice(*TARGETS),
    "data.inputs": _choice(*INPUTS),
    "data.d": _POS_INT,
    "data.n": _POS_INT,
    "data.n_test": _POS_INT,
    "data.noise": _NONNEG,
    "data.link": _choice(*LINKS),
    "data.m": _POS_INT,
    "data.frequency": _POS,
    "model.objective": _choice("two-timescale", "classical", "prior"),
    "model.feature": _choice(*FEATURE_MAPS),
    "model.lam": _POS,
    "model.lam_a": _POS,
    "model.lam_w": _POS,
    "model.label_noise": _NONNEG,
    "particles.N": Key(int, lambda v: v >= 2, "an integer >= 2"),
    "particles.langevin": Key(bool),
    "particles.memory_budget_mb": _POS_INT,
    "grid.half_width": Key(
        (int, float, list), lambda v: _all(v, _is_pos_number), "a number > 0 or a list of 1 to 3 of them"
    ),
    "grid.cells": Key((int, list), lambda v: _all(v, _is_cell_count), "an integer >= 3 or a list of 1 to 3 of them"),
    "grid.scheme": _choice("implicit-euler", "bdf2"),
    "grid.edge_mass_warning": _POS,
    "grid.gap": Key(bool),
    "stationary.tol": _POS,
    "stationary.max_iter": _POS_INT,
    "stationary.damping": Key((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "stationary.memory": _NONNEG_INT,
    "time.eta": _POS,
    "time.steps": _NONNEG_INT,
    "output.path": Key(str, lambda v: len(v) > 0, "a non-empty path"),
    "output.checkpoint_every": _POS_INT,
    "output.metrics_every": _POS_INT,
    "output.plot": Key(bool),
    "output.progress": _choice("auto", "on", "off"),
}


def default_text() -> str:
    """The shipped default configuration, as TOML text."""
    return resources.files("mfld.data").joinpath("configs/default.toml").read_text()


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
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


def _check(flat: dict[str, Any]) -> None:
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


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The default configuration, updated by the TOML file ``path`` and ``key=value`` overrides."""
    config = tomllib.loads(default_text())
    if path is not None:
        try:
            user = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"configuration file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"configuration file {str(path)!r} is not valid TOML: {e}") from None
        for key, value in _flatten(user).items():
            _check_known(key)
            _set(config, key, value)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        _check_known(key)
        _set(config, key, parse_value(text.strip()))
    validate(config)
    return config


def _check_known(key: str) -> None:
    if key not in SCHEMA:
        _check({key: None})


def validate(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` unless every key is known, typed and in range."""
    _check(_flatten(config))


def get(config: dict[str, Any], dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``."""
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node


def to_toml(config: dict[str, Any]) -> str:
    """Serialise a configuration (as stored in checkpoints)."""
    return tomli_w.dumps(config)


def from_toml(text: str) -> dict[str, Any]:
    """Parse and validate a configuration stored as TOML text."""
    config = tomllib.loads(text)
    validate(config)
    return config
