"""The run's configuration, typed: each section and each chosen component's options as its frozen dataclass.

:func:`typed` reads a configuration's nested tables once into a :class:`RunConfig`, whose parts
are the options the run's sections and its chosen components declare (:mod:`mfld.model.options`):
``data``, ``model`` with its objective's options, the discretisation's options with its time
scheme's, ``stationary``, ``time`` and ``output``. The tables themselves stay in ``tree``: they are
what a checkpoint file stores.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from mfld.discretizations.kinds import DISCRETIZATIONS
from mfld.discretizations.stationary import StationaryOptions
from mfld.model.datasets import DataOptions
from mfld.model.objectives import OBJECTIVES, ModelOptions
from mfld.model.options import from_values, keys_of

from .schema import OutputOptions, RunOptions, TimeOptions
from .tree import Config, flatten


@dataclass(frozen=True)
class RunConfig:
    """A validated configuration as typed parts (see the module doc); ``tree`` is its nested tables, as stored."""

    tree: Config
    run: RunOptions
    data: DataOptions
    model: ModelOptions
    objective: Any
    """The options of ``model.objective`` (its dataclass; None for an objective without keys of its own)."""
    discretization: Any
    """The options of ``discretization`` (``ParticleOptions``, ``FiniteVolumeOptions``, ...), its scheme's options in
    ``scheme_options``."""
    stationary: StationaryOptions
    time: TimeOptions
    output: OutputOptions

    @property
    def flat(self) -> dict[str, Any]:
        """The configuration as ``{dotted key: value}``."""
        return flatten(self.tree)


def discretization_options(config: Config) -> Any:
    """The options of the configured discretisation, each field read from its configuration key, with the options
    of its time scheme (``scheme_options``: None for a scheme without keys of its own)."""
    flat = flatten(config)
    spec = DISCRETIZATIONS[flat["discretization"]]
    options = from_values(spec.options, flat)
    scheme_key = keys_of(spec.options).get("scheme")
    scheme_options = spec.schemes.options(flat[scheme_key]) if scheme_key is not None else None
    if scheme_options is None:
        return options
    return replace(options, scheme_options=from_values(scheme_options, flat))


def typed(config: Config | RunConfig) -> RunConfig:
    """``config`` as a :class:`RunConfig` (one already typed is returned as it is)."""
    if isinstance(config, RunConfig):
        return config
    flat = flatten(config)
    objective = OBJECTIVES.options(flat["model.objective"])
    return RunConfig(
        tree=config,
        run=from_values(RunOptions, flat),
        data=from_values(DataOptions, flat),
        model=from_values(ModelOptions, flat),
        objective=from_values(objective, flat) if objective else None,
        discretization=discretization_options(config),
        stationary=from_values(StationaryOptions, flat),
        time=from_values(TimeOptions, flat),
        output=from_values(OutputOptions, flat),
    )
