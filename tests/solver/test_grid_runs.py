"""Grid and spectral runs through the configuration, checkpoints and the CLI."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mfld.config import assembly, load_config
from mfld.solver import build
from mfld.solver.cli import main
from mfld.storage import CheckpointReader, load

GRID_1D = [
    "discretization=grid",
    'data.target="single-index"',
    "data.d=1",
    "data.n=30",
    "data.n_test=40",
    'model.feature="tanh"',
    "model.lam=0.05",
    "model.lam_a=1.0",
    "model.lam_w=1.0",
    "grid.cells=96",
    "time.eta=0.5",
    "time.steps=30",
    "output.checkpoint_every=10",
    "output.metrics_every=5",
    "output.plot=false",
    'output.progress="off"',
]


def config(*extra: str) -> dict:
    return load_config(None, GRID_1D + list(extra))


@pytest.mark.parametrize(
    "extra",
    [
        'grid.scheme="implicit-euler"',
        'grid.scheme="bdf2"',
        ["discretization=spectral", 'spectral.scheme="sbdf2"', "time.eta=0.05"],
    ],
)
def test_grid_resume_is_bit_identical(tmp_path, extra):
    extra = extra if isinstance(extra, list) else [extra]
    whole = build.start(config(*extra), tmp_path / "whole.h5")
    half = build.start(config(*extra, "time.steps=15"), tmp_path / "half.h5")  # ends between frames
    build.resume(half, steps=15)
    a, b = load(whole), load(half)
    assert a.step == b.step == 30
    np.testing.assert_array_equal(a.density, b.density)
    oa, ob = CheckpointReader(whole).observables(), CheckpointReader(half).observables()
    np.testing.assert_array_equal(oa["gap"]["value"], ob["gap"]["value"])


def test_a_grid_resume_reads_obj_mu_star_from_its_file_instead_of_solving_again(tmp_path, monkeypatch):
    whole = build.start(config(), tmp_path / "whole.h5")
    half = build.start(config("time.steps=15"), tmp_path / "half.h5")
    stored = CheckpointReader(half).reference_objective
    assert stored is not None and stored == CheckpointReader(whole).reference_objective

    def refuse(*args, **kwargs):
        raise AssertionError("a resume solved for mu* again")

    monkeypatch.setattr(assembly, "stationary", refuse)
    build.resume(half, steps=15)
    oa, ob = CheckpointReader(whole).observables(), CheckpointReader(half).observables()
    np.testing.assert_array_equal(oa["gap"]["value"], ob["gap"]["value"])
    assert CheckpointReader(half).reference_objective == stored


def test_grid_file_layout_and_analysis(tmp_path):
    path = build.start(config(), tmp_path / "g.h5")
    with h5py.File(path, "r") as f:
        value = f["fields/mu/value"]
        assert value.shape == (4, 96)
        assert value.dims[1][0].name == "/fields/mu/u_1"  # named as the coordinate is (issue 36)
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
    assert da.dims == ("time", "u_1") and da.shape == (4, 96)  # tanh without bias, d = 1: the component u_1
    np.testing.assert_array_equal(da["u_1"].values, snap.grid.axes()[0])
    np.testing.assert_array_equal(da.sel(time=snap.time).values, snap.density)


def test_two_dimensional_spectral_run(tmp_path):
    cfg = config(
        "discretization=spectral", 'model.feature="tanh_bias"', "grid.cells=32", "time.eta=0.05", "time.steps=20"
    )
    path = build.start(cfg, tmp_path / "s.h5")
    snap = load(path)
    assert snap.kind == "spectral" and snap.density.shape == (32, 32)
    mass = CheckpointReader(path).observables()["mass"]["value"]
    assert np.max(np.abs(mass - 1.0)) < 1e-12


def test_stationary_command_writes_the_optimum(tmp_path, capsys):
    out = tmp_path / "star.h5"
    args = ["stationary", "--out", str(out)] + [a for item in GRID_1D for a in ("--set", item)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "lam KL(mu || p_mu)" in captured.err and f"mu*: {out}" in captured.out  # progress on stderr, result out
    assert not out.with_suffix(".png").exists()  # output.plot = false
    assert main([*args, "--overwrite", "--set", "output.plot=true"]) == 0
    assert f"plot: {out.with_suffix('.png')}" in capsys.readouterr().out and out.with_suffix(".png").stat().st_size
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
    # The README's first command leaves mfld-run.h5 in the working directory: the box is still what is refused.
    assert main(["run", "--set", "time.steps=2", "--set", "output.plot=false", "--set", "particles.N=20"]) == 0
    assert main(["run", *[a for item in GRID_1D for a in ("--set", item)], "--set", "grid.half_width=2.0"]) == 2
    assert "cannot hold the prior" in capsys.readouterr().err


def test_a_grid_on_a_high_dimensional_problem_names_the_dimension(capsys):
    assert main(["run", "--set", "discretization=grid"]) == 2  # the default problem: tanh with bias, d = 10
    assert "grids need a parameter dimension p <= 3; this problem has p = 11" in capsys.readouterr().err


def test_shipped_configurations_run_by_name(capsys):
    assert main(["configs"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("default", "grid-1d", "grid-2d", "grid-3d", "spectral-1d"))
    assert main(["run", "grid-1d", "--out", "g.h5", "--set", "time.steps=3", "--set", "output.plot=false"]) == 0
    assert load("g.h5").grid.cells == (256,)  # grid-1d's own cells, not the default's 64
    assert main(["run", "no-such-config"]) == 2
    assert "nor is it a shipped configuration" in capsys.readouterr().err


def test_grid_files_open_in_netcdf_tools(tmp_path):
    """xarray's h5netcdf engine and the netCDF library read the density with its coordinates."""
    import shutil
    import subprocess

    import netCDF4
    import xarray as xr

    path = build.start(config(), tmp_path / "g.h5")
    with xr.open_dataset(path, engine="h5netcdf", group="fields/mu") as ds:
        assert ds["value"].dims == ("time", "u_1") and ds["u_1"].size == 96
        np.testing.assert_array_equal(ds["value"].values[-1], load(path).density)
        np.testing.assert_array_equal(ds["time"].values, CheckpointReader(path).times)
        assert ds["u_1"].attrs["units"] == "1"
    with netCDF4.Dataset(path) as nc:
        mu = nc["fields/mu"]
        assert set(mu.dimensions) == {"time", "u_1"} and mu["value"].dimensions == ("time", "u_1")
    if shutil.which("ncdump"):
        out = subprocess.run(["ncdump", "-h", str(path)], capture_output=True, text=True)
        assert out.returncode == 0 and "double u_1(u_1)" in out.stdout, out.stderr


