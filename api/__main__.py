"""``python -m mfld``: the ``mfld`` command line."""

import sys

from mfld.solver.cli import main

sys.exit(main())
