"""What the declared options generate: the shipped default file and the README's tables of keys and observables
(``python -m mfld.config --write`` rewrites them; the tests check they are current)."""

from __future__ import annotations

import textwrap
from importlib import resources
from pathlib import Path

import tomli_w

from mfld.discretizations.density import GRID_DIAGNOSTICS
from mfld.discretizations.particles import PARTICLE_DIAGNOSTICS
from mfld.model.observables import OBSERVABLES

from .schema import schema

DEFAULT_HEADER = """\
# The built-in default: the paper's Section 6 experiment scaled down (x1 x2, Gaussian inputs, tanh with bias).
# Sized so that feature learning shows in one short run: the kernel alignment rises and the test loss falls
# with the training loss (n = 1000 samples against N = 300 particles; docs/experiments.md, "The default run").
# Generated from the options the components declare (python -m mfld.config --write); every key is in
# the README's configuration reference; `--set section.key=value` overrides one.
"""


def generated_default_text() -> str:
    """``data/configs/default.toml`` as the declared options make it: each key under a comment of its meaning."""
    lines = [DEFAULT_HEADER]
    section = None
    for key, spec in schema().items():
        head, _, leaf = key.rpartition(".")
        if head != section:
            section = head
            if head:
                lines.append(f"\n[{head}]")
        for part in textwrap.wrap(spec.doc, 114):
            lines.append(f"# {part}")
        lines.append(f"{leaf} = {tomli_w.dumps({'v': spec.default}).split('=', 1)[1].strip()}")
    return "\n".join(lines) + "\n"


def _cell(v: object) -> str:
    return "`" + (tomli_w.dumps({"v": v}).split("=", 1)[1].strip()) + "`"


def _escape(text: str) -> str:
    """A Markdown table cell: a literal ``|`` must not end the cell."""
    return text.replace("|", "\\|")


def reference_table() -> str:
    """The README's configuration reference, generated from the declared options and the registries."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, spec in schema().items():
        meaning = spec.doc
        # Choices are listed unless the description already names each of them.
        if spec.choices and any(f"`{n}`" not in spec.doc for n in spec.choices):
            meaning += ": " + ", ".join(f"`{n}`" + (f" ({d})" if d else "") for n, d in spec.choices.items())
        lines.append(f"| `{key}` | {_cell(spec.default)} | {_escape(meaning)} |")
    return "\n".join(lines) + "\n"


def observables_table() -> str:
    """The README's list of observables, generated from the registries of observables and of the discretisations'
    diagnostics."""
    lines = ["| observable | recorded for | meaning |", "|---|---|---|"]
    lines += [f"| `{n}` | every run | {_escape(OBSERVABLES.doc(n))} |" for n in OBSERVABLES]
    lines += [f"| `{n}` | grid and spectral runs | {_escape(GRID_DIAGNOSTICS.doc(n))} |" for n in GRID_DIAGNOSTICS]
    lines += [f"| `{n}` | particle runs | {_escape(doc)} |" for n, doc in PARTICLE_DIAGNOSTICS.items()]
    return "\n".join(lines) + "\n"


def _replace_table(text: str, header: str, table: str) -> str:
    start = text.index(header)
    end = text.index("\n\n", start) + 1
    return text[:start] + table + text[end:]


def write_generated(readme: Path) -> list[Path]:
    """Rewrite what the declared options generate: ``data/configs/default.toml`` and the README's configuration
    and observables tables (in a source checkout); returns the files changed."""
    changed = []
    default = Path(str(resources.files("mfld.data").joinpath("configs/default.toml")))
    readme_text = readme.read_text()
    new_readme = _replace_table(
        _replace_table(readme_text, "| key | default | meaning |", reference_table()),
        "| observable | recorded for | meaning |",
        observables_table(),
    )
    for path, old, new in ((default, default.read_text(), generated_default_text()), (readme, readme_text, new_readme)):
        if old != new:
            path.write_text(new)
            changed.append(path)
    return changed