def test_resume_of_a_stationary_file_is_refused(tmp_path, capsys):
    out = tmp_path / "star.h5"
    assert main(["stationary", "--out", str(out)] + [a for item in GRID_1D for a in ("--set", item)]) == 0
    assert main(["resume", str(out), "--steps", "3"]) == 2
    assert "holds mu* from `mfld stationary`, not a run" in capsys.readouterr().err
    assert CheckpointReader(out).steps.tolist() == [0]


def test_the_shipped_three_dimensional_grid_run_converges_to_its_stationary_measure(tmp_path):
    """grid-3d (p = 3) on 20^3 cells: mass to 1e-12, a positive density, gap <= certificate, the gap falling
    at a linear rate (a constant ratio between records), and the stationary solver's mu* certified on the grid."""
    cfg = load_config("grid-3d", ["grid.cells=20", "time.steps=40", "output.checkpoint_every=20"])
    path = build.start(cfg, tmp_path / "g3.h5")
    reader = CheckpointReader(path)
    obs = reader.observables()
    assert np.max(np.abs(obs["mass"]["value"] - 1.0)) < 1e-12 and np.all(obs["min_density"]["value"] >= 0)
    cert, gap = obs["certificate"]["value"], obs["gap"]["value"]
    assert np.all(gap <= cert + 1e-13) and np.all(np.diff(gap) < 0)
    ratios = gap[-4:] / gap[-5:-1]  # the last four contractions, 5 steps each
    assert ratios.max() < 0.9 and ratios.max() / ratios.min() < 1.1, ratios
    assert load(path).density.shape == (20, 20, 20)
    star = build.write_stationary(cfg, tmp_path / "star3.h5")
    assert CheckpointReader(star).observables()["certificate"]["value"][-1] < cfg["stationary"]["tol"]
