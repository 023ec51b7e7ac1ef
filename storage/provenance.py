"""Where a file came from: the mfld version, its git revision, the libraries, the host, the command line."""

from __future__ import annotations

import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

LIBRARIES = ("numpy", "scipy", "h5py", "matplotlib", "pot", "threadpoolctl", "mpi4py", "cupy")


def mfld_version() -> str:
    """The installed mfld's version ("unknown" when running from an uninstalled source tree)."""
    try:
        return version("mfld")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def git_revision() -> str:
    """The commit of the checkout mfld runs from, with ``+dirty`` for local changes; "" outside a checkout."""
    here = Path(__file__).resolve().parent
    try:
        # Only a source file that the repository tracks counts: an installed copy inside a clone's .venv does not.
        subprocess.run(
            ["git", "-C", str(here), "ls-files", "--error-unmatch", Path(__file__).name],
            capture_output=True,
            timeout=5,
            check=True,
        )
        rev = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return rev + ("+dirty" if dirty else "")


def provenance() -> dict[str, str]:
    """Everything needed to say how a file was made, as strings."""
    out = {
        "mfld": mfld_version(),
        "git_revision": git_revision(),
        "python": platform.python_version(),
        "host": platform.node(),
        "platform": platform.platform(),
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
    }
    for lib in LIBRARIES:
        try:
            out[lib] = version(lib)
        except PackageNotFoundError:
            continue
    return out
