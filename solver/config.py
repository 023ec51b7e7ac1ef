"""Moved to :mod:`mfld.config`; this module keeps the import path of mfld 0.2.0.dev1 for one release."""

from typing import Any

from mfld.config import *  # noqa: F403 - the whole public surface, as it was importable here
from mfld.config import __all__  # noqa: F401


def __getattr__(name: str) -> Any:
    import mfld.config

    return getattr(mfld.config, name)
