"""Checkpoints as a hostile or careless user meets them: two writers, foreign HDF5 files, signals, odd outputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from conftest import SMALL_RUN
from mfld.config import load_config
from mfld.discretizations.particles import StepSizeWarning, check_step_size
from mfld.solver import build
from mfld.solver.cli import main
from mfld.storage import CheckpointError, CheckpointReader, load
from mfld.storage.lock import FileLockedError, WriterLock


def _slow_run(path, steps: int = 40, pause: float = 0.05) -> subprocess.Popen:
    """`build.start` in another process, pausing after every step so that others can meet it mid-run."""
    script = textwrap.dedent(f"""
        import time
        from mfld.solver import build
        from mfld.config import load_config
        original = build._observers
        class Pause:
            def start(self, system): pass
            def observe(self, system): time.sleep({pause})
            def finish(self, system, interrupted): pass
        build._observers = lambda *a, **k: [*original(*a, **k), Pause()]
        build.start(load_config(None, {SMALL_RUN + [f"time.steps={steps}"]!r}), {str(path)!r})
    """)
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path, proc) -> None:
    deadline = time.monotonic() + 60
    while not (path.exists() and CheckpointReader(path).steps.size):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)


def test_a_second_writer_is_refused_and_the_first_file_is_untouched(tmp_path):
    path = tmp_path / "run.h5"
    proc = _slow_run(path)
    _wait_for(path, proc)
    with pytest.raises(FileLockedError, match=rf"is being written by mfld pid {proc.pid} on "):
        build.resume(path, steps=5)
    with pytest.raises(FileLockedError, match="is being written by"):
        build.start(load_config(None, SMALL_RUN), path, overwrite=True)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    lone = build.start(load_config(None, SMALL_RUN), tmp_path / "lone.h5")
    np.testing.assert_array_equal(load(path).points, load(lone).points)
    a, b = CheckpointReader(path).observables(), CheckpointReader(lone).observables()
    for name in a:
        np.testing.assert_array_equal(a[name]["value"], b[name]["value"])
    assert not (tmp_path / "run.h5.lock").exists()


def test_the_lock_is_released_when_its_holder_dies(tmp_path):
    path = tmp_path / "x.h5"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from mfld.storage.lock import WriterLock; import time\n"
            f"with WriterLock({str(path)!r}):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(FileLockedError), WriterLock(path):
        pass
    holder.kill()
    holder.wait()
    with WriterLock(path):  # kill -9 left the file behind, but not the lock
        pass


def _particles_file(tmp_path, name="r.h5"):
    return build.start(load_config(None, SMALL_RUN), tmp_path / name)


def test_external_links_storage_and_virtual_datasets_are_refused(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(8, dtype=np.float64).tobytes())
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.ones(3)
    cases = {
        "link": lambda f: f.__setitem__("parameters/extra", h5py.ExternalLink(str(other), "/x")),
        "storage": lambda f: f["parameters"].create_dataset(
            "extra", shape=(8,), dtype="f8", external=[(str(secret), 0, 64)]
        ),
        "virtual": lambda f: f["parameters"].create_virtual_dataset("extra", _layout(other)),
    }
    for name, edit in cases.items():
        path = _particles_file(tmp_path, f"{name}.h5")
        with h5py.File(path, "r+") as f:
            edit(f)
        with pytest.raises(CheckpointError, match="reaches outside itself"):
            load(path)
        assert main(["info", str(path)]) == 2
        with pytest.raises(CheckpointError, match="reaches outside itself"):
            build.resume(path, steps=2)


def _layout(source) -> h5py.VirtualLayout:
    layout = h5py.VirtualLayout(shape=(3,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(source), "x", shape=(3,))
    return layout


def test_a_stored_noise_name_does_not_choose_code(tmp_path):
    path = _particles_file(tmp_path)
    with h5py.File(path, "r+") as f:
        f["particles/mu/rng_state/value"][-1] = json.dumps({"stream": "sequential", "state": {"bit_generator": "test"}})
    with pytest.raises(ValueError, match="unknown noise generator 'test'"):
        build.resume(path, steps=2)


def test_shapes_that_disagree_with_the_configuration_are_refused(tmp_path):
    path = _particles_file(tmp_path)
    with h5py.File(path, "r+") as f:  # a particle count that disagrees with the positions (mass 0.5 before)
        f["parameters"].attrs["config"] = f["parameters"].attrs["config"].replace("N = 64", "N = 128")
    with pytest.raises(CheckpointError, match="the configuration says N = 128 particles"):
        load(path)
    path = _particles_file(tmp_path, "obs.h5")
    with h5py.File(path, "r+") as f:
        del f["observables/U/time"]
    with pytest.raises(CheckpointError, match=r"/observables/U is not a \{step, time, value\} element"):
        CheckpointReader(path)
    path = _particles_file(tmp_path, "count.h5")
    with h5py.File(path, "r+") as f:  # a count past the rows the file has
        f["parameters/committed"][0] = 99
    with pytest.raises(CheckpointError, match="/parameters/committed counts 99 frames"):
        load(path)
    path = _particles_file(tmp_path, "counter.h5")
    with h5py.File(path, "r+") as f:  # a counter of another type
        del f["parameters/committed"]
        f["parameters/committed"] = np.zeros(3)
    with pytest.raises(CheckpointError, match="is not mfld's commit counter"):
        CheckpointReader(path)
    path = _particles_file(tmp_path, "kind.h5")
    with h5py.File(path, "r+") as f:
        del f["parameters"].attrs["mfld_kind"]
    with pytest.raises(CheckpointError, match="malformed mfld checkpoint"):
        CheckpointReader(path)


def test_sigterm_ends_a_run_with_a_final_frame_that_resumes_exactly(tmp_path):
    path = tmp_path / "t.h5"
    proc = _slow_run(path, steps=40, pause=0.1)
    deadline = time.monotonic() + 120  # a condition, not a time: the frame at step 10 is committed
    while not (path.exists() and CheckpointReader(path).steps[-1] > 0):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    stopped = CheckpointReader(path).steps
    assert 0 < stopped[-1] < 40  # a final frame at the step where it stopped
    build.resume(path)
    lone = build.start(load_config(None, SMALL_RUN), tmp_path / "lone.h5")
    np.testing.assert_array_equal(load(path).points, load(lone).points)


def test_a_run_killed_before_its_first_frame_leaves_no_file_and_runs_again(tmp_path):
    """SIGKILL during the first measurement: the file is written whole with frame 0 and its record, so
    nothing is there yet, and the same command simply runs (no --overwrite, no half-made file)."""
    path = tmp_path / "k.h5"
    script = textwrap.dedent(f"""
        import os, signal
        from mfld.solver import build
        from mfld.config import load_config
        build.metrics_of = lambda system: os.kill(os.getpid(), signal.SIGKILL)
        build.start(load_config(None, {SMALL_RUN!r}), {str(path)!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL
    assert not path.exists() and not (tmp_path / "k.h5.partial").exists()  # the lock file may stay: unlocked
    assert main(["run", "--out", str(path), *[a for s in SMALL_RUN for a in ("--set", s)]]) == 0
    lone = build.start(load_config(None, SMALL_RUN), tmp_path / "lone.h5")
    np.testing.assert_array_equal(load(path).points, load(lone).points)


def test_special_files_and_directories_are_refused_as_outputs(tmp_path, capsys):
    for out in ("/dev/null", str(tmp_path), ""):
        assert main(["run", "--out", out, "--overwrite", "--set", "time.steps=1"]) == 2
        assert "not a regular file" in capsys.readouterr().err or out == ""
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_step_near_the_stability_limit_warns():
    from conftest import small_problem

    pb = small_problem(lam=0.5, lam_w=4.0)  # lam_w_bar = 2: the limit is eta < 0.5
    with pytest.warns(StepSizeWarning, match="within a factor 2 of the stability limit 0.5"):
        check_step_size(pb, 0.3)


def test_the_last_frame_is_not_written_twice(tmp_path):
    """The last step is a checkpoint step but not a metrics step: one frame, and the final observables."""
    path = build.start(load_config(None, [*SMALL_RUN, "output.metrics_every=15"]), tmp_path / "d.h5")
    reader = CheckpointReader(path)
    assert reader.steps.tolist() == [0, 10, 20, 30, 40]
    assert reader.observables()["U"]["step"].tolist() == [0, 15, 30, 40]


def test_a_serial_run_does_not_initialise_mpi(tmp_path):
    script = "import sys; from mfld.model.distributed import world; world(); print('mpi4py.MPI' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def _run_limited(args: list[str], config: list[str], size: int) -> subprocess.CompletedProcess:
    """``mfld`` under a file-size limit (ulimit -f), which stands in for a full disk: writes fail, nothing is killed."""
    import resource

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return subprocess.run(
        [sys.executable, "-m", "mfld.solver.cli", *args, *[a for s in config for a in ("--set", s)]],
        capture_output=True,
        text=True,
        preexec_fn=limit,
    )


def test_a_disk_too_small_for_the_run_is_refused_before_any_work(tmp_path):
    """The file is given room for every planned frame at step 0: a disk that cannot hold them refuses at once."""
    path = tmp_path / "full.h5"
    config = [*SMALL_RUN, "particles.N=2000", "time.steps=40"]  # 5 frames of 2000 x 5 doubles: 400 kB
    proc = _run_limited(["run", "--out", str(path)], config, 300_000)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "above the file-size limit of 0.3 MiB (ulimit -f); no file was written" in proc.stderr
    assert not path.exists() and not (tmp_path / "full.h5.partial").exists()


def test_a_full_disk_ends_a_run_that_grows_its_file_with_one_line_and_keeps_the_frames(tmp_path):
    """A resume past the planned frames gives the file more rows (a new file): when it cannot, the frames stay."""
    path = tmp_path / "full.h5"
    config = [*SMALL_RUN, "particles.N=2000", "time.steps=20"]  # 3 frames of 80 kB
    assert _run_limited(["run", "--out", str(path)], config, 2_500_000).returncode == 0
    before = path.read_bytes()
    proc = _run_limited(["resume", str(path), "--steps", "400"], [], 2_500_000)  # 43 frames: 3.4 MB
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "above the file-size limit of 2.4 MiB (ulimit -f); the file keeps the frames saved before" in proc.stderr
    assert not (tmp_path / "full.h5.partial").exists()
    assert path.read_bytes() == before
    build.resume(path, steps=20)  # with room again, the run continues from what was kept
    assert CheckpointReader(path).steps.tolist() == [0, 10, 20, 30, 40]


@pytest.mark.parametrize(
    "override, key", [("particles.N=1000000000000", "particles.N"), ("data.n=10000000000", "data.n")]
)
def test_absurd_sizes_are_refused_before_any_allocation(override, key, capsys):
    assert main(["run", "--out", "absurd.h5", "--set", override]) == 2
    err = capsys.readouterr().err
    assert f"comes from {key} = " in err and "GiB available" in err and err.count("\n") == 1
    assert not os.path.exists("absurd.h5")


def test_an_absurd_grid_is_refused(capsys):
    args = [
        "run",
        "--out",
        "g.h5",
        "--set",
        "discretization=grid",
        "--set",
        "data.d=1",
        "--set",
        "grid.cells=[100000, 100000]",
        "--set",
        'model.feature="tanh_bias"',
    ]
    assert main(args) == 2
    assert "comes from grid.cells = [100000, 100000]" in capsys.readouterr().err


@pytest.mark.parametrize("checksum", [True, False])
def test_checksums_catch_a_damaged_frame(tmp_path, checksum):
    config = load_config(None, [*SMALL_RUN, f"output.checksum={str(checksum).lower()}"])
    path = build.start(config, tmp_path / "c.h5")
    with h5py.File(path, "r") as f:
        ds = f["particles/mu/position/value"]
        assert (ds.fletcher32 is True) == checksum
        offset = ds.id.get_chunk_info(2).byte_offset  # the frame at step 20
    with open(path, "r+b") as fh:  # one byte flipped on the disk
        fh.seek(offset + 100)
        byte = fh.read(1)
        fh.seek(offset + 100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    load(path, step=10)  # the other frames are intact
    if checksum:
        with pytest.raises(CheckpointError, match="stored data cannot be read .a failed checksum"):
            load(path, step=20)
    else:  # without checksums the damage goes unnoticed: what the option is for
        load(path, step=20)
