"""``python -m mfld.config [--observables | --write]``: print the README's table of keys (or of observables), or
rewrite every generated file (``data/configs/default.toml`` and the README's tables, in a source checkout)."""

from __future__ import annotations

import sys
from pathlib import Path

from .tables import observables_table, reference_table, write_generated

if "--write" in sys.argv:
    written = write_generated(Path(__file__).resolve().parent.parent / "README.md")
    print("rewrote " + ", ".join(map(str, written)) if written else "the generated files are current")
else:
    print(observables_table() if "--observables" in sys.argv else reference_table(), end="")
