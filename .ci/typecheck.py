"""Type-check mfld with mypy as the package is imported: ``mfld.<folder>`` from pyproject's package-dir.

The source folders (``model/``, ``solver/``, ...) sit at the top of the repository and become
``mfld.model``, ``mfld.solver`` only through setuptools' ``package-dir``, which mypy does not
read. This lays out ``mfld/<folder>`` as symbolic links in a temporary folder, runs mypy there
with the settings of ``[tool.mypy]`` in pyproject.toml (strict on the whole package, but for
warn_return_any: array-namespace results are Any), and reports the errors by their paths in the repository.

    python .ci/typecheck.py            # exit status 1 when mypy finds an error
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _in_repository(line: str, dirs: dict[str, str]) -> str:
    """``mfld/model/x.py:3: error ...`` as ``model/x.py:3: error ...``."""
    if not line.startswith("mfld/"):
        return line
    rest = line[len("mfld/") :]
    head, _, tail = rest.partition("/")
    folder = dirs.get(f"mfld.{head}")
    return f"{folder}/{tail}" if folder and tail else f"{dirs['mfld']}/{rest}"


def main() -> int:
    dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    layout = ROOT / ".mypy_cache" / "layout"  # one fixed place, so that mypy's cache stays valid between runs
    shutil.rmtree(layout, ignore_errors=True)
    top = layout / "mfld"
    top.mkdir(parents=True)
    for package, folder in dirs.items():
        if package == "mfld":  # the package's own modules (api/) sit in mfld/ itself
            for f in (ROOT / folder).glob("*.py"):
                os.symlink(f, top / f.name)
        else:
            os.symlink(ROOT / folder, top / package.split(".", 1)[1])
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "-p",
            "mfld",
        ],
        cwd=layout,
        capture_output=True,
        text=True,
    )
    print("".join(_in_repository(line, dirs) for line in (proc.stdout + proc.stderr).splitlines(True)), end="")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
