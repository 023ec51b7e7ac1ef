"""The documentation site builds with ``mkdocs build --strict`` (every warning an error: a broken link, a page
left out of the navigation) from the repository's own documents, the example notebooks executed into its gallery."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[2]


def _site_module():
    spec = importlib.util.spec_from_file_location("mfld_docs_site", ROOT / "docs" / "site.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_site_builds_strictly_with_every_page_and_the_executed_gallery(tmp_path):
    site = _site_module()
    index = site.build(tmp_path / "site", execute=True)
    pages = {p.parent.relative_to(tmp_path / "site").as_posix() for p in (tmp_path / "site").rglob("index.html")}
    assert index.exists() and {".", "theory", "api"} <= pages
    notebooks = sorted(p.stem for p in (ROOT / "docs" / "examples").glob("*.ipynb"))
    assert {f"examples/{n}" for n in notebooks} <= pages
    for n in notebooks:  # each gallery page shows the figures its notebook drew when the site was built
        html = (tmp_path / "site" / "examples" / n / "index.html").read_text()
        assert f'src="../{n}-1.png"' in html and (tmp_path / "site" / "examples" / f"{n}-1.png").stat().st_size > 1000
    reports = {p.stem for p in (ROOT / "docs" / "validation").glob("*.md")}
    assert {f"validation/{r}" for r in reports} <= pages
    assert "mean-field" in (tmp_path / "site" / "index.html").read_text().lower()


def test_a_broken_link_fails_the_build(tmp_path, monkeypatch):
    site = _site_module()
    original = site.readme_as_index
    monkeypatch.setattr(site, "readme_as_index", lambda text: original(text) + "\n[gone](no-such-page.md)\n")
    with pytest.raises(RuntimeError, match="no-such-page.md"):
        site.build(tmp_path / "site", execute=False)
