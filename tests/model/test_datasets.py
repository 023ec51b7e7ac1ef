"""Reading data files: refusals that name the file before any large read."""

from __future__ import annotations

import numpy as np
import pytest


def test_an_npz_member_that_inflates_past_memory_is_refused_by_name(tmp_path, monkeypatch):
    """Issue 37 (low): a 2.3 MB .npz inflating to 2.4 GB was read whole before an allocation error naming no file.
    The member's declared size is checked first (here against a 1 MiB memory, so the test stays small)."""
    from mfld.model import datasets

    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, X=np.zeros((2000, 100)), Y=np.zeros((2000, 1)))  # X: 1.6 MB inflated, ~2 KB stored
    monkeypatch.setattr(datasets, "available_memory", lambda: 2**20)
    with pytest.raises(ValueError, match=r"bomb.npz': array 'X' inflates to 0.00149 GiB, more than half"):
        datasets.read_dataset(path)
