"""Output formats: what a finished run also writes beside its HDF5 checkpoint (``output.formats``).

The checkpoint is the run's one source of truth (it resumes, and every reader checks it); an output
format is a conversion of it for other tools, ``write(checkpoint, target)``, registered under the
suffix of the file it writes: ``@OUTPUTS.register("npz", doc="...")`` in one file of ``storage/``
(found there by the registry, as every registry finds its built-ins), or an installed package's entry
point in the group ``mfld.outputs``. ``mfld export FILE.h5 --format NAME`` writes one from a saved file.

The table lives here, below storage, so that the configuration can name its entries; the
conversions themselves sit in storage (they read the checkpoint) and register themselves from there.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from mfld.model.registry import Registry

Output = Callable[[Path, Path], None]
"""``write(checkpoint, target)``: the run saved in ``checkpoint`` written to ``target`` in the format."""

OUTPUTS: Registry[Output] = Registry("output.formats", group="mfld.outputs", builtins="mfld.storage")


def target_path(checkpoint: str | Path, name: str) -> Path:
    """Where format ``name`` of ``checkpoint`` goes by default: the checkpoint's path with the suffix ``.name``."""
    return Path(checkpoint).with_suffix(f".{name}")


def export(checkpoint: str | Path, name: str, target: str | Path | None = None) -> Path:
    """Write the run saved in ``checkpoint`` in format ``name`` to ``target`` (default: :func:`target_path`).

    The format writes to a temporary file beside the target, renamed over it when complete: a target is never
    left half written.
    """
    write = OUTPUTS[name]
    out = target_path(checkpoint, name) if target is None else Path(target)
    if out.resolve() == Path(checkpoint).resolve():
        raise ValueError(f"the {name} output would overwrite its own checkpoint {str(checkpoint)!r}; name another")
    partial = out.with_name(f".{out.name}.partial")
    try:
        write(Path(checkpoint), partial)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out
