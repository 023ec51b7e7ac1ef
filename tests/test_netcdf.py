"""Particle checkpoints open in the netCDF library and xarray's netcdf4 engine (they aborted the reader before),
and show no padding rows once their run has ended, finished or stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from mfld.discretizations.loop import Interrupted
from mfld.solver import build
from mfld.solver.config import load_config

pytest.importorskip("netCDF4")
pytest.importorskip("xarray")

SMALL = ["data.d=4", "data.n=40", "data.n_test=50", "particles.N=64", "time.steps=20", "time.eta=0.1",
         "output.checkpoint_every=10", "output.metrics_every=5", "output.plot=false", 'output.progress="off"']


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


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_particle_file_opens_in_netcdf_readers(tmp_path, monkeypatch, interrupted):
    path = build.start(load_config(None, SMALL), tmp_path / "p.h5")
    if interrupted:  # planned for 40 more steps, stopped at step 25: its rows past the count are dropped at the end
        original = build._observers
        monkeypatch.setattr(build, "_observers", lambda *a, **k: [*original(*a, **k), _InterruptAt(25)])
        with pytest.raises(Interrupted):
            build.resume(path, steps=40)
    with h5py.File(path, "r") as f:  # what any HDF5 reader sees: only written rows, steps increasing
        frames, records = f["parameters/committed"][:2]
        for name in ("particles/mu/position", "particles/mu/rng_state", "observables/objective", "observables/U"):
            steps = f[f"{name}/step"][()]
            assert f[f"{name}/value"].shape[0] == steps.size == (records if "observables" in name else frames)
            assert steps.min() >= 0 and (np.diff(steps) > 0).all(), (name, steps)
        assert f["particles/mu/position/step"][-1] == (25 if interrupted else 20)
    # In a child process: the failure this guards against is an abort of the reading interpreter.
    code = textwrap.dedent(f"""
        import netCDF4, xarray as xr
        with netCDF4.Dataset({str(path)!r}) as nc:
            assert sorted(nc.groups) == ["h5md", "observables", "parameters", "particles"]
        for group in ("particles/mu/position", "particles/mu/rng_state", "observables/objective"):
            with xr.open_dataset({str(path)!r}, engine="netcdf4", group=group) as ds:
                assert "value" in ds, group
        print("opened")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "opened", (proc.returncode, proc.stderr[-800:])
