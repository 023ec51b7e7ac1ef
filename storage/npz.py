"""The ``npz`` output format: a run as NumPy arrays, for tools that read ``numpy.load`` and not HDF5.

Arrays (``f = numpy.load(PATH)``): ``step`` and ``time`` of the saved frames; ``positions`` (frames x N x p) for
particles, or ``density`` (frames x cells_1 x ... x cells_p) with the cell centres ``axis_0 .. axis_{p-1}`` for a
density; ``weights`` of the last frame's measure; each observable as ``observable.<name>`` with its
``observable.<name>.step`` and ``observable.<name>.time``; the data ``data.X``, ``data.Y`` (and the test set); the
configuration's TOML text as ``config`` and the discretisation as ``kind`` (0-d strings).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mfld.config.outputs import OUTPUTS

from .reader import CheckpointReader


@OUTPUTS.register("npz", doc="NumPy's `.npz`: frames, observables, data and configuration (`numpy.load`)")
def write_npz(checkpoint: Path, target: Path) -> None:
    """The run in ``checkpoint`` as the arrays of this module's docstring, in one uncompressed ``.npz``."""
    reader = CheckpointReader(checkpoint)
    arrays: dict[str, np.ndarray] = {"step": np.asarray(reader.steps), "time": np.asarray(reader.times)}
    snaps = [reader.snapshot(int(s)) for s in reader.steps]
    if snaps:
        if snaps[-1].density is not None:
            arrays["density"] = np.stack([s.density for s in snaps if s.density is not None])
            for k, axis in enumerate(reader.grid().axes()):
                arrays[f"axis_{k}"] = np.asarray(axis)
        else:
            arrays["positions"] = np.stack([s.points for s in snaps])
        arrays["weights"] = snaps[-1].weights
    for name, el in reader.observables().items():
        arrays[f"observable.{name}"] = el["value"]
        arrays[f"observable.{name}.step"] = el["step"]
        arrays[f"observable.{name}.time"] = el["time"]
    arrays.update({f"data.{k}": v for k, v in reader.data.items()})
    arrays["config"] = np.asarray(reader.config_text)
    arrays["kind"] = np.asarray(reader.kind)
    with open(target, "wb") as f:  # a file object: savez would append `.npz` to a name that lacks it
        np.savez(f, **arrays)  # type: ignore[arg-type]  # mypy: the dict could name allow_pickle
