"""Every kind of file mfld writes opens in the HDF5 and netCDF tools users already have, and shows no padding rows
once its run has ended, finished or stopped.

The tools: ``ncdump -h`` and ``h5dump -H`` (Debian's netcdf-bin and hdf5-tools), the netCDF4 library, xarray with
its netcdf4 and h5netcdf engines, and pyh5md. Each is exercised in a child process: the failure this guards
against (a fill value netCDF-C cannot read) aborted the reading interpreter. A test is skipped only when its tool
is not installed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import SMALL_RUN
from mfld.config import load_config
from mfld.discretizations.loop import Interrupted
from mfld.solver import build

SMALL = [*SMALL_RUN, "time.steps=20"]
GRID = [
    "grid.cells=32",
    "data.n=30",
    "data.n_test=40",
    "time.steps=12",
    "output.checkpoint_every=5",
    "output.metrics_every=4",
    "output.plot=false",
    'output.progress="off"',
]
KINDS = ("particles", "interrupted", "grid", "spectral", "stationary")


class _InterruptAt:
    def __init__(self, step: int) -> None:
        self.step = step

    def start(self, system) -> None:
        pass

    def observe(self, system) -> None:
        if system.step_count == self.step:
            os.kill(os.getpid(), signal.SIGINT)

    def finish(self, system, interrupted: bool) -> None:
        pass


def _write(kind: str, folder: Path) -> Path:
    path = folder / f"{kind}.h5"
    if kind == "particles":
        return build.start(load_config(None, SMALL), path)
    if kind == "interrupted":  # planned for 40 more steps, stopped at step 25: its rows past the count are dropped
        build.start(load_config(None, SMALL), path)
        original = build._observers
        build._observers = lambda *a, **k: [*original(*a, **k), _InterruptAt(25)]
        try:
            with pytest.raises(Interrupted):
                build.resume(path, steps=40)
        finally:
            build._observers = original
        return path
    if kind == "stationary":
        return build.write_stationary(load_config("grid-1d", GRID), path)
    return build.start(load_config("grid-1d" if kind == "grid" else "spectral-1d", GRID), path)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("files")
    return {kind: _write(kind, folder) for kind in KINDS}


def _elements(path: Path) -> list[str]:
    """The groups holding H5MD time series (``step``, ``time``, ``value``)."""
    found: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Group) and "value" in obj else None)
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_no_padding_rows_once_a_run_has_ended(files, kind):
    """What any HDF5 reader sees: only written rows, steps increasing (H5MD's rule), no NaN time."""
    path = files[kind]
    assert {"particles/mu/position", "fields/mu"} & set(_elements(path)), "the measure is not a time series"
    with h5py.File(path, "r") as f:
        frames, records = f["parameters/committed"][:2]
        for name in _elements(path):
            steps, times = f[f"{name}/step"][()], f[f"{name}/time"][()]
            assert f[f"{name}/value"].shape[0] == steps.size == times.size
            assert steps.size == (records if name.startswith("observables/") else frames), name
            assert steps.min() >= 0 and (np.diff(steps) > 0).all() and np.isfinite(times).all(), (name, steps)
    if kind == "interrupted":
        with h5py.File(path, "r") as f:
            assert f["particles/mu/position/step"][-1] == 25


def _child(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("tool", ["ncdump", "h5dump"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_command_line_dumps_read_every_file(files, kind, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: {'netcdf-bin' if tool == 'ncdump' else 'hdf5-tools'})")
    proc = subprocess.run(
        [tool, "-h" if tool == "ncdump" else "-H", str(files[kind])], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-800:])
    assert "observables" in proc.stdout


@pytest.mark.parametrize("engine", ["netcdf4", "h5netcdf"])
@pytest.mark.parametrize("kind", KINDS)
def test_xarray_opens_every_group_of_every_file(files, kind, engine):
    pytest.importorskip("xarray")
    pytest.importorskip("netCDF4" if engine == "netcdf4" else "h5netcdf")
    groups = _elements(files[kind])
    proc = _child(f"""
        import netCDF4, xarray as xr
        for group in {groups!r}:
            with xr.open_dataset({str(files[kind])!r}, engine={engine!r}, group=group) as ds:
                assert ds["value"].shape[0] == ds["step"].shape[0], group
                ds["value"].values
        if {engine!r} == "netcdf4":
            with netCDF4.Dataset({str(files[kind])!r}) as nc:
                assert "observables" in nc.groups
        print("opened", len({groups!r}))
    """)
    assert proc.returncode == 0 and proc.stdout.split() == ["opened", str(len(groups))], (
        proc.returncode,
        proc.stderr[-800:],
    )


@pytest.mark.parametrize("kind", KINDS)
def test_pyh5md_reads_every_time_series(files, kind):
    if importlib.util.find_spec("pyh5md") is None:
        pytest.skip("pyh5md is not installed")
    groups = _elements(files[kind])
    proc = _child(f"""
        import pyh5md
        with pyh5md.File({str(files[kind])!r}, "r") as f:
            for name in {groups!r}:
                parent, _, leaf = name.rpartition("/")
                el = pyh5md.element(f[parent], leaf)
                assert el.value.shape[0] == el.step.shape[0] == el.time.shape[0], name
        print("read", len({groups!r}))
    """)
    assert proc.returncode == 0 and proc.stdout.split() == ["read", str(len(groups))], (
        proc.returncode,
        proc.stderr[-800:],
    )


def test_particle_positions_open_with_named_axes(files):
    """Issue 36: xarray read particle positions with phony_dim_* names and a warning."""
    pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    proc = _child(f"""
        import warnings, xarray as xr
        warnings.simplefilter("error")
        with xr.open_dataset({str(files["particles"])!r}, engine="h5netcdf", group="particles/mu/position") as ds:
            print(*ds["value"].dims, *ds["component"].values.tolist(), ds["particle"].size)
    """)
    assert proc.returncode == 0, proc.stderr[-800:]
    dims_and_names = proc.stdout.split()
    with h5py.File(files["particles"], "r") as f:
        assert f.attrs["Conventions"] == "CF-1.8"
    assert dims_and_names[:3] == ["time", "particle", "component"]
    assert dims_and_names[3:-1] and all(n.startswith(("u_", "b")) for n in dims_and_names[3:-1])
