"""mfld.solver: the run machinery, on top of every layer below it.

:mod:`~mfld.solver.build` takes a configuration's pieces (problem, functional, discretisation:
:mod:`mfld.config.assembly`, which the experiments use too), adds the run's observers, and runs it into a
checkpoint file (:mod:`mfld.storage`) or in memory; :mod:`~mfld.solver.observers` are the observers it adds
(progress, checkpoints, frames), :mod:`~mfld.solver.files` the checkpoint file, its lock and the output formats,
:mod:`~mfld.solver.threads` the BLAS thread policy, :mod:`~mfld.solver.python_api` the Python API
(``mfld.run``, ``mfld.load``, ``Run``), :mod:`~mfld.solver.cli` the command line,
:mod:`~mfld.solver.sweep` the sweeps, :mod:`~mfld.solver.compare` two runs side by side and
:mod:`~mfld.solver.plotting` the figures. ``mfld.solver.config``, ``mfld.solver.runs`` and
``mfld.solver.storage`` are the import paths of mfld 0.2.0.dev1, kept for one release.
"""
