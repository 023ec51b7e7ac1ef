"""mfld: mean-field Langevin dynamics of two-layer neural networks, on particles and on grids.

The Python API, for notebooks and scripts (the command line is ``mfld``, or ``python -m mfld``):

- :func:`run` runs a configuration, in memory or into a checkpoint file, and returns a :class:`Run`;
- :func:`load` reads a saved run back as a :class:`Run`;
- :func:`load_config` builds a configuration from the default, a shipped name or a TOML file;
- ``Run.figure()`` and ``Run.measure_figure()`` draw it (matplotlib Figures).

The layers below are importable on their own: :mod:`mfld.model` (the mathematics),
:mod:`mfld.discretizations` (particles, grids, the time loop), :mod:`mfld.config` (the configuration),
:mod:`mfld.storage` (checkpoint files), :mod:`mfld.validation` (the theory's checks and the paper's
experiments) and :mod:`mfld.solver` (the run assembly, the Python API, the command line).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("mfld")
except PackageNotFoundError:  # an uninstalled source tree
    __version__ = "unknown"

__all__ = ["Run", "__version__", "load", "load_config", "run"]

if TYPE_CHECKING:
    from mfld.config import load_config
    from mfld.solver.python_api import Run, load, run


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `import mfld.model` does not load the run machinery (h5py, matplotlib).
    if name in ("Run", "load", "run"):
        from mfld.solver import python_api

        return getattr(python_api, name)
    if name == "load_config":
        from mfld.config import load_config

        return load_config
    raise AttributeError(f"module 'mfld' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The API (Jupyter's completion lists these), not the names the module imports for itself."""
    return sorted(__all__)
