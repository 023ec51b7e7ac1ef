"""Particles sharded over MPI ranks follow the single-process trajectory; checkpoints resume on any R."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mfld.config import load_config
from mfld.solver import build
from mfld.storage import CheckpointError, CheckpointReader, load

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install 'mfld[mpi]')")

SETTINGS = [
    "data.d=4",
    "data.n=30",
    "data.n_test=40",
    "particles.N=101",
    "time.eta=0.1",
    "model.lam=0.05",
    "output.checkpoint_every=5",
    "output.metrics_every=5",
    "output.plot=false",
    'output.progress="off"',
]


def mfld(ranks: int, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mfld.solver.cli", *args]
    if ranks > 1:
        cmd = [MPIEXEC, "-n", str(ranks), *cmd]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def sets(*extra: str) -> list[str]:
    return [a for item in [*SETTINGS, *extra] for a in ("--set", item)]


@pytest.mark.parametrize("solve, tol", [("cholesky", 1e-12), ("pcg", 1e-9)])
def test_two_ranks_follow_the_single_process_trajectory(tmp_path, solve, tol):
    """pcg: one Allreduce per product; its sums run in another order than one process's, so agreement is to the
    solver's tolerance rather than to round-off."""
    mfld(1, "run", "--out", str(tmp_path / "one.h5"), *sets("time.steps=20", f'particles.solve="{solve}"'))
    proc = mfld(2, "run", "--out", str(tmp_path / "two.h5"), *sets("time.steps=20", f'particles.solve="{solve}"'))
    assert proc.stdout.count("checkpoint:") == 1  # one rank speaks for the job
    one, two = load(tmp_path / "one.h5"), load(tmp_path / "two.h5")
    assert one.step == two.step == 20 and two.points.shape == (101, 5)
    np.testing.assert_allclose(two.points, one.points, rtol=tol, atol=tol)
    o1, o2 = CheckpointReader(tmp_path / "one.h5").observables(), CheckpointReader(tmp_path / "two.h5").observables()
    for name in ("U", "objective", "kernel_alignment", "degrees_of_freedom", "test_loss", "parameter_alignment"):
        np.testing.assert_allclose(o2[name]["value"], o1[name]["value"], rtol=tol)
    with h5py.File(tmp_path / "two.h5", "r") as f:
        assert f["particles/mu/position/value"].is_virtual
    for rank in (0, 1):  # each shard holds exactly the planned frames (steps 0, 5, 10, 15, 20), committed in place
        with h5py.File(tmp_path / f"two.r{rank}of2.h5", "r") as f:
            assert f["value"].shape[0] == 5 and f["committed"][0] == 5


@pytest.mark.parametrize("ranks", [1, 3])
def test_two_rank_checkpoint_resumes_on_other_counts(tmp_path, ranks):
    mfld(1, "run", "--out", str(tmp_path / "whole.h5"), *sets("time.steps=20"))
    mfld(2, "run", "--out", str(tmp_path / "part.h5"), *sets("time.steps=10"))
    mfld(2, "resume", str(tmp_path / "part.h5"), "--steps", "5")  # the same shards grow by the planned frame
    mfld(ranks, "resume", str(tmp_path / "part.h5"), "--steps", "5")
    whole, part = load(tmp_path / "whole.h5"), load(tmp_path / "part.h5")
    assert part.step == 20
    np.testing.assert_allclose(part.points, whole.points, rtol=1e-12, atol=1e-12)
    reader = CheckpointReader(tmp_path / "part.h5")
    np.testing.assert_array_equal(reader.steps, [0, 5, 10, 15, 20])
    np.testing.assert_allclose(
        load(tmp_path / "part.h5", step=5).points, load(tmp_path / "whole.h5", step=5).points, rtol=1e-12, atol=1e-12
    )


def test_keyed_noise_is_the_stream_of_its_blocks():
    """Rows b BLOCK .. (b + 1) BLOCK - 1 of a step are the first draws of the Philox generator keyed by (seed, step,
    b), in order: the stream every file written so far continues."""
    from mfld.discretizations.noise import BLOCK, KeyedNoise

    def block(step: int, b: int) -> np.ndarray:
        return np.random.Generator(np.random.Philox(key=(7 << 96) | (step << 32) | b)).standard_normal((BLOCK, 3))

    reference = np.concatenate([block(5, 0), block(5, 1)])
    noise = KeyedNoise(7)
    for start, stop in ((0, 2000), (0, 2 * BLOCK), (100, BLOCK + 50), (BLOCK + 7, 2 * BLOCK - 1), (3, 4)):
        np.testing.assert_array_equal(noise.normal(5, start, stop, 3), reference[start:stop])


