"""Moved to :mod:`mfld.model.datasets`; this module keeps the import path of mfld 0.1 for one release."""

from mfld.model.datasets import Dataset, make_dataset

__all__ = ["Dataset", "make_dataset"]
