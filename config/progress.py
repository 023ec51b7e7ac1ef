"""Progress bars of the phases that can take more than a few seconds (a run's steps, the mu* solve).

``output.progress`` decides: ``"auto"`` shows a tqdm bar on a terminal (after ``delay`` seconds, so that a short
phase shows nothing), ``"on"`` always, ``"off"`` never; where stderr is not a terminal ``"auto"`` leaves the
reporting to log lines.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from tqdm import TqdmWarning

with warnings.catch_warnings():  # a notebook without ipywidgets gets the text bar; tqdm would say so on import
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

__all__ = ["SETTINGS", "bar", "tqdm"]

SETTINGS = {"auto": None, "on": True, "off": False}
"""``output.progress`` -> shown (True), hidden (False), or on a terminal only (None)."""


def bar(setting: bool | None, delay: float = 2.0, **kwargs: Any) -> Any:
    """A tqdm bar, disabled unless ``setting`` (a value of :data:`SETTINGS`) shows it here; with ``None`` shown
    after ``delay`` seconds."""
    disable = setting is False or (setting is None and not sys.stderr.isatty())
    return tqdm(disable=disable, delay=0.0 if setting else delay, **kwargs)
