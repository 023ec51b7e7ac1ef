"""Grid and spectral runs through the configuration, checkpoints and the CLI."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mfld.solver import build
from mfld.solver.checkpoint import CheckpointReader, load
from mfld.solver.cli import main
from mfld.solver.config import load_config

GRID_1D = [
    "discretization=grid", 'data.target="single-index"', "data.d=1", "data.n=30", "data.n_test=40",
    'model.feature="tanh"', "model.lam=0.05", "model.lam_a=1.0", "model.lam_w=1.0", "grid.cells=96",
    "time.eta=0.5", "time.steps=30", "output.checkpoint_every=10", "output.metrics_every=5",
    "output.plot=false", 'output.progress="off"',
]


def config(*extra: str) -> dict:
    return load_config(None, GRID_1D + list(extra))


@pytest.mark.parametrize("scheme", ["implicit-euler", "bdf2"])
def test_grid_resume_is_bit_identical(tmp_path, scheme):
    extra = f'grid.scheme="{scheme}"'
    whole = build.start(config(extra), tmp_path / "whole.h5")
    half = build.start(config(extra, "time.steps=15"), tmp_path / "half.h5")  # ends between frames
    build.resume(half, steps=15)
    a, b = load(whole), load(half)
    assert a.step == b.step == 30
    np.testing.assert_array_equal(a.density, b.density)
    oa, ob = CheckpointReader(whole).observables(), CheckpointReader(half).observables()
    np.testing.assert_array_equal(oa["gap"]["value"], ob["gap"]["value"])


def test_grid_file_layout_and_analysis(tmp_path):
    path = build.start(config(), tmp_path / "g.h5")
    with h5py.File(path, "r") as f:
        value = f["fields/mu/value"]
        assert value.shape == (4, 96)
        assert value.dims[1][0].name == "/fields/coordinates/w_0"
        np.testing.assert_allclose(value.dims[1][0][()], np.linspace(-6, 6, 97)[:-1] + 6 / 96)
        for name in ("certificate", "gap", "mass", "min_density", "objective", "kernel_alignment"):
            assert f"observables/{name}" in f
        mass = f["observables/mass/value"][()]
        assert np.max(np.abs(mass - 1.0)) < 1e-12
        cert, gap = f["observables/certificate/value"][()], f["observables/gap/value"][()]
        assert np.all(gap <= cert + 1e-13) and np.all(np.diff(gap) < 0)
    snap = load(path, step=20)
    assert snap.density.shape == (96,) and snap.grid.cells == (96,)
    np.testing.assert_allclose(snap.weights.sum(), 1.0, rtol=1e-12)
    F = build.build_functional(snap.config, build.build_problem(snap.config, snap.data))
    U = CheckpointReader(path).observables()["U"]
    k = list(U["step"]).index(20)
    assert abs(F.fit(snap.points, snap.weights).U - U["value"][k]) < 1e-12 * abs(U["value"][k])
    da = CheckpointReader(path).to_xarray()
    assert da.dims == ("time", "w_0") and da.shape == (4, 96)
    np.testing.assert_array_equal(da.sel(time=snap.time).values, snap.density)


def test_two_dimensional_spectral_run(tmp_path):
    cfg = config("discretization=spectral", 'model.feature="tanh_bias"', "grid.cells=32", "time.eta=0.05",
                 "time.steps=20")
    path = build.start(cfg, tmp_path / "s.h5")
    snap = load(path)
    assert snap.kind == "spectral" and snap.density.shape == (32, 32)
    mass = CheckpointReader(path).observables()["mass"]["value"]
    assert np.max(np.abs(mass - 1.0)) < 1e-12


def test_stationary_command_writes_the_optimum(tmp_path, capsys):
    out = tmp_path / "star.h5"
    args = ["stationary", "--out", str(out)] + [a for item in GRID_1D for a in ("--set", item)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "lam KL(mu || p_mu)" in text
    snap = load(out)
    assert snap.kind == "stationary" and snap.density.shape == (96,)
    cert = CheckpointReader(out).observables()["certificate"]["value"]
    assert cert[-1] < 1e-12 and cert[0] > 1e-6
    # mu* is the long-time limit of the dynamics on the same grid.
    run = build.start(config("time.steps=200", "output.checkpoint_every=200"), tmp_path / "long.h5")
    assert np.abs(load(run).density - snap.density).sum() * snap.grid.cell_volume < 1e-6
    assert main(["info", str(out)]) == 0
    assert "grid:            96 cells" in capsys.readouterr().out


def test_grid_refuses_a_box_too_small_for_the_prior(capsys):
    assert main(["run", *[a for item in GRID_1D for a in ("--set", item)], "--set", "grid.half_width=2.0"]) == 2
    assert "cannot hold the prior" in capsys.readouterr().err
