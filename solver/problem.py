"""Moved to :mod:`mfld.model.problem`; this module keeps the import path of mfld 0.1 for one release."""

from mfld.model.problem import Problem

__all__ = ["Problem"]
