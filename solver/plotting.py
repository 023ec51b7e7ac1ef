"""Figures of a run's observables (Matplotlib's object API: no display needed, the user's backend untouched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from .checkpoint import CheckpointReader

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
