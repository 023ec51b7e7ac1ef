"""Checkpoints: H5MD layout, exact resume, crash safety, Ctrl-C, loading for analysis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from conftest import SMALL_RUN
from mfld.config import load_config
from mfld.discretizations import loop
from mfld.solver import build
from mfld.storage import CheckpointError, CheckpointReader, load


def small_config(*extra: str) -> dict:
    return load_config(None, SMALL_RUN + list(extra))


def test_layout_is_h5md(tmp_path):
    path = build.start(small_config(), tmp_path / "run.h5")
    with h5py.File(path, "r") as f:
        assert tuple(f["h5md"].attrs["version"]) == (1, 1)
        # H5MD's metadata strings are fixed-length.
        assert f["h5md/creator"].attrs["name"] == b"mfld" and isinstance(f["h5md/creator"].attrs["version"], bytes)
        assert f["h5md/author"].attrs["name"] not in (b"", b"mfld user")
        pos = f["particles/mu/position"]
        assert pos["value"].shape == (5, 64, 5)  # steps 0, 10, 20, 30, 40; p = d + 1
        np.testing.assert_array_equal(pos["step"][()], [0, 10, 20, 30, 40])
        np.testing.assert_allclose(pos["time"][()], 0.1 * pos["step"][()])
        assert f["particles/mu/box"].attrs["dimension"] == 5
        for name in (
            "objective",
            "U",
            "second_moment",
            "kernel_alignment",
            "degrees_of_freedom",
            "train_loss",
            "test_loss",
        ):
            el = f[f"observables/{name}"]
            np.testing.assert_array_equal(el["step"][()], np.arange(0, 41, 5))
            assert np.all(np.isfinite(el["value"][()]))
        for name in ("X", "Y", "X_test", "Y_test"):
            assert f[f"parameters/data/{name}"].shape[0] in (40, 50)
        assert "[model]" in f["parameters"].attrs["config"]


def test_the_author_is_configurable(tmp_path):
    path = build.start(small_config('output.author="A. Researcher"'), tmp_path / "a.h5")
    with h5py.File(path, "r") as f:
        assert f["h5md/author"].attrs["name"] == b"A. Researcher"


def test_resume_is_bit_identical(tmp_path):
    whole = build.start(small_config(), tmp_path / "whole.h5")
    half = build.start(small_config("time.steps=20"), tmp_path / "half.h5")
    build.resume(half, steps=20)
    a, b = load(whole), load(half)
    assert a.step == b.step == 40
    np.testing.assert_array_equal(a.points, b.points)
    oa, ob = CheckpointReader(whole).observables(), CheckpointReader(half).observables()
    for name in oa:
        np.testing.assert_array_equal(oa[name]["step"], ob[name]["step"])
        np.testing.assert_array_equal(oa[name]["value"], ob[name]["value"])


def test_resume_refuses_a_finished_run(tmp_path):
    path = build.start(small_config(), tmp_path / "r.h5")
    with pytest.raises(ValueError, match="--steps"):
        build.resume(path)


def test_loaded_measure_reproduces_recorded_observables(tmp_path):
    path = build.start(small_config(), tmp_path / "r.h5")
    snap = load(path, step=20)
    obs = CheckpointReader(path).observables()
    k = list(obs["U"]["step"]).index(20)
    functional = build.build_functional(snap.config, build.build_problem(snap.config, snap.data))
    fit = functional.fit(snap.points, snap.weights)
    assert abs(fit.U - obs["U"]["value"][k]) <= 1e-12 * abs(fit.U)
    with pytest.raises(CheckpointError, match="step 21 is not saved"):
        load(path, step=21)


def test_existing_file_is_not_overwritten(tmp_path):
    path = build.start(small_config(), tmp_path / "r.h5")
    with pytest.raises(FileExistsError, match="mfld resume"):
        build.start(small_config(), path)


def _die_in(function: str, at_step: int) -> str:
    """Python source that makes the store's ``<function>`` SIGKILL the process, after it ran, at ``at_step``."""
    return textwrap.dedent(f"""
        import os, signal
        from mfld.solver import build
        from mfld.storage import store
        from mfld.config import load_config
        original = store.{function}

        def dying(*args):
            out = original(*args)
            rows = "{function}" == "write_rows"
            step = args[2] if rows else args[4][0]  # the frame's step, or the frames needed
            if step == {at_step}:
                (args[0] if rows else args[1]).flush()  # what was written reaches the file
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        store.{function} = dying
    """)


