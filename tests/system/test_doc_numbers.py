"""Numbers the prose of the docs quotes from a report are checked against that report's JSON (issue 36, item 6):
a regenerated report whose numbers moved fails here until the prose follows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_the_rate_scaling_in_the_theory_is_the_rate_reports():
    rows = json.loads((DOCS / "validation" / "rate.json").read_text())["data"]["grid_rates"]
    two = [r for r in rows if r[0] == "two-timescale"]
    lam = np.array([r[1] for r in two])
    rate = np.array([r[2] for r in two])
    power = float(np.polyfit(np.log(lam), np.log(rate), 1)[0])
    first, last = two[0], two[-1]
    text = " ".join((DOCS / "theory.md").read_text().split())
    quoted = [
        f"`lam^{power:.2f}`",
        f"({rate[0]:.3g} at lam = {first[1]:g}",
        f"{rate[-1]:.3g} at {last[1]:g}",
        f"from {first[4]:.3g} to {last[4]:.3g}",
        f"10^{round(last[7])} at lam = {last[1]:g}",
        f"10^{round(first[7])} at {first[1]:g}",
    ]
    missing = [q for q in quoted if q not in text]
    assert not missing, f"docs/theory.md §4 quotes other numbers than docs/validation/rate.json: {missing}"
