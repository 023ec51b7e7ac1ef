"""``mfld compare``: two saved measures of the same problem, at matching times.

For two checkpoint files (particles or densities, any combination) whose problems are
the same (data, feature map, hyper-parameters, objective), at every time both files
saved (or at chosen steps of the first), the report gives W1 and W2 between the measures
(:mod:`mfld.validation.distances`: densities as densities, not as atoms at their cell centres; exact in
one dimension, sliced above with the W1 floor below which the sliced value cannot resolve), the differences
of U, df and the kernel alignment, and the sup-distance of the intrinsic kernels on the
training inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mfld.model.observables import Evaluation, evaluate
from mfld.storage import CheckpointError, CheckpointReader
from mfld.storage.reader import Snapshot
from mfld.validation.distances import Cells, distance_names, kernel_distance, measure_distance

from .build import build_functional, build_problem

COLUMNS = (
    "time",
    "step_a",
    "step_b",
    "W1",
    "W2",
    "W1_floor",
    "U_a",
    "U_b",
    "dU",
    "df_a",
    "df_b",
    "d_df",
    "A_a",
    "A_b",
    "dA",
    "kernel_sup",
)
_SAME = ("objective", "feature", "lam", "lam_a", "lam_w")


def _same_problem(a: CheckpointReader, b: CheckpointReader) -> None:
    diff = [k for k in _SAME if a.config["model"][k] != b.config["model"][k]]
    for name in ("X", "Y"):
        if a.data[name].shape != b.data[name].shape or not np.array_equal(a.data[name], b.data[name]):
            diff.append(f"data {name}")
    if diff:
        raise CheckpointError(
            f"{str(a.path)!r} and {str(b.path)!r} are runs of different problems "
            f"(they differ in {', '.join(diff)}); compare runs of one problem"
        )


def matching_frames(a: CheckpointReader, b: CheckpointReader, steps: list[int] | None = None) -> list[tuple[int, int]]:
    """Pairs of frame indices ``(k_a, k_b)`` saved at the same time (to 1e-9 relative), or at ``steps`` of ``a``."""
    pairs = []
    for ka, ta in enumerate(a.times):
        if steps is not None and int(a.steps[ka]) not in steps:
            continue
        hits = np.flatnonzero(np.abs(b.times - ta) <= 1e-9 * max(1.0, abs(ta)))
        if hits.size:
            pairs.append((ka, int(hits[-1])))
    if not pairs:
        raise CheckpointError(
            f"{str(a.path)!r} (times {a.times.tolist()}) and {str(b.path)!r} (times "
            f"{b.times.tolist()}) saved no frame at a common time" + (f" among steps {steps}" if steps else "")
        )
    return pairs


def compare(
    path_a: str | Path, path_b: str | Path, steps: list[int] | None = None, trust: bool = False
) -> list[dict[str, float]]:
    """One row per matching time: W1, W2, U, df, alignment of both measures and their differences, kernel sup-distance.

    ``trust`` admits feature maps named by import path in the files (see :func:`~mfld.solver.build.build_problem`).
    """
    a, b = CheckpointReader(path_a), CheckpointReader(path_b)
    _same_problem(a, b)
    problem = build_problem(a.config, a.data, backend="numpy", trust=trust)
    F = {"a": build_functional(a.config, problem), "b": build_functional(b.config, problem)}
    rng = np.random.default_rng(0)
    rows = []
    for ka, kb in matching_frames(a, b, steps):
        snaps = {"a": a.snapshot(int(a.steps[ka])), "b": b.snapshot(int(b.steps[kb]))}
        obs, kernel = {}, {}
        for side, snap in snaps.items():
            fit = F[side].fit(snap.points, snap.weights, signed=snap.density is not None)
            obs[side] = evaluate(Evaluation(F[side], fit), ("U", "degrees_of_freedom", "kernel_alignment"))
            kf = F[side].kernel_fit(fit)
            kernel[side] = (kf.points, kf.weights)
        w1, w2, floor = measure_distance(_measure(snaps["a"]), _measure(snaps["b"]), rng)
        sup = kernel_distance(problem.feature, problem.X, *kernel["a"], *kernel["b"])
        oa, ob = obs["a"], obs["b"]
        rows.append(
            {
                "time": float(a.times[ka]),
                "step_a": int(a.steps[ka]),
                "step_b": int(b.steps[kb]),
                "W1": w1,
                "W2": w2,
                "W1_floor": floor,
                "U_a": oa["U"],
                "U_b": ob["U"],
                "dU": oa["U"] - ob["U"],
                "df_a": oa["degrees_of_freedom"],
                "df_b": ob["degrees_of_freedom"],
                "d_df": oa["degrees_of_freedom"] - ob["degrees_of_freedom"],
                "A_a": oa["kernel_alignment"],
                "A_b": ob["kernel_alignment"],
                "dA": oa["kernel_alignment"] - ob["kernel_alignment"],
                "kernel_sup": sup,
                "sliced": snaps["a"].points.shape[1] > 1,
            }
        )
    return rows


def _measure(snap: Snapshot) -> tuple[np.ndarray, np.ndarray] | Cells:
    """A saved measure for :func:`measure_distance`: a density as :class:`Cells` (its mass spread over each cell),
    particles as points with their weights."""
    if snap.density is None or snap.grid is None:
        return snap.points, snap.weights
    return Cells.on(snap.density * snap.grid.cell_volume, snap.grid.lower, snap.grid.upper)


def _label(key: str, rows: list[dict[str, float]]) -> str:
    """W1 and W2 are exact in one dimension and sliced (averaged over random directions) above: say which."""
    if key not in ("W1", "W2"):
        return key
    return distance_names(2 if any(r.get("sliced") for r in rows) else 1)[("W1", "W2").index(key)]


def table(rows: list[dict[str, float]]) -> str:
    """The rows as a Markdown table."""
    shown = ("time", "step_a", "step_b", "W1", "W2", "W1_floor", "dU", "d_df", "dA", "kernel_sup")
    lines = ["| " + " | ".join(_label(c, rows) for c in shown) + " |", "|" + "---|" * len(shown)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in shown) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, float]], out: str | Path, title: str) -> Path:
    """W1, W2, |dU|, |d df| and the kernel distance against time, on a log scale."""
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    t = [r["time"] for r in rows]
    for key, label in (
        ("W1", _label("W1", rows)),
        ("W2", _label("W2", rows)),
        ("dU", "|U_a - U_b|"),
        ("d_df", "|df_a - df_b|"),
        ("kernel_sup", "sup |k_a - k_b|"),
    ):
        values = np.abs([r[key] for r in rows])
        if np.any(values > 0):
            ax.plot(t, np.maximum(values, 1e-300), "o-", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("time t")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(out, dpi=110)
    return Path(out)
