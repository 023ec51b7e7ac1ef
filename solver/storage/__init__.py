"""Moved to :mod:`mfld.storage`; this package keeps the import paths of mfld 0.2.0.dev1 for one release
(``mfld.solver.storage`` and each of its modules, ``mfld.solver.storage.reader`` say, are the new ones)."""

import sys

import mfld.storage
from mfld.storage import *  # noqa: F403 - the whole public surface, as it was importable here
from mfld.storage import (  # noqa: F401 - the modules, importable under the old names
    __all__,
    checks,
    commit,
    elements,
    layout,
    lock,
    provenance,
    reader,
    sharded,
    store,
)

for _name in ("checks", "commit", "elements", "layout", "lock", "provenance", "reader", "sharded", "store"):
    sys.modules[f"{__name__}.{_name}"] = getattr(mfld.storage, _name)
