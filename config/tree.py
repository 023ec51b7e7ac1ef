"""A configuration as nested tables (``config["model"]["lam"]``) and the dotted keys that name its values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Config = dict[str, Any]
"""A configuration: the nested tables of the TOML file (``config["model"]["lam"]``)."""


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"a.b": 1}``."""
    flat: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def set_key(tree: Config, dotted: str, value: object) -> None:
    """``tree["a"]["b"] = value`` for ``"a.b"``, making the tables on the way."""
    *parents, leaf = dotted.split(".")
    node = tree
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def get(config: Config, dotted: str) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``."""
    node: Any = config
    for part in dotted.split("."):
        node = node[part]
    return node
