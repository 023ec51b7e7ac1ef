"""Figures of a run: its observables, its measure, and the optimum mu* of a stationary file.

Each ``*_figure`` function takes a run (a checkpoint path, a :class:`~mfld.solver.python_api.Run`, or a
reader) and returns a matplotlib :class:`~matplotlib.figure.Figure` (Matplotlib's object API: no
display needed, the user's backend untouched); a notebook shows it, ``fig.savefig`` writes it. The
``plot_*`` functions save them to PNG files for the command line.

What is drawn where (docs/theory.md's symbols):

- observables against time t (the step count for a stationary file's iterations), one panel per
  recorded quantity; a quantity constant over the run is named in the title, not drawn;
- the measure: densities as curves (p = 1), images with a colour bar (p = 2), and for p = 3 the
  two-dimensional marginal on the two axes of largest variance; particles as a scatter in the target's
  relevant directions (``u . r_1``, ``u . r_2`` for x1 x2; ``u . u°`` against the distance from that
  line for a single-index target), else in the two principal directions of ``u`` at the last frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mfld.discretizations.mesh import Grid
from mfld.storage import CheckpointError, CheckpointReader, Snapshot
from mfld.storage.elements import components, holds_density

PANELS = (
    ("objective", "objective  G + lam Ent", False),
    ("gap", "gap Obj(mu_t) - Obj(mu*) and certificate", True),
    ("certificate", "certificate lam KL(m || p_m)", True),
    ("U", "U(mu)", False),
    ("train_loss", "loss (train, test)", True),
    ("kernel_alignment", "kernel alignment A", False),
    ("parameter_alignment", "parameter alignment P", False),
    ("degrees_of_freedom", "degrees of freedom df", False),
    ("entropy", "entropy Ent(mu)", False),
    ("second_moment", "second moment E ||w||^2", False),
    ("mass", "mass of the density", False),
    ("step_size", "step size (adaptive steps)", True),
)
DPI = 110


def _record(source: Any) -> Any:
    """A reader of the run: a path is opened, a :class:`~mfld.solver.python_api.Run` gives its record."""
    if isinstance(source, str | Path):
        return CheckpointReader(source)
    return getattr(source, "record", source)


def _name(record: Any) -> str:
    return Path(record.path).name if record.path is not None else "in memory"


def _constant(values: np.ndarray) -> bool:
    finite = values[np.isfinite(values)]
    return finite.size == 0 or bool(np.ptp(finite) <= 1e-12 * max(1.0, float(np.abs(finite).max())))


def _grid_of(fig: Figure, panels: int, columns: int = 3) -> list[Axes]:
    rows = -(-panels // columns)
    axes = np.atleast_1d(fig.subplots(rows, min(columns, panels), squeeze=False)).ravel()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return list(axes[:panels])


def _title(record: Any) -> str:
    c, m = record.config, record.config["model"]
    size = f"{record.kind}, {c['grid']['cells']} cells" if holds_density(record.kind) else f"N={c['particles']['N']}"
    return (
        f"{_name(record)}: {m['objective']}, {m['feature']}, lam={m['lam']:g}, lam_a={m['lam_a']:g}, "
        f"lam_w={m['lam_w']:g}, {size}, eta={c['time']['eta']:g}"
    )


def observables_figure(source: Any) -> Figure:
    """The recorded observables of a run against time t, one panel each (a stationary file: its iterations)."""
    record = _record(source)
    if record.kind == "stationary":
        return stationary_figure(record)
    obs = record.observables()
    drawn: list[tuple[str, str, bool]] = []
    constant: list[tuple[str, str, bool]] = []
    # Particles have no density: their entropy, and so the objective, is a nearest-neighbour estimate.
    estimated = " (Ent: k-NN estimate from the particles)" if record.kind == "particles" else ""
    if estimated and "entropy_se" in obs:
        estimated = " (Ent: k-NN estimate from the particles; band +- 2 s.e.)"
    single = all(el["value"].size == 1 for el in obs.values())  # a run of 0 steps: its start, drawn as points
    for name, title, log in PANELS:
        if name in obs and not (name == "certificate" and "gap" in obs):
            title = title + estimated if name in ("objective", "entropy") else title
            (constant if _constant(obs[name]["value"]) and not single else drawn).append((name, title, log))
    if not drawn:
        raise CheckpointError(f"{_name(record)} holds no recorded observables to draw")
    fig = Figure(figsize=(13, 3.4 * -(-len(drawn) // 3)), layout="constrained")
    for ax, (name, title, log) in zip(_grid_of(fig, len(drawn)), drawn, strict=True):
        el = obs[name]
        ax.plot(el["time"], el["value"], "o" if single else "-", label=name.replace("_", " "))
        se_recorded = "entropy_se" in obs and obs["entropy_se"]["value"].shape == el["value"].shape
        if name in ("objective", "entropy") and se_recorded:  # the estimate's randomness, +- 2 s.e.
            scale = record.config["model"]["lam"] if name == "objective" else 1.0
            se = scale * obs["entropy_se"]["value"]
            ax.fill_between(el["time"], el["value"] - 2 * se, el["value"] + 2 * se, alpha=0.25, label="+- 2 s.e.")
        if name == "gap" and "certificate" in obs:
            ax.plot(obs["certificate"]["time"], obs["certificate"]["value"], "--", label="certificate lam KL(m || p_m)")
        if name == "train_loss" and "test_loss" in obs and np.isfinite(obs["test_loss"]["value"]).any():
            ax.plot(obs["test_loss"]["time"], obs["test_loss"]["value"], label="test loss")
        if log and np.any(el["value"] > 0):
            ax.set_yscale("log")
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=8)
        ax.set_title(title)
        ax.set_xlabel("time t")
        ax.grid(alpha=0.3)
    title = _title(record)
    if constant:
        title += "\nconstant over the run: " + ", ".join(f"{n} = {obs[n]['value'][-1]:.4g}" for n, _, _ in constant)
    fig.suptitle(title)
    return fig


def stationary_figure(source: Any) -> Figure:
    """mu* from ``mfld stationary``: the certificate and objective by iteration, and the density mu* itself."""
    record = _record(source)
    obs = record.observables()
    fig = Figure(figsize=(13, 3.8), layout="constrained")
    left, middle, right = fig.subplots(1, 3)
    cert = obs["certificate"]
    left.semilogy(cert["step"], cert["value"])
    left.axhline(record.config["stationary"]["tol"], color="k", ls=":", label="stationary.tol")
    left.legend(fontsize=8)
    left.set(title="certificate lam KL(mu || p_mu)", xlabel="fixed-point iteration")
    objective = obs["objective"]["value"]
    excess = objective - objective[-1]
    keep = excess > 0
    middle.semilogy(obs["objective"]["step"][keep], excess[keep])
    middle.set(title=f"Obj - final Obj ({objective[-1]:.10g})", xlabel="fixed-point iteration")
    for ax in (left, middle):
        ax.grid(alpha=0.3)
    _draw_measure(fig, right, record.snapshot(), "mu*")
    fig.suptitle(
        f"{_name(record)}: mu* = p_mu* by the proximal Gibbs iteration, "
        f"{' x '.join(map(str, record.grid().cells))} cells"
    )
    return fig


def _frames(record: Any, steps: list[int] | None, most: int = 4) -> list[int]:
    """Saved steps to draw: the given ones, or the first, the last and evenly spaced ones between."""
    saved = record.steps.tolist()
    if not saved:
        raise CheckpointError(f"{_name(record)} holds no saved frame to draw")
    if steps:
        missing = [s for s in steps if s not in saved]
        if missing:
            raise CheckpointError(f"steps {missing} are not saved in {_name(record)}; saved steps: {saved}")
        return list(steps)
    picks = np.unique(np.linspace(0, len(saved) - 1, min(most, len(saved))).round().astype(int))
    return [saved[k] for k in picks]


def _marginal_axes(snap: Snapshot) -> tuple[int, int]:
    """The two axes of largest variance of a 3-D density (the 2-D marginal on them shows the most)."""
    q = snap.weights / snap.weights.sum()
    mean = q @ snap.points
    var = q @ (snap.points - mean) ** 2
    a, b = sorted(np.argsort(var)[-2:].tolist())
    return a, b


def _field(snap: Snapshot) -> tuple[np.ndarray, Grid]:
    """A density frame's values and its grid."""
    if snap.density is None or snap.grid is None:
        raise CheckpointError("this frame holds particles, not a density on a grid")
    return snap.density, snap.grid


