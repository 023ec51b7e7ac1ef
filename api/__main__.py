"""``python -m mfld``: the ``mfld`` command line."""

from mfld.solver.cli import run_main

run_main()
