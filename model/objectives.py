"""Making the configured functional: ``model.objective`` (:data:`~mfld.model.functional.OBJECTIVES`) with the
label-noise expectation or procedure around it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .distributed import Communicator
from .features import FEATURE_MAPS, is_feature_name
from .functional import DEFAULT_MEMORY_BUDGET, OBJECTIVES, Functional, Objective
from .label_noise import ExpectedLabelNoiseFunctional
from .options import choice, nonneg, option, positive
from .problem import Problem
from .two_timescale import DualSolve, TwoTimescaleFunctional

__all__ = ["OBJECTIVES", "ModelOptions", "Objective", "make_functional"]


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """The ``[model]`` keys: the objective, the feature map and the hyper-parameters (docs/theory.md §1-2)."""

    section: ClassVar[str] = "model"
    objective: str = choice("two-timescale", "the functional", OBJECTIVES)
    # The registered maps are listed as choices when the table is made, not here (see options.choice).
    feature: str = option(
        "tanh_bias",
        "feature map h(x; w); `_bias` for w = (u, b); `cos` is sqrt 2 cos (Fourier); "
        "also a plug-in (entry point `mfld.feature_maps`) or `package.module:attribute`",
        str,
        is_feature_name,
        "a registered feature map, an installed plug-in or module:attribute",
        options=FEATURE_MAPS,
    )
    lam: float = positive(0.004, "temperature lambda")
    lam_a: float = positive(0.25, "second-layer ridge lambda_a (lam_a_bar = lam lam_a)")
    lam_w: float = positive(0.25, "prior precision lambda_w, nu = N(0, I / lam_w) (lam_w_bar = lam lam_w)")
    label_noise: float = nonneg(
        0.0,
        "s > 0: the label-noise procedure (docs/theory.md §4.6): particles draw fresh "
        "eps ~ Unif[-s, s] each step; grids run its expectation, Obj + (s^2 / 6n) df",
    )


def make_functional(
    name: str,
    problem: Problem,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    comm: Communicator | None = None,
    label_noise: float = 0.0,
    solve: DualSolve | None = None,
    expectation: bool = True,
    options: Any = None,
) -> Functional:
    """The functional ``name`` of ``problem``.

    ``label_noise = s > 0`` needs the two-timescale objective; with ``expectation`` the functional
    is its expectation ``G + (s^2/6n) df`` (densities), without it the plain functional whose
    particles run the procedure as a drift. Only the two-timescale functional can be split over
    processes (``comm``) or solve its dual system iteratively (``solve``). ``options`` are the objective's own
    (its registry entry's options dataclass: :class:`~mfld.model.dual_solve.DualSolveOptions` for the
    two-timescale functional), passed to its constructor.
    """
    make = OBJECTIVES[name]
    own: dict[str, Any] = {} if options is None else {"options": options}
    if solve is not None and make is TwoTimescaleFunctional:  # a DualSolve given directly, from Python
        own["solve"] = solve
    F: Functional = make(problem, memory_budget, comm, **own)
    if label_noise <= 0:
        return F
    if not isinstance(F, TwoTimescaleFunctional):
        raise ValueError("model.label_noise needs model.objective = 'two-timescale'")
    return ExpectedLabelNoiseFunctional(F, label_noise) if expectation else F