def _image(snap: Snapshot, pair: tuple[int, int]) -> np.ndarray:
    """The density (p = 2) or its two-dimensional marginal on the axes ``pair`` (p = 3)."""
    density, grid = _field(snap)
    if grid.dim == 2:
        return density
    other = ({0, 1, 2} - set(pair)).pop()
    return density.sum(axis=other) * grid.spacing[other]


def _names(snap: Snapshot) -> list[str]:
    """The measure's coordinates by name (``u_1 .. u_d``, ``b``; ``a_k`` first for the classical objective)."""
    return components(snap.config, snap.points.shape[1])


def _density_label(snap: Snapshot, pair: tuple[int, int]) -> str:
    names = _names(snap)
    return "density" if len(names) == 2 else f"marginal density of ({names[pair[0]]}, {names[pair[1]]})"


def _density_image(
    fig: Figure, ax: Axes, snap: Snapshot, pair: tuple[int, int], vmax: float | None, colorbar: bool
) -> None:
    a, b = pair
    grid = _field(snap)[1]
    mesh = ax.pcolormesh(
        grid.axes()[a], grid.axes()[b], _image(snap, pair).T, shading="auto", cmap="viridis", vmin=0, vmax=vmax
    )
    if colorbar:
        fig.colorbar(mesh, ax=ax, label=_density_label(snap, pair))
    ax.set_xlabel(_names(snap)[a])
    ax.set_ylabel(_names(snap)[b])


