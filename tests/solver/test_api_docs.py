"""docs/api.md is generated from the docstrings and its examples run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _make_api():
    spec = importlib.util.spec_from_file_location("make_api", DOCS / "make_api.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_api_page_is_up_to_date():
    assert (DOCS / "api.md").read_text() == _make_api().render(), "regenerate it: python docs/make_api.py"


def test_the_api_examples_run():
    script = _make_api().examples()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
