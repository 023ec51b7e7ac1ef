"""Reports of validation checks: JSON figures, a Markdown summary and PNG plots.

Every number in a report is also in its JSON file, so that figures can be redrawn
and tables pasted without rerunning the check.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

log = logging.getLogger("mfld.validation")


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if hasattr(x, "tolist"):
        return _clean(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4g}"
    return str(v)


@dataclass
class Report:
    """What one check measured; ``status`` says whether the theory's claims held.

    A claim is recorded only where the numbers could contradict it; a report
    with no claim is ``"no claims"``, neither passed nor failed.
    """

    name: str
    title: str
    data: dict[str, Any] = field(default_factory=dict)
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    claims: list[tuple[str, bool]] = field(default_factory=list)
    figures: list[tuple[str, Any]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Every claim held, and there was at least one."""
        return bool(self.claims) and all(ok for _, ok in self.claims)

    @property
    def status(self) -> str:
        """``"passed"``, ``"failed"`` or ``"no claims"``."""
        if not self.claims:
            return "no claims"
        return "passed" if self.passed else "failed"

    def progress(self, text: str) -> None:
        """Say what was just measured (on stderr, through logging), so that long checks are never silent."""
        log.info(f"  {self.name}: {text}")

    def claim(self, text: str, ok: bool) -> bool:
        """Record a claim of the theory and whether the numbers support it."""
        self.claims.append((text, bool(ok)))
        return bool(ok)

    def table(self, title: str, header: list[str], rows: list[list[Any]]) -> None:
        self.tables.append((title, header, rows))

    def figure(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        # A bare Figure (no pyplot): the user's Matplotlib backend and open figures are left alone.
        fig = Figure(
            figsize=kwargs.pop("figsize", None),
            layout="constrained" if kwargs.pop("constrained_layout", False) else None,
        )
        axes = fig.subplots(*args, **kwargs)
        self.figures.append((name, fig))
        return fig, axes

    def markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if not self.claims:
            lines += ["No claim of the theory is tested here: the tables report measurements only.", ""]
        for text, ok in self.claims:
            lines.append(f"- [{'x' if ok else ' '}] {text}")
        lines.append("")
        for title, header, rows in self.tables:
            lines += [f"**{title}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
            lines.append("")
        lines += [f"{n}" for n in self.notes]
        if self.figures:
            lines += ["", *[f"![{name}]({self.name}-{name}.png)" for name, _ in self.figures]]
        return "\n".join(lines) + "\n"

    def write(self, folder: str | Path) -> list[Path]:
        """Write ``<name>.json``, ``<name>.md`` and ``<name>-<figure>.png`` into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "name": self.name,
            "title": self.title,
            "passed": self.passed,
            "status": self.status,
            "claims": [{"claim": t, "holds": ok} for t, ok in self.claims],
            "tables": [{"title": t, "header": h, "rows": r} for t, h, r in self.tables],
            "data": self.data,
        }
        paths = [folder / f"{self.name}.json", folder / f"{self.name}.md"]
        paths[0].write_text(json.dumps(_clean(payload), indent=1))
        paths[1].write_text(self.markdown())
        for name, fig in self.figures:
            p = folder / f"{self.name}-{name}.png"
            fig.savefig(p, dpi=110)
            paths.append(p)
        return paths


def fit_slope(x: Any, y: Any) -> float:
    """Least-squares slope of ``log y`` against ``log x``."""
    import numpy as np

    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])


def mean_se(values: Any, axis: int = 0) -> tuple[Any, Any]:
    """Mean over ``axis`` (the seeds) and the standard error of that mean, ``std(ddof=1) / sqrt(count)``
    (zero for one value)."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    count = v.shape[axis]
    se = v.std(axis=axis, ddof=1) / np.sqrt(count) if count > 1 else np.zeros_like(v.mean(axis=axis))
    return v.mean(axis=axis), se


def pm(mean: float, se: float) -> str:
    """``mean ± se`` for a table."""
    return f"{mean:.4g} ± {se:.2g}"
