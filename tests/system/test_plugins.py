"""A plug-in package, installed by pip into a folder of its own, runs, resumes, shows and plots its kind of run from
the command line: a density discretisation with a key of its own and a grid time scheme, found by their entry
points, under names mfld does not ship."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mfld-demo-plugin"
version = "1.0"

[project.entry-points."mfld.discretizations"]
demo-grid = "mfld_demo_plugin:DEMO_GRID"

[project.entry-points."mfld.grid_schemes"]
demo-euler = "mfld_demo_plugin:DemoEuler"

[tool.setuptools]
py-modules = ["mfld_demo_plugin"]
"""

MODULE = '''\
"""A density discretisation from outside mfld: the finite volumes under another name, with a key of its own."""

from dataclasses import dataclass
from typing import ClassVar

from mfld.discretizations.grid import GRID_SCHEMES, FiniteVolume, FiniteVolumeOptions
from mfld.discretizations.kinds import Discretization
from mfld.discretizations.state import DensityState
from mfld.model.options import positive_int


@dataclass(frozen=True, kw_only=True)
class DemoOptions(FiniteVolumeOptions):
    min_cells: int = positive_int(8, "demo-grid: the fewest cells per axis it accepts", key="demo.min_cells",
                                  since="1.0")


class DemoGrid(FiniteVolume):
    """Finite volumes, as a plug-in: refuses grids coarser than demo.min_cells."""

    kind = "demo-grid"

    @classmethod
    def check(cls, options, functional):
        cells = options.cells if isinstance(options.cells, list) else [options.cells]
        if min(cells) < options.min_cells:
            raise ValueError(f"demo-grid needs grid.cells >= demo.min_cells = {options.min_cells}, got {cells}")
        return super().check(options, functional)


class DemoEuler(GRID_SCHEMES["implicit-euler"]):
    """Implicit Euler, as a plug-in."""


DEMO_GRID = Discretization(DemoOptions, DemoGrid.build, DemoGrid.check, GRID_SCHEMES, DensityState,
                           DemoGrid.memory)
'''

CONFIG = """\
discretization = "demo-grid"
[data]
target = "single-index"
d = 1
n = 40
n_test = 20
[model]
feature = "tanh"
lam = 0.05
lam_a = 1.0
lam_w = 1.0
[grid]
cells = 32
scheme = "demo-euler"
gap = false
[time]
eta = 0.05
steps = 4
[output]
checkpoint_every = 2
metrics_every = 2
plot = false
progress = "off"
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The plug-in built and installed by pip (no index, no build isolation: CI's network stays untouched)."""
    root = tmp_path_factory.mktemp("plugin")
    source = root / "source"
    source.mkdir()
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "mfld_demo_plugin.py").write_text(MODULE)
    site = root / "site"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 and "No module named pip" in proc.stderr:
        pytest.skip("pip is not installed in this environment")
    assert proc.returncode == 0, proc.stderr
    assert any(p.name.endswith(".dist-info") for p in site.iterdir())
    return site


def _mfld(site: Path, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "mfld", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=300
    )


def test_an_installed_plugin_kind_runs_resumes_shows_and_plots_from_the_command_line(installed, tmp_path):
    (tmp_path / "demo.toml").write_text(CONFIG)
    run = _mfld(installed, tmp_path, "run", "demo.toml", "--out", "demo.h5")
    assert run.returncode == 0, run.stderr
    with h5py.File(tmp_path / "demo.h5") as f:
        assert f["parameters"].attrs["mfld_kind"] == "demo-grid"
        assert "min_cells = 8" in f["parameters"].attrs["config"]  # its own key, stored with the run
    resumed = _mfld(installed, tmp_path, "resume", "demo.h5", "--steps", "2")
    assert resumed.returncode == 0, resumed.stderr
    info = _mfld(installed, tmp_path, "info", "demo.h5")
    assert info.returncode == 0 and "demo-grid" in info.stdout, info.stderr
    plot = _mfld(installed, tmp_path, "plot", "demo.h5", "--out", "demo.png")
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "demo.png").stat().st_size > 0
    refused = _mfld(installed, tmp_path, "run", "demo.toml", "--out", "coarse.h5", "--set", "demo.min_cells=64")
    assert refused.returncode != 0 and "demo-grid needs grid.cells >= demo.min_cells = 64" in refused.stderr


def test_without_the_plugin_its_file_is_refused_by_name(installed, tmp_path):
    (tmp_path / "demo.toml").write_text(CONFIG)
    assert _mfld(installed, tmp_path, "run", "demo.toml", "--out", "demo.h5").returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    info = subprocess.run(
        [sys.executable, "-m", "mfld", "info", "demo.h5"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert info.returncode != 0 and "unknown kind of run 'demo-grid'" in info.stderr
    assert "Traceback" not in info.stderr