def _directions(snap: Snapshot, last: Snapshot) -> tuple[np.ndarray, tuple[str, str]]:
    """Two coordinates of each particle that show what was learned, and their labels.

    ``u`` is the first d coordinates of w (the input weights). With the target's relevant basis R
    (d x k): ``u . r_1, u . r_2`` (k >= 2), or ``u . r_1`` and ``|u - (u . r_1) r_1|`` (k = 1).
    Without it: ``u`` on the two principal directions of ``u`` at the last frame.
    """
    d = snap.data["X"].shape[1]
    u = snap.points[:, :d]
    R = snap.data.get("relevant")
    if R is not None and R.size:
        R = R if R.ndim == 2 else R[:, None]
        if R.shape[1] >= 2:
            return u @ R[:, :2], ("u . r_1", "u . r_2")
        along = u @ R[:, 0]
        return np.column_stack([along, np.linalg.norm(u - along[:, None] * R[:, 0], axis=1)]), (
            "u . u°",
            "|u - (u . u°) u°|",
        )
    ref = last.points[:, :d]
    _, _, vt = np.linalg.svd(ref - ref.mean(axis=0), full_matrices=False)
    return u @ vt[:2].T, ("u . v_1 (principal)", "u . v_2 (principal)")


def _scatter(snap: Snapshot, last: Snapshot | None) -> tuple[np.ndarray, tuple[str, str]]:
    """The two coordinates of each particle drawn, and their names."""
    if snap.points.shape[1] == 2:
        a, b = _names(snap)
        return snap.points, (a, b)
    return _directions(snap, last or snap)


def _pair(snap: Snapshot) -> tuple[int, int]:
    return _marginal_axes(snap) if _field(snap)[1].dim == 3 else (0, 1)


def _draw_measure(
    fig: Figure,
    ax: Axes,
    snap: Snapshot,
    label: str,
    last: Snapshot | None = None,
    vmax: float | None = None,
    colorbar: bool = True,
) -> None:
    """One frame of the measure on ``ax`` (see the module doc); ``last`` fixes the directions drawn."""
    if snap.density is not None:
        density, grid = _field(snap)
        if grid.dim == 1:
            ax.plot(grid.axes()[0], density, label=label)
            ax.set_xlabel(_names(snap)[0])
            ax.set_ylabel("density")
        else:
            _density_image(fig, ax, snap, _pair(last or snap), vmax, colorbar)
            ax.set_title(label)
        return
    if snap.points.shape[1] == 1:
        ax.hist(snap.points[:, 0], bins=60, density=True, histtype="step", label=label)
        ax.set_xlabel(_names(snap)[0])
        return
    xy, names = _scatter(snap, last)
    ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.4, linewidths=0)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(label)
    ax.grid(alpha=0.3)


