"""What the docs state about running times comes from one measured table, so two statements cannot disagree."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# A running time stated in prose: "about 15 s", "under a minute", "takes 4 minutes", "5 min on two cores".
DURATION = re.compile(
    r"\b(about|under|takes?|took|within|in about)\s+(a|one|\d+(\.\d+)?)\s*(s|sec|seconds?|min|minutes?|hours?)\b"
    r"|\b\d+(\.\d+)?\s*(s|sec|seconds?|min|minutes?)\s+on\s+two\s+cores",
    re.IGNORECASE,
)


def _durations_module():
    spec = importlib.util.spec_from_file_location("durations", ROOT / "benchmarks" / "durations.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_shows_the_measured_table():
    durations = _durations_module()
    table = json.loads((ROOT / "docs" / "durations.json").read_text())
    assert set(table["rows"]) <= set(durations.COMMANDS)  # measured row by row, the test suites last
    assert all(row["command"] == durations.COMMANDS[key] for key, row in table["rows"].items())
    assert durations.render(table) in (ROOT / "README.md").read_text()


def test_no_running_time_is_stated_outside_the_table():
    durations = _durations_module()
    files = [
        ROOT / "README.md",
        ROOT / "docs" / "theory.md",
        ROOT / "docs" / "experiments.md",
        *sorted((ROOT / "data").glob("*/*.toml")),
    ]
    found = []
    for path in files:
        text = path.read_text()
        if durations.BEGIN in text:
            head, rest = text.split(durations.BEGIN, 1)
            text = head + rest.split(durations.END, 1)[1]
        found += [f"{path.relative_to(ROOT)}: {m.group(0)!r}" for m in DURATION.finditer(" ".join(text.split()))]
    assert found == []


def test_the_pattern_finds_the_statements_it_must():
    for stated in (
        "about 15 s on two cores",
        "4 minutes on two cores",
        "under a minute",
        "(about 40 s)",
        "About 5 minutes on two cores",
        "takes about a minute",
    ):
        assert DURATION.search(stated), stated
    for not_stated in ("0.32 s direct", "runs longer than two seconds", "10,000 steps"):
        assert not DURATION.search(not_stated), not_stated


def test_the_readme_python_snippets_run_as_written():
    """Every ```python block of the README, in order, in one namespace (in the test's own empty folder), after
    the commands the README runs before them have made their files (shorter)."""
    import re

    import mfld
    from mfld.config import load_config
    from mfld.solver import build

    quiet = {"output.progress": "off", "output.plot": False}
    mfld.run(set={"time.steps": 100, **quiet}, out="mfld-run.h5")
    mfld.run("grid-2d", set={"time.steps": 10, **quiet}, out="grid-2d.h5")
    build.write_stationary(load_config("grid-2d"), "star.h5")
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "the README shows no Python"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)


def test_the_extensions_example_still_applies_to_this_tree(tmp_path):
    """docs/examples/extensions.patch (the README's worked example of "Where to add") applies to the code as it is
    now; when it no longer does, regenerate it from a branch where it is applied and its round trips pass."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    patch = str(ROOT / "docs" / "examples" / "extensions.patch")
    proc = subprocess.run([git, "apply", "--check", patch], cwd=ROOT, capture_output=True, text=True)
    applied = subprocess.run([git, "apply", "--check", "--reverse", patch], cwd=ROOT, capture_output=True)
    assert proc.returncode == 0 or applied.returncode == 0, proc.stderr  # applies, or is applied (after git am)
