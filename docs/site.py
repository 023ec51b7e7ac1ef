"""Build the documentation site (MkDocs, Material theme) from the repository's own documents.

    python docs/site.py                 # -> site/index.html (executes the example notebooks, ~20 s)
    python docs/site.py --out /tmp/s --no-execute

What goes in, unchanged: the README (the home page, its ``docs/...`` links made relative), docs/theory.md,
docs/api.md (the API reference, generated from the docstrings by docs/make_api.py and held up to date by a
test), docs/experiments.md with every experiment report and figure, and the validation reports. The example
notebooks under docs/examples/ are executed (nbclient, a fresh kernel each, as tests/solver/test_notebooks.py
runs them) and become pages of the gallery with their outputs and figures. ``mkdocs build --strict`` turns
every warning (a broken link, a page missing from the navigation) into an error; tests/system/test_docs_site.py
builds the site so in CI.

Needs ``mkdocs`` and ``mkdocs-material`` (the ``test`` extra installs them).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def readme_as_index(text: str) -> str:
    """The README with its links into ``docs/`` made relative to the site's root (where docs/ is copied)."""
    return re.sub(r"\]\(docs/", "](", text)


def validation_pages(folder: Path) -> list[str]:
    """The report pages of a reports folder (``summary.md`` first), relative to the site's root."""
    pages = sorted(p.name for p in folder.glob("*.md") if p.name != "summary.md")
    return [f"{folder.relative_to(DOCS).as_posix()}/{name}" for name in ["summary.md", *pages]]


def notebook_page(path: Path, out: Path, execute: bool) -> str:
    """``path`` executed (or not) as a Markdown page beside ``out``, its figures as PNG files; returns its title."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    if execute:
        import nbclient

        with tempfile.TemporaryDirectory() as work:
            nbclient.NotebookClient(
                nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": work}}
            ).execute()
    lines: list[str] = []
    figures = 0
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            lines += [cell.source, ""]
            continue
        if cell.cell_type != "code":
            continue
        lines += ["```python", cell.source, "```", ""]
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if output.output_type == "error":
                raise RuntimeError(f"{path.name}: {output.ename}: {output.evalue}")
            if "image/png" in data:
                figures += 1
                name = f"{path.stem}-{figures}.png"
                (out.parent / name).write_bytes(base64.b64decode(data["image/png"]))
                lines += [f"![{path.stem}, figure {figures}]({name})", ""]
            elif output.output_type == "stream" or "text/plain" in data:
                text = output.get("text") or data.get("text/plain", "")
                lines += ["```text", text.rstrip("\n"), "```", ""]
    title = next((c.source.splitlines()[0].lstrip("# ") for c in nb.cells if c.cell_type == "markdown"), path.stem)
    state = "executed when this site was built" if execute else "not executed"
    header = f"*The notebook `docs/examples/{path.name}`, {state}.*\n\n"
    out.write_text(header + "\n".join(lines))
    return title


def stage(folder: Path, execute: bool) -> Path:
    """The site's sources under ``folder``: the pages, the reports, the gallery and ``mkdocs.yml``."""
    docs = folder / "docs"
    shutil.copytree(DOCS, docs, ignore=shutil.ignore_patterns("site.py", "make_api.py", "__pycache__", "*.ipynb"))
    (docs / "index.md").write_text(readme_as_index((ROOT / "README.md").read_text()))
    for page in docs.rglob("*.md"):  # a notebook's link goes to its page in the gallery
        page.write_text(re.sub(r"\]\((examples/[^)]+)\.ipynb\)", r"](\1.md)", page.read_text()))
    gallery: list[dict[str, str]] = []
    for path in sorted((DOCS / "examples").glob("*.ipynb")):
        page = docs / "examples" / f"{path.stem}.md"
        gallery.append({notebook_page(path, page, execute): f"examples/{page.name}"})
    validation = validation_pages(DOCS / "validation")
    full = validation_pages(DOCS / "validation" / "full")
    experiments = validation_pages(DOCS / "experiments")
    experiments_full = validation_pages(DOCS / "experiments" / "full")
    nav = [
        {"Home": "index.md"},
        {"Theory": "theory.md"},
        {"API reference": "api.md"},
        {"Examples": gallery},
        {"Experiments": ["experiments.md", *experiments, *experiments_full]},
        {"Validation": [*validation, *full]},
    ]
    config = {
        "site_name": "mfld",
        "site_description": "Mean-field Langevin dynamics of two-layer networks: grids, particles, and the theory",
        "docs_dir": "docs",
        "theme": {"name": "material", "features": ["navigation.sections", "content.code.copy"]},
        "markdown_extensions": ["tables", "admonition", "toc", "fenced_code"],
        "validation": {"links": {"not_found": "warn", "anchors": "warn", "unrecognized_links": "warn"}},
        "nav": nav,
    }
    target = folder / "mkdocs.yml"
    target.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return target


def build(out: Path, execute: bool = True) -> Path:
    """Stage the sources and run ``mkdocs build --strict`` into ``out``; returns ``out / "index.html"``."""
    with tempfile.TemporaryDirectory() as folder:
        config = stage(Path(folder), execute)
        proc = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(out.resolve())],
            capture_output=True,
            text=True,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        )
        warnings = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
        if proc.returncode != 0 or warnings:
            raise RuntimeError("mkdocs build --strict failed:\n" + ("\n".join(warnings) or proc.stderr[-3000:]))
    return out / "index.html"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "site"), help="the site's folder (default: site/)")
    parser.add_argument("--no-execute", action="store_true", help="render the notebooks without running them")
    args = parser.parse_args()
    index = build(Path(args.out), execute=not args.no_execute)
    pages = sum(1 for _ in Path(args.out).rglob("index.html"))
    print(f"site: {index} ({pages} pages)")


if __name__ == "__main__":
    main()