def test_keyed_noise_does_not_depend_on_the_split():
    from mfld.discretizations.noise import BLOCK, KeyedNoise

    noise = KeyedNoise(7)
    whole = noise.normal(3, 0, 2 * BLOCK + 17, 2)
    parts = [noise.normal(3, a, b, 2) for a, b in ((0, 5), (5, BLOCK + 3), (BLOCK + 3, 2 * BLOCK + 17))]
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    assert not np.array_equal(noise.normal(4, 0, 10, 2), whole[:10])


def test_in_process_runs_use_the_keyed_stream(tmp_path):
    config = load_config(None, SETTINGS + ["time.steps=4"])
    path = build.start(config, tmp_path / "r.h5")
    assert '"keyed-philox"' in load(path).rng_state


def test_a_master_moved_without_its_shards_is_refused(tmp_path):
    mfld(2, "run", "--out", str(tmp_path / "two.h5"), *sets("time.steps=5"))
    elsewhere = tmp_path / "moved"
    elsewhere.mkdir()
    shutil.copy(tmp_path / "two.h5", elsewhere / "two.h5")
    with pytest.raises(CheckpointError, match=r"shard files are missing: two\.r0of2\.h5, two\.r1of2\.h5"):
        load(elsewhere / "two.h5")


def test_a_signal_to_one_rank_stops_the_whole_job_with_a_final_frame(tmp_path):
    """SIGINT to rank 1 only: both ranks stop at the same step, write the final frame, and the job ends."""
    import signal
    import time

    script = tmp_path / "slow.py"
    script.write_text(
        "import os, sys, time\n"
        "from mpi4py import MPI\n"
        "from mfld.solver import build\n"
        "from mfld.config import load_config\n"
        f"open({str(tmp_path)!r} + f'/pid{{MPI.COMM_WORLD.Get_rank()}}', 'w').write(str(os.getpid()))\n"
        "original = build._observers\n"
        "class Pause:\n"
        "    def start(self, system): pass\n"
        "    def observe(self, system):\n"
        "        time.sleep(0.05)\n"
        f"        if system.step_count == 2: open({str(tmp_path)!r} + f'/stepped{{MPI.COMM_WORLD.Get_rank()}}', 'w')\n"
        "    def finish(self, system, interrupted): pass\n"
        "build._observers = lambda *a, **k: [*original(*a, **k), Pause()]\n"
        f"build.start(load_config(None, {SETTINGS + ['time.steps=400']!r}), {str(tmp_path / 'sig.h5')!r})\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    job = subprocess.Popen(
        [MPIEXEC, "-n", "2", sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pid1 = tmp_path / "pid1"
    deadline = time.monotonic() + 120
    while not (pid1.exists() and pid1.read_text() and (tmp_path / "stepped1").exists()):  # a condition, not a time
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()
        time.sleep(0.05)
    os.kill(int(pid1.read_text()), signal.SIGINT)
    try:
        job.wait(timeout=120)
    except subprocess.TimeoutExpired:
        job.kill()
        pytest.fail("the job hung after a signal to one rank")
    steps = CheckpointReader(tmp_path / "sig.h5").steps
    assert 0 < steps[-1] < 400, steps  # stopped early, with a final frame
    np.testing.assert_array_equal(load(tmp_path / "sig.h5").points.shape, (101, 5))


def test_a_serial_file_resumed_on_two_ranks_is_refused_by_both(tmp_path):
    path = tmp_path / "one.h5"
    mfld(1, "run", "--out", str(path), *sets("time.steps=5"))
    before = path.read_bytes()
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "mfld.solver.cli", "resume", str(path), "--steps", "5"]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"),
    )
    assert proc.returncode != 0
    assert proc.stderr.count("was written by one process; resume it with one process") == 2, proc.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "one.h5.lock") == ["one.h5"]


