"""The Python API a notebook uses: ``mfld.run`` in memory or into a file, ``mfld.load``, figures, the version."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure

import mfld
from mfld.config import ConfigError
from mfld.solver.python_api import resolve_config

SMALL = {
    "data.d": 4,
    "data.n": 40,
    "data.n_test": 50,
    "particles.N": 64,
    "time.steps": 20,
    "time.eta": 0.1,
    "output.checkpoint_every": 10,
    "output.metrics_every": 5,
    "output.progress": "off",
}
GRID = {
    "grid.cells": 32,
    "data.n": 30,
    "data.n_test": 40,
    "time.steps": 12,
    "output.checkpoint_every": 5,
    "output.metrics_every": 4,
    "output.progress": "off",
}


def test_the_package_says_its_version_and_runs_as_a_module():
    assert mfld.__version__ == version("mfld")
    proc = subprocess.run([sys.executable, "-m", "mfld", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"mfld {mfld.__version__}"


def test_importing_the_mathematics_does_not_load_the_run_machinery():
    code = "import sys, mfld.model.problem; print('mfld.solver.build' in sys.modules, 'h5py' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


def test_a_run_in_memory_writes_nothing_and_equals_the_same_run_written_to_a_file(tmp_path):
    here = Path.cwd()
    memory = mfld.run(set=SMALL)
    assert list(here.iterdir()) == [] and memory.path is None
    saved = mfld.run(set=SMALL, out=tmp_path / "run.h5")
    loaded = mfld.load(tmp_path / "run.h5")
    assert memory.kind == saved.kind == loaded.kind == "particles"
    assert memory.steps.tolist() == loaded.steps.tolist() == [0, 10, 20]
    assert memory.series["step"].tolist() == [0, 5, 10, 15, 20]
    for name in ("objective", "train_loss", "kernel_alignment", "degrees_of_freedom"):
        np.testing.assert_array_equal(memory.series[name], loaded.series[name], err_msg=name)
    for step in (0, 10, 20):
        np.testing.assert_array_equal(memory.snapshot(step).points, loaded.snapshot(step).points)
    assert memory.state.rng_state == saved.state.rng_state
    assert memory.system is not None and memory.system.step_count == 20 and loaded.system is None
    assert not memory.interrupted and "in memory" in repr(memory)


def test_configurations_come_as_mappings_names_or_files(tmp_path):
    nested = mfld.run({"particles": {"N": 32}, "time": {"steps": 4}}, set={"output.progress": "off"})
    assert nested.config["particles"]["N"] == 32 and nested.steps[-1] == 4
    assert resolve_config({"particles": {"N": 32}}, set={"particles.N": 16})["particles"]["N"] == 16  # set is last
    grid = mfld.run("grid-1d", set=GRID)
    assert grid.kind == "grid" and grid.snapshot().density.shape == (32,)
    file = tmp_path / "mine.toml"
    file.write_text("[time]\nsteps = 3\n[output]\nprogress = 'off'\n")
    assert mfld.run(file, set={"particles.N": 16}).steps[-1] == 3
    with pytest.raises(ConfigError, match="particles.M"):
        mfld.run(set={"particles.M": 3})
    with pytest.raises(TypeError, match="config must be"):
        mfld.run(42)


class _Count:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def start(self, system) -> None:
        self.calls.append("start")

    def observe(self, system) -> None:
        self.calls.append("observe")

    def finish(self, system, interrupted: bool) -> None:
        self.calls.append(f"finish {interrupted}")


def test_extra_observers_see_every_step_in_memory_and_in_a_file(tmp_path):
    for out in (None, tmp_path / "o.h5"):
        count = _Count()
        mfld.run(set=SMALL, out=out, observers=[count])
        assert count.calls == ["start", *["observe"] * 20, "finish False"]


class _InterruptAt(_Count):
    def observe(self, system) -> None:
        if system.step_count == 7:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("to_file", [False, True])
def test_ctrl_c_returns_the_run_up_to_there(tmp_path, to_file):
    run = mfld.run(set=SMALL, out=tmp_path / "i.h5" if to_file else None, observers=[_InterruptAt()])
    assert run.interrupted and run.steps.tolist() == [0, 7] and run.series["step"].tolist() == [0, 5, 7]
    assert (run.path is not None) == to_file


def test_figures_are_matplotlib_figures_for_memory_and_files(tmp_path):
    memory = mfld.run(set=SMALL)
    saved = mfld.run("grid-1d", set=GRID, out=tmp_path / "g.h5")
    for run in (memory, saved):
        for fig in (run.figure(), run.measure_figure()):
            assert isinstance(fig, Figure) and fig.axes
    titles = [ax.get_title() for ax in memory.figure().axes if ax.get_visible()]
    assert "kernel alignment A" in titles and "loss (train, test)" in titles
    # The measure of a particle run in x1 x2 is drawn in the target's plane (u . r_1, u . r_2).
    assert memory.measure_figure().axes[0].get_xlabel() == "u . r_1"


def test_figures_say_what_they_show(tmp_path):
    from mfld.config import load_config
    from mfld.solver import build

    star = build.write_stationary(load_config("grid-1d", values=GRID), tmp_path / "star.h5")
    fig = mfld.load(star).figure()
    labels = {ax.get_xlabel() for ax in fig.axes}
    assert "fixed-point iteration" in labels and "time t" not in labels  # iterations, not time
    assert "mu*" in mfld.load(star).measure_figure().axes[0].get_title()
    grid = mfld.run("grid-1d", set=GRID)
    titles = [ax.get_title() for ax in grid.figure().axes if ax.get_visible()]
    assert "mass of the density" not in titles and "mass = 1" in grid.figure()._suptitle.get_text()
    image = mfld.run("grid-2d", set={**GRID, "grid.cells": 24}).measure_figure()
    frames = [ax for ax in image.axes if ax.get_title().startswith("t = ")]
    assert len(image.axes) == len(frames) + 1 and image.axes[-1].get_ylabel() == "density"  # one shared colour bar
    assert not any("estimate" in t for t in titles)  # a density's entropy is computed, not estimated
    particles = mfld.run(set={"data.n": 30, "particles.N": 40, "time.steps": 20, "output.metrics_every": 5})
    figure = particles.figure()
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible()}
    label = "objective  G + lam Ent (Ent: k-NN estimate from the particles; band +- 2 s.e.)"
    assert label in panels  # issue 36: unlabelled, then without its standard error
    band = panels[label].collections[0].get_paths()[0].vertices[:, 1]  # the +- 2 s.e. band, lower and upper edges
    objective, se = particles.series["objective"], particles.series["entropy_se"]
    lam = particles.config["model"]["lam"]
    assert np.isclose(band.max(), np.max(objective + 2 * lam * se)) and np.all(se > 0)


def test_the_package_lists_its_api_and_says_it_is_typed():
    assert dir(mfld) == sorted(["Run", "__version__", "load", "load_config", "run"])
    assert (Path(mfld.__file__).parent / "py.typed").exists()


@pytest.mark.parametrize(
    "config, names",
    [
        ({"data.d": 3, "particles.N": 30}, ["u_1", "u_2", "u_3", "b"]),
        ({"data.d": 2, "particles.N": 30, "model.objective": "classical"}, ["a_1", "u_1", "u_2", "b"]),
        ({"data.d": 3, "particles.N": 30, "model.feature": "tanh"}, ["u_1", "u_2", "u_3"]),
    ],
)
def test_a_particle_run_in_the_ecosystem_names_its_components(config, names):
    pytest.importorskip("xarray")
    run = mfld.run(set={"data.n": 30, "time.steps": 10, "output.checkpoint_every": 5, **config})
    assert run.components() == names
    da = run.to_xarray()
    assert da.dims == ("time", "particle", "component") and list(da.component.values) == names
    assert da.shape == (3, 30, len(names)) and da["step"].values.tolist() == [0, 5, 10]
    np.testing.assert_array_equal(da.isel(time=-1).values, run.snapshot().points)
    frame = run.to_dataframe()
    assert frame.index.name == "time" and list(frame["step"]) == run.series["step"].tolist()
    np.testing.assert_array_equal(frame["U"].to_numpy(), run.series["U"])


def test_a_density_run_in_the_ecosystem_has_its_cell_centres(tmp_path):
    pytest.importorskip("xarray")
    run = mfld.run("grid-2d", out=tmp_path / "g.h5", set={"time.steps": 4, "output.checkpoint_every": 2})
    da = run.to_xarray()
    assert da.dims == ("time", "u_1", "b") and da.shape == (3, 96, 96)
    np.testing.assert_array_equal(da["b"].values, run.snapshot().grid.axes()[1])
    np.testing.assert_array_equal(da.isel(time=-1).values, run.snapshot().density)


def test_an_in_memory_run_that_cannot_keep_its_frames_is_refused_before_its_first_step():
    """Issue 37: 10^12 steps with a frame and a record every step started without a word and grew until memory ran
    out; a file run of the same is refused at once (disk), and so is this one now (memory)."""
    settings = {"data.n": 30, "time.steps": 10**12, "output.checkpoint_every": 1, "output.metrics_every": 1}
    with pytest.raises(MemoryError, match=r"would hold 1000000000001 frames .*output.checkpoint_every = 1.*out=\.\.\."):
        mfld.run(set=settings)


def test_a_particle_file_converts_to_xarray_in_the_storage_layer(tmp_path):
    """Issue 36: CheckpointReader.to_xarray refused particle files; it now gives what Run.to_xarray gives."""
    pytest.importorskip("xarray")
    from mfld.storage import CheckpointReader

    settings = {"data.n": 30, "data.d": 3, "particles.N": 30, "time.steps": 10, "output.checkpoint_every": 5}
    run = mfld.run(set=settings, out=tmp_path / "p.h5")
    da = CheckpointReader(tmp_path / "p.h5").to_xarray()
    assert da.dims == ("time", "particle", "component") and list(da.component.values) == ["u_1", "u_2", "u_3", "b"]
    for k, step in enumerate(run.steps):
        np.testing.assert_array_equal(da.isel(time=k).values, run.snapshot(int(step)).points)
    assert da.equals(run.to_xarray()) and "[particles]" in da.attrs["config"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"set": "time.steps=5"}, r"set must be a mapping of dotted keys"),
        ({"out": 5}, r"out must be a file name \(str or Path\) or None, got int 5"),
        ({"observers": 5}, r"observers must be a list of observers, got int 5"),
        ({"observers": [object()]}, r"observers\[0\] \(object\) lacks start, observe, finish"),
    ],
)
def test_api_arguments_of_the_wrong_type_are_named_before_any_work(kwargs, match):
    """Issue 37 (low): these failed after the run started, or with messages that named nothing."""
    with pytest.raises(TypeError, match=match):
        mfld.run(**kwargs)


def test_a_measure_whose_weights_sum_to_zero_is_refused():
    from conftest import small_problem
    from mfld.model.two_timescale import TwoTimescaleFunctional

    pb = small_problem()
    W = pb.sample_prior(10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="with a positive sum"):
        TwoTimescaleFunctional(pb).fit(W, np.zeros(10))


def test_numpy_scalars_are_taken_as_the_numbers_they_hold():
    """Issue 37 (low): ``particles.N = numpy.int64(80)`` (from an array, or a loop over one) was refused with "must
    be an integer >= 2, got np.int64(80)", a message that contradicts itself."""
    sizes = np.array([80, 90])
    run = mfld.run(
        {"model": {"lam": np.float64(0.05)}},
        set={"particles.N": sizes[0], "time.steps": np.int32(2), "data.n": 30, "output.plot": False},
    )
    assert run.snapshot().points.shape[0] == 80 and run.config["model"]["lam"] == 0.05
    assert type(run.config["particles"]["N"]) is int
