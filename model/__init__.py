"""mfld.model: the mathematics, below every discretisation.

The learning problem (data, feature map, hyper-parameters), the functionals on
weighted point sets (two-timescale, classical, prior only, label noise), the
observables as pure functions, the array backend and the communicator. Nothing
here knows of grids, particles, time loops or files.
"""
