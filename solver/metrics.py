"""Observables of a measure (THEORY.md sections 2 and 4).

``objective = G + lam Ent`` (Ent from the discretisation: exact on a grid, a
nearest-neighbour estimate for particles), ``U``, ``second_moment = E||w||^2``,
``kernel_alignment`` A, ``parameter_alignment`` P, ``degrees_of_freedom`` df,
``train_loss = (1/2nT) ||f_mu(X) - Y||^2`` and ``test_loss`` likewise on the test
set (clean targets).
"""

from __future__ import annotations

from typing import Any

from .backend import namespace
from .functional import degrees_of_freedom, kernel_alignment, parameter_alignment

OBSERVABLES = (
    "objective",
    "G",
    "entropy",
    "U",
    "second_moment",
    "kernel_alignment",
    "parameter_alignment",
    "degrees_of_freedom",
    "train_loss",
    "test_loss",
)


def half_mse(pred: Any, Y: Any) -> float:
    """``(1 / 2 n T) ||pred - Y||_F^2``."""
    xp = namespace(Y)
    return 0.5 * float(xp.mean((pred - Y) ** 2))


def _comm(functional: Any) -> Any:
    from .distributed import Serial

    return getattr(functional, "comm", Serial())


def measure_metrics(functional: Any, fit: Any, entropy: float) -> dict[str, float]:
    """All observables of the measure behind ``fit``, given its entropy."""
    pb = functional.problem
    e = functional.energy(fit)
    W = fit.points  # (a, w) for the classical objective: w is the last p columns
    out = {
        "objective": e["G"] + pb.lam * entropy,
        "G": e["G"],
        "entropy": entropy,
        "U": e["U"],
        "second_moment": e["second_moment"],
        "kernel_alignment": kernel_alignment(functional, fit),
        "parameter_alignment": _comm(functional).sum(parameter_alignment(pb, W[:, W.shape[1] - pb.p :], fit.weights)),
        "degrees_of_freedom": degrees_of_freedom(functional, fit),
        "train_loss": half_mse(fit.pred, pb.Y),
        "test_loss": float("nan"),
    }
    if pb.X_test is not None and hasattr(functional, "predict"):
        out["test_loss"] = half_mse(functional.predict(fit, pb.X_test), pb.Y_test)
    return out
