"""Run configuration: the keys the components declare, composed into one schema; TOML files over the defaults.

The default of every key is declared with the component or section that reads it
(:mod:`mfld.model.options`) and composed here (:mod:`~mfld.config.schema`); a user file and
``--set section.key=value`` overrides are merged over the defaults key by key
(:mod:`~mfld.config.loading`). Unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` naming the dotted key. ``data/configs/default.toml`` and the README's
tables are generated (:mod:`~mfld.config.tables`, ``python -m mfld.config --write``).

:mod:`~mfld.config.assembly` makes a configuration into its pieces (data, problem, functional,
discretisation): the one path that ``mfld run`` and the experiments both take.

This package sits above the mathematics and the discretisations (whose registries it reads)
and below storage, validation and the run machinery (which read configurations through it).
"""

from __future__ import annotations

from typing import Any

from mfld.model.options import FIRST_VERSION, Key

from .loading import (
    PATH_KEYS,
    from_toml,
    load_config,
    missing_keys,
    parse_value,
    read_config_text,
    shipped_configs,
    to_toml,
    validate,
)
from .schema import (
    COMPONENTS,
    ORDER,
    SECTIONS,
    OutputOptions,
    RunOptions,
    TimeOptions,
    defaults,
    key_since,
    schema,
    version_order,
)
from .tables import generated_default_text, observables_table, reference_table, write_generated
from .tree import Config, ConfigError, flatten, get, set_key

__all__ = [
    "COMPONENTS",
    "FIRST_VERSION",
    "ORDER",
    "PATH_KEYS",
    "SECTIONS",
    "Config",
    "ConfigError",
    "Key",
    "OutputOptions",
    "RunOptions",
    "TimeOptions",
    "defaults",
    "flatten",
    "from_toml",
    "generated_default_text",
    "get",
    "key_since",
    "load_config",
    "missing_keys",
    "observables_table",
    "parse_value",
    "read_config_text",
    "reference_table",
    "schema",
    "set_key",
    "shipped_configs",
    "to_toml",
    "validate",
    "version_order",
    "write_generated",
]


def __getattr__(name: str) -> Any:
    """``SCHEMA`` and ``KEY_SINCE``, composed when asked (so that a component registered later is in them)."""
    if name == "SCHEMA":
        return schema()
    if name == "KEY_SINCE":
        return key_since()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