@pytest.mark.parametrize("moment", ["in place", "rebuild"])
def test_kill_during_checkpoint_write_keeps_earlier_frames(tmp_path, moment):
    """SIGKILL the writer half-way through a commit: in place (the rows of the frame at step 20 are
    written, its count is not), or while a resume gives the file more rows (a new file is being
    made): the file must load with the frames before, and resume exactly."""
    path = tmp_path / "crash.h5"
    if moment == "in place":
        script = _die_in("write_rows", 20) + f"build.start(load_config(None, {SMALL_RUN!r}), {str(path)!r})"
        kept = [0, 10]
    else:  # steps 0, 10, 20 planned; a resume for 20 more needs 5 frames: a new file, killed before it replaces
        build.start(small_config("time.steps=20"), path)
        script = _die_in("lay_out", 4) + f"build.resume({str(path)!r}, steps=20)"
        kept = [0, 10, 20]
    before = path.read_bytes() if path.exists() else None
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    if before is not None:
        assert path.read_bytes() == before  # the old file was never touched
    np.testing.assert_array_equal(CheckpointReader(path).steps, kept)
    assert load(path).step == kept[-1]
    # The run can be continued from what survived, and lands where an uninterrupted run does.
    build.resume(path, steps=40 - kept[-1])
    whole = build.start(small_config(), tmp_path / "whole.h5")
    np.testing.assert_array_equal(load(path).points, load(whole).points)
    oa, ob = CheckpointReader(whole).observables(), CheckpointReader(path).observables()
    np.testing.assert_array_equal(oa["objective"]["step"], ob["objective"]["step"])
    np.testing.assert_array_equal(oa["objective"]["value"], ob["objective"]["value"])


class _InterruptAt:
    """An observer that sends SIGINT to this process after a given step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def start(self, system): ...

    def observe(self, system):
        if system.step_count == self.step:
            os.kill(os.getpid(), signal.SIGINT)

    def finish(self, system, interrupted): ...


def test_ctrl_c_stops_cleanly_with_a_final_checkpoint(tmp_path, monkeypatch):
    config = small_config()
    original = build._observers
    monkeypatch.setattr(build, "_observers", lambda *a, **k: [_InterruptAt(13), *original(*a, **k)])
    with pytest.raises(loop.Interrupted) as info:
        build.start(config, tmp_path / "r.h5")
    assert info.value.step == 13
    reader = CheckpointReader(tmp_path / "r.h5")
    np.testing.assert_array_equal(reader.steps, [0, 10, 13])
    assert reader.observables()["U"]["step"][-1] == 13
    monkeypatch.setattr(build, "_observers", original)
    build.resume(tmp_path / "r.h5")
    whole = build.start(config, tmp_path / "whole.h5")
    np.testing.assert_array_equal(load(tmp_path / "r.h5").points, load(whole).points)


def test_foreign_and_corrupt_files_are_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(CheckpointError, match="not an HDF5 file"):
        load(text)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = 1
    with pytest.raises(CheckpointError, match="not an H5MD file"):
        load(plain)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_group("h5md").attrs["version"] = [1, 1]
    with pytest.raises(CheckpointError, match="not written by mfld"):
        load(other)
    truncated = tmp_path / "trunc.h5"
    good = build.start(small_config(), tmp_path / "good.h5")
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load(tmp_path / "missing.h5")


def test_a_gpu_runs_file_loads_where_cupy_is_absent(tmp_path):
    """Reading gives host arrays and the config; the problem is built on a backend the reader chooses."""
    path = build.start(small_config(), tmp_path / "r.h5")
    with h5py.File(path, "r+") as f:  # as if the run had been made with backend = "cupy"
        f["parameters"].attrs["config"] = (
            f["parameters"].attrs["config"].replace('backend = "numpy"', 'backend = "cupy"')
        )
    snap = load(path)
    assert snap.config["backend"] == "cupy" and isinstance(snap.points, np.ndarray)
    problem = build.build_problem(snap.config, snap.data, backend="numpy")
    fit = build.build_functional(snap.config, problem).fit(snap.points, snap.weights)
    U = CheckpointReader(path).observables()["U"]["value"][-1]
    assert abs(fit.U - U) <= 1e-12 * abs(U)
    try:  # the configured backend is still what a plain build_problem uses
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs CuPy"):
            build.build_problem(snap.config, snap.data)


def test_a_resume_opens_its_file_three_times_before_its_first_step(tmp_path, monkeypatch):
    """The checks and the reading share one open, the store's counts another, the frame the third (it was 7)."""
    from pathlib import Path

    from mfld.discretizations.particles import Particles

    path = build.start(load_config(None, SMALL_RUN + ["time.steps=10"]), tmp_path / "r.h5")
    opened = []
    original = h5py.File.__init__

    def counting(self, name, *args, **kwargs):
        if isinstance(name, str | Path):
            opened.append(name)
        original(self, name, *args, **kwargs)

    class FirstStep(Exception):
        pass

    def first_step(self):
        raise FirstStep

    monkeypatch.setattr(h5py.File, "__init__", counting)
    monkeypatch.setattr(Particles, "step", first_step)
    with pytest.raises(FirstStep):
        build.resume(path, steps=1)
    assert len(opened) == 3, opened