def test_a_sharded_pcg_trajectory_does_not_depend_on_its_checkpoint_steps(tmp_path):
    """The shards and the master hold the solver's state with each frame (pcg's measure and first guesses), so
    a sharded run neither restarts its solver at checkpoints nor drifts when resumed from one."""
    pcg = ('particles.solve="pcg"', "output.metrics_every=1")
    mfld(2, "run", "--out", str(tmp_path / "a.h5"), *sets("time.steps=24", *pcg, "output.checkpoint_every=12"))
    mfld(2, "run", "--out", str(tmp_path / "b.h5"), *sets("time.steps=24", *pcg, "output.checkpoint_every=5"))
    mfld(2, "run", "--out", str(tmp_path / "c.h5"), *sets("time.steps=13", *pcg, "output.checkpoint_every=12"))
    mfld(2, "resume", str(tmp_path / "c.h5"), "--steps", "11")
    a = load(tmp_path / "a.h5")
    for other in ("b.h5", "c.h5"):
        np.testing.assert_array_equal(load(tmp_path / other).points, a.points, err_msg=other)
    np.testing.assert_array_equal(
        CheckpointReader(tmp_path / "c.h5").observables()["U"]["value"],
        CheckpointReader(tmp_path / "a.h5").observables()["U"]["value"],
    )
    with h5py.File(tmp_path / "a.h5", "r") as f:  # the measure along the particles over the shards, the guess here
        assert f["particles/mu/solver_source_n/value"].is_virtual
        assert f["particles/mu/solver_source_n/value"].shape == (3, 101, 5)
        assert not f["particles/mu/solver_guess_n_1/value"].is_virtual
    snap = load(tmp_path / "a.h5")
    assert snap.solver["source_n"].shape == (101, 5) and snap.solver["guess_n_1"].shape == (30, 1)


def test_a_sharded_file_written_before_the_solver_state_resumes(tmp_path):
    """A sharded file written by d07089b (its master's series grown row by row, no solver state) is read and
    resumed on two ranks: bit for bit the same whether in one resume or two, and the straight two-rank run of this
    code to round-off (cholesky: exact solves). Not bit for bit with the straight run: the file's first frames
    were computed on another machine, whose BLAS kernels round differently; a misread state or noise stream would
    differ by the noise's size, about 0.03."""
    old = Path(__file__).resolve().parents[1] / "data" / "v0.2"
    for copy in ("once", "twice"):
        (tmp_path / copy).mkdir()
        for name in ("particles-sharded.h5", "particles-sharded.r0of2.h5", "particles-sharded.r1of2.h5"):
            shutil.copy(old / name, tmp_path / copy / name)
    settings = sets('particles.solve="cholesky"')
    mfld(2, "run", "--out", str(tmp_path / "straight.h5"), *settings, "--set", "time.steps=20")
    once, twice = tmp_path / "once" / "particles-sharded.h5", tmp_path / "twice" / "particles-sharded.h5"
    assert CheckpointReader(once).provenance["git_revision"].startswith("d07089b")
    mfld(2, "resume", str(once), "--steps", "10")
    mfld(2, "resume", str(twice), "--steps", "5")
    mfld(2, "resume", str(twice), "--steps", "5")
    straight = CheckpointReader(tmp_path / "straight.h5")
    resumed, split = CheckpointReader(once), CheckpointReader(twice)
    np.testing.assert_array_equal(resumed.steps, [0, 5, 10, 15, 20])
    np.testing.assert_array_equal(split.steps, resumed.steps)
    for step in resumed.steps:
        W = resumed.snapshot(int(step)).points
        np.testing.assert_array_equal(split.snapshot(int(step)).points, W)
        W_straight = straight.snapshot(int(step)).points
        assert np.linalg.norm(W - W_straight) <= 1e-13 * np.linalg.norm(W_straight)
    objective = resumed.observables()["objective"]["value"]
    np.testing.assert_array_equal(split.observables()["objective"]["value"], objective)
    np.testing.assert_allclose(objective, straight.observables()["objective"]["value"], rtol=1e-12, atol=0)


