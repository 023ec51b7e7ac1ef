"""Renamed :mod:`mfld.solver.python_api` (the Python API); this module keeps the import path for one release."""

from mfld.solver.python_api import Run, load, run

__all__ = ["Run", "load", "run"]
