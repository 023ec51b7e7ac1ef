"""``mfld experiment``: the paper's results, reproduced (THEORY.md sections 4.4 to 5)."""

from __future__ import annotations

from collections.abc import Callable

from . import exp_alignment, exp_label_noise, exp_paper, exp_sample_complexity
from .report import Report

EXPERIMENTS: dict[str, Callable[..., Report]] = {
    "alignment": exp_alignment.run,
    "paper-figure-1": exp_paper.figure_1,
    "label-noise": exp_label_noise.run,
    "paper-figure-2": exp_paper.figure_2,
    "sample-complexity": exp_sample_complexity.run,
}
