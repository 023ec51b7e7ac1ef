"""The small problems the validation suite runs on.

``p = 1``: tanh without bias, input dimension d = 1 (so ``w`` is a scalar);
``p = 2``: tanh with bias, d = 1, ``w = (u, b)``; ``p = 3``: tanh with bias, d = 2,
``w = (u_1, u_2, b)``. Single-index target, n = 40. Small enough for fine grids
(in p = 3, moderate ones) and many particle seeds on two cores.
"""

from __future__ import annotations

from typing import Any

from mfld.model.datasets import make_dataset
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional


def low_dim_problem(
    p: int,
    lam: float = 0.05,
    lam_a: float = 1.0,
    lam_w: float = 1.0,
    noise: float = 0.0,
    n: int = 40,
    feature: str | None = None,
    seed: int = 3,
) -> Problem:
    """The validation problem in parameter dimension ``p`` (1, 2 or 3)."""
    if p not in (1, 2, 3):
        raise ValueError(f"the validation problems have p = 1, 2 or 3, got {p}")
    ds = make_dataset("single-index", d=1 if p < 3 else 2, n=n, n_test=200, noise=noise, seed=seed)
    feature = feature or ("tanh" if p == 1 else "tanh_bias")
    return Problem.from_dataset(ds, feature, lam, lam_a, lam_w)


def low_dim_functional(p: int, **kw: Any) -> TwoTimescaleFunctional:
    return TwoTimescaleFunctional(low_dim_problem(p, **kw))
