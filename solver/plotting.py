"""Figures of a run's observables (Matplotlib's object API: no display needed, the user's backend untouched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .checkpoint import CheckpointError, CheckpointReader

PANELS = (
    ("objective", "objective  G + lam Ent", False),
    ("U", "U(mu)", False),
    ("train_loss", "loss (train, test)", True),
    ("kernel_alignment", "kernel alignment A", False),
    ("parameter_alignment", "parameter alignment P", False),
    ("degrees_of_freedom", "degrees of freedom df", False),
)


def plot_run(path: str | Path, out: str | Path | None = None) -> Path:
    """Draw the observables of checkpoint ``path`` against time into a PNG; returns its path."""
    reader = CheckpointReader(path)
    obs = reader.observables()
    out = Path(out) if out is not None else Path(path).with_suffix(".png")
    fig = Figure(figsize=(13, 7), layout="constrained")
    axes = fig.subplots(2, 3)
    panels = list(PANELS)
    if "certificate" in obs:
        panels[1] = ("certificate", "certificate lam KL(m || p_m), gap", True)
    for ax, (name, title, log) in zip(axes.flat, panels, strict=True):
        if name not in obs:
            ax.set_visible(False)
            continue
        ax.plot(obs[name]["time"], obs[name]["value"], label=name.replace("_", " "))
        if name == "certificate" and "gap" in obs:
            gap = obs["gap"]["value"]
            keep = gap > 0
            ax.plot(obs["gap"]["time"][keep], gap[keep], label="gap Obj - Obj*")
            ax.legend()
        if name == "train_loss" and "test_loss" in obs and np.isfinite(obs["test_loss"]["value"]).any():
            ax.plot(obs["test_loss"]["time"], obs["test_loss"]["value"], label="test loss")
            ax.legend()
        if log and np.any(obs[name]["value"] > 0):
            ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("time t")
        ax.grid(alpha=0.3)
    c = reader.config
    m = c["model"]
    size = f"N={c['particles']['N']}" if reader.kind == "particles" else f"{reader.kind} {c['grid']['cells']} cells"
    fig.suptitle(
        f"{Path(path).name}: {m['objective']}, {m['feature']}, lam={m['lam']:g}, lam_a={m['lam_a']:g}, "
        f"lam_w={m['lam_w']:g}, {size}, eta={c['time']['eta']:g}"
    )
    fig.savefig(out, dpi=110)
    return out


def _frames(reader: CheckpointReader, steps: list[int] | None, most: int = 4) -> list[int]:
    """Saved steps to draw: the given ones, or the first, the last and evenly spaced ones between."""
    saved = reader.steps.tolist()
    if steps:
        missing = [s for s in steps if s not in saved]
        if missing:
            raise CheckpointError(f"steps {missing} are not saved in {str(reader.path)!r}; saved steps: {saved}")
        return list(steps)
    picks = np.unique(np.linspace(0, len(saved) - 1, min(most, len(saved))).round().astype(int))
    return [saved[k] for k in picks]


def _draw(ax: Axes, reader: CheckpointReader, step: int, label: str | None = None, image: bool = True) -> None:
    """One frame of the measure on ``ax``: a density curve or image, a scatter, or a histogram of w_0."""
    snap = reader.snapshot(step)
    if snap.density is not None:
        axes = snap.grid.axes()
        if snap.grid.dim == 1:
            ax.plot(axes[0], snap.density, label=label)
            ax.set_xlabel("w")
            ax.set_ylabel("density")
        elif snap.grid.dim == 2 and image:
            ax.pcolormesh(axes[0], axes[1], snap.density.T, shading="auto", cmap="viridis")
            ax.set_xlabel("w_0")
            ax.set_ylabel("w_1")
        else:  # marginal along the first axis
            m = snap.density.sum(axis=tuple(range(1, snap.grid.dim))) * np.prod(snap.grid.spacing[1:])
            ax.plot(axes[0], m, label=label)
            ax.set_xlabel("w_0 (marginal)")
    elif snap.points.shape[1] == 2 and image:
        ax.scatter(snap.points[:, 0], snap.points[:, 1], s=2, alpha=0.5)
        ax.set_xlabel("w_0")
        ax.set_ylabel("w_1")
    else:
        ax.hist(snap.points[:, 0], bins=60, density=True, histtype="step", label=label)
        ax.set_xlabel("w_0 (marginal)")


def plot_measure(path: str | Path, out: str | Path | None = None, steps: list[int] | None = None) -> Path:
    """The measure itself at a few saved steps into a PNG (``<path>-measure.png``); returns its path.

    Densities: curves (p = 1), images (p = 2) or the marginal of w_0 (p = 3). Particles: the
    scatter (p = 2), else marginal histograms of the first four coordinates.
    """
    reader = CheckpointReader(path)
    out = Path(out) if out is not None else Path(path).with_name(Path(path).stem + "-measure.png")
    frames = _frames(reader, steps)
    times = dict(zip(reader.steps.tolist(), reader.times.tolist(), strict=True))
    p = reader.snapshot(frames[0]).points.shape[1]
    one_per_frame = p == 2
    panels = len(frames) if one_per_frame else (1 if reader.has_density else min(p, 4))
    fig = Figure(figsize=(4 * panels, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, panels))
    for k, step in enumerate(frames):
        label = f"t = {times[step]:g}"
        if one_per_frame:
            _draw(axes[k], reader, step)
            axes[k].set_title(label)
        elif reader.has_density:
            _draw(axes[0], reader, step, label)
        else:
            W = reader.snapshot(step).points
            for j, ax in enumerate(axes):
                ax.hist(W[:, j], bins=60, density=True, histtype="step", label=label)
                ax.set_xlabel(f"w_{j} (marginal)")
    if not one_per_frame:
        axes[0].legend(fontsize=8)
    fig.suptitle(f"{Path(path).name}: the measure mu_t")
    fig.savefig(out, dpi=110)
    return out


def animate(path: str | Path, out: str | Path | None = None, fps: int = 4) -> Path:
    """Every saved frame of the measure as an animated GIF (``<path>.gif``, Pillow); returns its path."""
    from matplotlib.animation import FuncAnimation, PillowWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    reader = CheckpointReader(path)
    out = Path(out) if out is not None else Path(path).with_suffix(".gif")
    fig = Figure(figsize=(5, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()

    def frame(k: int) -> list:
        ax.clear()
        _draw(ax, reader, int(reader.steps[k]))
        ax.set_title(f"{Path(path).name}: t = {reader.times[k]:g}")
        return []

    FuncAnimation(fig, frame, frames=len(reader.steps)).save(out, writer=PillowWriter(fps=fps))
    return out