def test_a_master_whose_virtual_arrays_reach_past_their_own_shard_data_is_refused(tmp_path):
    """Only ``/particles/mu/<name>/value`` over the dataset of that same array in this master's shards is the
    sharded layout; the same element over another dataset of a shard, or over another file, is refused."""
    mfld(2, "run", "--out", str(tmp_path / "two.h5"), *sets("time.steps=5", 'particles.solve="pcg"'))
    for case, (shard, dataset) in enumerate((("two.r0of2.h5", "value"), ("other.h5", "solver_source_n"))):
        folder = tmp_path / f"case{case}"
        folder.mkdir()
        for name in ("two.h5", "two.r0of2.h5", "two.r1of2.h5"):
            shutil.copy(tmp_path / name, folder / name)
        with h5py.File(folder / "other.h5", "w") as f:
            f["solver_source_n"] = np.zeros((2, 51, 5))
        path = folder / "two.h5"
        layout = h5py.VirtualLayout(shape=(2, 101, 5), dtype="f8")
        layout[:, :51] = h5py.VirtualSource(shard, dataset, shape=(2, 51, 5))
        with h5py.File(path, "r+") as f:
            del f["particles/mu/solver_source_n/value"]
            f["particles/mu/solver_source_n"].create_virtual_dataset("value", layout, fillvalue=np.nan)
        with pytest.raises(CheckpointError, match=f"reaches outside itself.*over {shard}:/?{dataset}"):
            load(path)
    load(tmp_path / "two.h5")


def _copy_run(source: Path, folder: Path, stem: str = "two") -> Path:
    folder.mkdir()
    for name in (f"{stem}.h5", f"{stem}.r0of2.h5", f"{stem}.r1of2.h5"):
        shutil.copy(source / name, folder / name)
    return folder / f"{stem}.h5"


def test_shards_exchanged_or_of_another_run_or_foreign_are_refused_by_name(tmp_path):
    """Issue 37: exchanged shard names, a shard of another run of the same shape, a foreign HDF5 file in a shard's
    place were all read back (frames off by up to 8.7, half the particles NaN)."""
    mfld(2, "run", "--out", str(tmp_path / "two.h5"), *sets("time.steps=5"))
    other = tmp_path / "other"
    other.mkdir()
    mfld(2, "run", "--out", str(other / "two.h5"), *sets("time.steps=5", "seed=9"))
    exchanged = _copy_run(tmp_path, tmp_path / "exchanged")
    a, b = exchanged.with_name("two.r0of2.h5"), exchanged.with_name("two.r1of2.h5")
    a.rename(a.with_suffix(".tmp"))
    b.rename(a)
    a.with_suffix(".tmp").rename(b)
    with pytest.raises(CheckpointError, match=r"two\.r0of2\.h5 holds particles 51:101, but the master reads 0:51"):
        load(exchanged)
    stranger = _copy_run(tmp_path, tmp_path / "stranger")
    shutil.copy(other / "two.r1of2.h5", stranger.with_name("two.r1of2.h5"))
    with pytest.raises(CheckpointError, match=r"two\.r1of2\.h5 belongs to another run"):
        load(stranger)
    foreign = _copy_run(tmp_path, tmp_path / "foreign")
    with h5py.File(foreign.with_name("two.r1of2.h5"), "w") as f:
        f["value"] = np.zeros((2, 50, 5))
    with pytest.raises(CheckpointError, match=r"two\.r1of2\.h5 is not a shard of an mfld run"):
        load(foreign)
    for path in (exchanged, stranger, foreign):  # the command line says the same and exits 2
        proc = subprocess.run(
            [sys.executable, "-m", "mfld.solver.cli", "plot", str(path)], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 2 and "shards do not match it" in proc.stderr, proc.stderr
    load(tmp_path / "two.h5")


def test_a_rank_that_cannot_read_its_rows_stops_every_rank_with_its_message(tmp_path):
    """Issue 37: one rank failing on its shard left the other waiting in a collective forever."""
    mfld(2, "run", "--out", str(tmp_path / "two.h5"), *sets("time.steps=5"))
    with h5py.File(tmp_path / "two.r1of2.h5", "r+") as f:
        f["value"][1] = np.nan  # rank 1's rows of the last frame
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "mfld.solver.cli", "resume", str(tmp_path / "two.h5")]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([*cmd, "--steps", "5"], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "process 1 of 2 could not continue the run" in proc.stderr, proc.stderr
    assert "NaN" in proc.stderr or "not finite" in proc.stderr, proc.stderr