def measure_figure(source: Any, steps: list[int] | None = None) -> Figure:
    """The measure mu_t at a few saved steps (default: four, first and last included)."""
    record = _record(source)
    frames = _frames(record, steps)
    snaps = [record.snapshot(s) for s in frames]
    last = snaps[-1]
    what = "mu*" if record.kind == "stationary" else "mu_t"
    if (_field(last)[1].dim if last.density is not None else last.points.shape[1]) == 1:
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.subplots()
        for s in snaps:
            _draw_measure(fig, ax, s, f"t = {s.time:g}")
        ax.legend(fontsize=8)
        ax.set_title(f"{_name(record)}: {what}")
        return fig
    vmax = None
    if last.density is not None:  # one colour scale for every frame, so that they compare
        vmax = max(float(np.max(_image(s, _pair(last)))) for s in snaps)
    fig = Figure(figsize=(4 * len(snaps) + 1, 3.8), layout="constrained")
    axes = list(np.atleast_1d(fig.subplots(1, len(snaps), sharex=True, sharey=True)))
    for ax, s in zip(axes, snaps, strict=True):
        _draw_measure(fig, ax, s, f"t = {s.time:g} (step {s.step})", last, vmax, colorbar=False)
    if vmax is not None:  # one colour bar: the frames share the scale
        fig.colorbar(axes[-1].collections[0], ax=axes, label=_density_label(last, _pair(last)))
    fig.suptitle(f"{_name(record)}: {what}")
    return fig


def _limits(snaps: list[Snapshot], last: Snapshot) -> dict[str, Any]:
    """Axis limits (and the colour scale of a density image) that hold every frame: an animation's axes stay
    still while the measure moves."""

    def span(values: np.ndarray, floor: float | None = None) -> tuple[float, float]:
        lo, hi = float(np.min(values)), float(np.max(values))
        pad = 0.05 * (hi - lo or 1.0)
        return (floor if floor is not None else lo - pad), hi + pad

    first = snaps[0]
    if first.density is not None:
        grid = _field(first)[1]
        if grid.dim == 1:
            return {"x": span(grid.axes()[0]), "y": span(np.concatenate([s.density for s in snaps]), floor=0.0)}
        a, b = _pair(last)
        vmax = max(float(np.max(_image(s, (a, b)))) for s in snaps)
        return {"x": span(grid.axes()[a]), "y": span(grid.axes()[b]), "vmax": vmax}
    if first.points.shape[1] == 1:  # the histograms' heights, 60 bins each as drawn
        heights = np.concatenate([np.histogram(s.points[:, 0], bins=60, density=True)[0] for s in snaps])
        return {"x": span(np.concatenate([s.points[:, 0] for s in snaps])), "y": span(heights, floor=0.0)}
    xy = np.concatenate([_scatter(s, last)[0] for s in snaps])
    return {"x": span(xy[:, 0]), "y": span(xy[:, 1])}


def plot_run(path: str | Path, out: str | Path | None = None) -> Path:
    """Draw the observables of checkpoint ``path`` into a PNG (default: ``path`` with ``.png``); returns its path."""
    out = Path(out) if out is not None else Path(path).with_suffix(".png")
    observables_figure(path).savefig(out, dpi=DPI)
    return out


def plot_measure(path: str | Path, out: str | Path | None = None, steps: list[int] | None = None) -> Path:
    """The measure at a few saved steps into a PNG (default: ``<path>-measure.png``); returns its path."""
    out = Path(out) if out is not None else Path(path).with_name(Path(path).stem + "-measure.png")
    measure_figure(path, steps).savefig(out, dpi=DPI)
    return out


def animate(path: str | Path, out: str | Path | None = None, fps: int = 4) -> Path:
    """Every saved frame of the measure as an animated GIF (``<path>.gif``, Pillow); returns its path."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    record = _record(path)
    out = Path(out) if out is not None else Path(path).with_suffix(".gif")
    fig = Figure(figsize=(5, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    last = record.snapshot()
    snaps = [record.snapshot(int(s)) for s in record.steps]
    limits = _limits(snaps, last)

    def frame(k: int) -> list[Any]:
        ax.clear()
        snap = snaps[k]
        _draw_measure(fig, ax, snap, f"{_name(record)}: t = {snap.time:g}", last, limits.get("vmax"), colorbar=False)
        ax.set_xlim(limits["x"])
        if "y" in limits:
            ax.set_ylim(limits["y"])
        return []

    FuncAnimation(fig, frame, frames=len(record.steps)).save(out, writer=PillowWriter(fps=fps))
    return out
