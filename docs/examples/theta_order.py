"""The order in time of the extension patch's theta method (run after `git am docs/examples/extensions.patch`).

    python docs/examples/theta_order.py

The grid-1d problem (p = 1) at 128 cells to T = 1, direct solver, no gap: the L1 distance of the density at T
from theta = 1/2 at eta = T/2048, for eta = T/32, T/64, T/128, and the observed orders log2 of successive ratios.
"""

import numpy as np

from mfld.config import load_config
from mfld.solver import build

BASE = [
    'discretization="grid"', 'data.target="single-index"', "data.d=1", "data.n=40", "data.n_test=20",
    'model.feature="tanh"', "model.lam=0.05", "model.lam_a=1.0", "model.lam_w=1.0", "grid.cells=128",
    "grid.gap=false", 'grid.linear_solver="direct"', "output.plot=false", 'output.progress="off"',
]  # fmt: skip
T = 1.0


def density_at_T(scheme: str, eta: float, theta: float | None = None) -> np.ndarray:
    extra = [f'grid.scheme="{scheme}"', f"time.eta={eta}", f"time.steps={round(T / eta)}"]
    if theta is not None:
        extra.append(f"grid.theta={theta}")
    return build.run_in_memory(load_config(None, BASE + extra)).system.density


reference = density_at_T("theta", T / 2048, 0.5)
for scheme, theta in (("implicit-euler", None), ("theta", 0.5), ("theta", 1.0)):
    errors = [float(np.abs(density_at_T(scheme, T / k, theta) - reference).sum()) for k in (32, 64, 128)]
    orders = [np.log2(errors[i] / errors[i + 1]) for i in range(2)]
    print(f"{scheme} theta={theta}: L1 errors {', '.join(f'{e:.3e}' for e in errors)}; orders "
          f"{', '.join(f'{o:.2f}' for o in orders)}")  # fmt: skip
