"""Moved to :mod:`mfld.model`; this module keeps the import path of mfld 0.1 for one release."""

from mfld.model.functional import Fit, Functional
from mfld.model.observables import degrees_of_freedom, kernel_alignment, parameter_alignment
from mfld.model.prior import PriorOnlyFunctional
from mfld.model.two_timescale import TwoTimescaleFunctional

__all__ = ["Fit", "Functional", "PriorOnlyFunctional", "TwoTimescaleFunctional", "degrees_of_freedom",
           "kernel_alignment", "parameter_alignment"]
