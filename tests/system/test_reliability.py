"""Reliability round 3: the writer lock and links, resumes that would change the model, the first interval."""

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
from mfld.config import ConfigError, assembly, from_toml, load_config, to_toml
from mfld.solver import build
from mfld.solver.cli import main
from mfld.storage import CheckpointError, CheckpointReader, load, store
from mfld.storage.lock import FileLockedError, WriterLock


def small(*extra: str) -> dict:
    return load_config(None, SMALL_RUN + list(extra))


def _victim(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"a file that is not mfld's\n" * 10)
    return victim


@pytest.mark.parametrize("plant", ["symlink", "hard link", "dangling symlink"])
def test_a_link_planted_at_the_lock_path_is_refused_and_its_target_untouched(tmp_path, plant):
    path, victim = tmp_path / "k.h5", _victim(tmp_path)
    before = victim.read_bytes()
    lock = tmp_path / "k.h5.lock"
    elsewhere = tmp_path / "elsewhere" / "created.txt"
    if plant == "symlink":
        lock.symlink_to(victim)
    elif plant == "hard link":
        os.link(victim, lock)
    else:
        elsewhere.parent.mkdir()
        lock.symlink_to(elsewhere)
    with pytest.raises(FileLockedError, match="k.h5.lock' (is a symbolic link|has 2 names)"):
        build.start(small(), path)
    assert victim.read_bytes() == before and not elsewhere.exists() and not path.exists()
    assert main(["run", "--out", str(path), *[a for s in SMALL_RUN for a in ("--set", s)]]) == 2


def _start_script(path, at_step: int, action: str, settings: list[str] = SMALL_RUN) -> str:
    """A script running `build.start` whose extra observer runs ``action`` (Python) after step ``at_step``."""
    return textwrap.dedent(f"""
        import os, signal, sys
        from mfld.solver import build
        from mfld.config import load_config
        original = build._observers
        class At:
            def start(self, system): pass
            def observe(self, system):
                if system.step_count == {at_step}:
                    {action}
            def finish(self, system, interrupted): pass
        build._observers = lambda *a, **k: [*original(*a, **k), At()]
        build.start(load_config(None, {settings!r}), {str(path)!r})
    """)


def _slow(path, steps: int = 40) -> subprocess.Popen:
    """`build.start` in another process that says "started" on stdout after its first step, then waits for stdin."""
    script = _start_script(
        path, 1, 'print("started", flush=True); sys.stdin.readline()', SMALL_RUN + [f"time.steps={steps}"]
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "started", proc.communicate()
    return proc


def test_two_names_of_one_file_exclude_each_other(tmp_path):
    real = tmp_path / "real.h5"
    alias = tmp_path / "alias.h5"
    alias.symlink_to(real)
    proc = _slow(real)
    try:
        with pytest.raises(FileLockedError, match=f"is being written by mfld pid {proc.pid}"):
            build.resume(alias, steps=5)
        with pytest.raises(FileLockedError, match="is being written by"):
            build.start(small(), alias, overwrite=True)
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    steps = CheckpointReader(real).steps.tolist()
    assert steps == [0, 10, 20, 30, 40]  # one writer: no frame twice
    hard = tmp_path / "hard.h5"
    os.link(real, hard)
    for name in (real, hard):  # a file with two names is refused by either: the other writer would share its rows
        with pytest.raises(FileLockedError, match="has 2 names"):
            build.resume(name, steps=5)
    assert CheckpointReader(real).steps.tolist() == steps


def test_a_run_through_a_symbolic_link_writes_the_file_it_points_to(tmp_path):
    real, alias = tmp_path / "real.h5", tmp_path / "alias.h5"
    alias.symlink_to(real)
    build.start(small("time.steps=20"), alias)
    build.resume(alias, steps=20)
    assert alias.is_symlink() and CheckpointReader(real).steps.tolist() == [0, 10, 20, 30, 40]


def test_a_link_at_the_temporary_name_is_removed_not_followed(tmp_path):
    path, victim = tmp_path / "k.h5", _victim(tmp_path)
    before = victim.read_bytes()
    (tmp_path / "k.h5.partial").symlink_to(victim)
    build.start(small("time.steps=10"), path)
    assert victim.read_bytes() == before and CheckpointReader(path).steps.tolist() == [0, 10]


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_lock_path_that_is_not_a_file_is_one_line(tmp_path, kind, capsys):
    path = tmp_path / "k.h5"
    lock = tmp_path / "k.h5.lock"
    lock.mkdir() if kind == "directory" else os.mkfifo(lock)
    assert main(["run", "--out", str(path), *[a for s in SMALL_RUN for a in ("--set", s)]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "k.h5.lock" in err, err
    with pytest.raises(FileLockedError):
        with WriterLock(path):
            pass


def _drop_key(path, table: str, key: str | None) -> None:
    with h5py.File(path, "r+") as f:
        config = from_toml(f["parameters"].attrs["config"])
        if key is None:
            del config[table]
        else:
            del config[table][key]
        f["parameters"].attrs["config"] = to_toml(config)


@pytest.mark.parametrize(("table", "key"), [("model", "lam"), ("model", None), ("time", "eta")])
def test_a_stored_configuration_missing_keys_its_writer_had_is_refused(tmp_path, table, key):
    path = build.start(small("model.lam=0.01", "time.steps=10"), tmp_path / "k.h5")
    _drop_key(path, table, key)
    name = f"{table}.{key}" if key else f"{table}.lam"
    with pytest.raises(CheckpointError, match=rf"lacks .*{name}.*which mfld .* wrote into every file"):
        build.resume(path, steps=5)
    with h5py.File(path, "r") as f:
        assert f["parameters/committed"][0] == 2


def test_keys_newer_than_the_writer_take_their_defaults_and_older_ones_do_not(tmp_path):
    path = build.start(small("time.steps=10"), tmp_path / "old.h5")
    _drop_key(path, "particles", "solve")  # added in 0.2: a file of 0.1 has no such key
    with h5py.File(path, "r+") as f:
        f["parameters/provenance"].attrs["mfld"] = "0.1.0"
    assert CheckpointReader(path).config["particles"]["solve"] == "auto"
    with h5py.File(path, "r+") as f:
        del f["parameters/provenance"]  # no provenance: 0.1 or an early 0.2 build, which had model.lam
    _drop_key(path, "model", "lam")
    with pytest.raises(CheckpointError, match="model.lam"):
        CheckpointReader(path)
    with pytest.raises(ConfigError, match="particles.solve"):
        from_toml("[model]\nlam = 0.1\n", written_by="0.2.0.dev1")


def test_a_kill_in_the_first_interval_keeps_the_record_of_step_0(tmp_path):
    path = tmp_path / "k.h5"
    script = _start_script(path, 7, "os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert CheckpointReader(path).observables()["objective"]["step"].tolist() == [0]
    build.resume(path)
    lone = build.start(small(), tmp_path / "lone.h5")
    a, b = CheckpointReader(path).observables(), CheckpointReader(lone).observables()
    assert a["objective"]["step"].tolist() == list(range(0, 41, 5))
    for name in b:
        np.testing.assert_array_equal(a[name]["value"], b[name]["value"])
    np.testing.assert_array_equal(load(path).points, load(lone).points)


def test_a_planned_run_writes_its_file_whole_once(tmp_path, monkeypatch):
    calls = []
    original = store.replace
    monkeypatch.setattr(store, "replace", lambda path, *a, **k: (calls.append(path), original(path, *a, **k)))
    for kind in ("particles", "grid"):
        calls.clear()
        extra = [
            "discretization=grid",
            "data.d=1",
            'data.target="single-index"',
            "model.feature=tanh",
            "grid.cells=24",
            "grid.gap=false",
            "model.lam_w=1.0",
            "model.lam_a=1.0",
        ]
        path = build.start(small(*(extra if kind == "grid" else [])), tmp_path / f"{kind}.h5")
        assert calls == [path], kind  # frame 0 and its record together, then every commit in place
        assert CheckpointReader(path).steps.tolist() == [0, 10, 20, 30, 40]


# The low cases: each bad input is refused by the CLI with exit status 2 and one line naming the file or key.
def _csv(text: bytes | str):
    def make(tmp_path):
        path = tmp_path / "d.csv"
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ["run", "--set", f'data.source="{path}"', "--set", "particles.N=20", "--set", "time.steps=1"], "d.csv"

    return make


def _npz(write):
    def make(tmp_path):
        path = tmp_path / "d.npz"
        write(path)
        return ["run", "--set", f'data.source="{path}"', "--set", "particles.N=20", "--set", "time.steps=1"], "d.npz"

    return make


def _savez(**arrays):
    return lambda path: np.savez(path, **arrays)


def _good(n=12, d=2):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)), rng.normal(size=n)


def _edited(edit, command="resume"):
    def make(tmp_path):
        path = build.start(small("time.steps=10"), tmp_path / "f.h5")
        with h5py.File(path, "r+") as f:
            edit(f)
        return [command, str(path), *(["--steps", "5"] if command == "resume" else [])], "f.h5"

    return make


def _noise(text):
    def edit(f):
        f["particles/mu/rng_state/value"][1] = text

    return _edited(edit)


def _nested(f):
    g = f["parameters"]
    for _ in range(1200):
        g = g.create_group("g")


def _bomb(f):
    del f["parameters/data/X_test"]
    f["parameters/data"].create_dataset(
        "X_test", shape=(2**22, 2**13), dtype="f8", chunks=(1024, 1024), compression="gzip"
    )


def _records_bomb(f):
    huge = 10**10  # 80 GB per series, declared; the file stays small (gzip chunks never written)
    for name in list(f["observables"]):
        del f["observables"][name]
    el = f["observables"].create_group("U")
    for name, dtype in (("step", "i8"), ("time", "f8"), ("value", "f8")):
        el.create_dataset(name, shape=(huge,), dtype=dtype, chunks=(2**20,), compression="gzip")
    f["parameters/committed"][1] = huge


def _config(**values):
    def make(tmp_path):
        return ["run", *[a for k, v in values.items() for a in ("--set", f"{k.replace('__', '.')}={v}")]], next(
            iter(values)
        ).replace("__", ".")

    return make


def _out(kind):
    def make(tmp_path):
        path = build.start(small("time.steps=10"), tmp_path / "f.h5")
        out = str(tmp_path / "missing" / "x.png")
        if kind == "compare":
            return ["compare", str(path), str(path), "--out", out], "missing"
        return ["plot", str(path), "--out", out, *(["--animate"] if kind == "animate" else [])], "missing"

    return make


X, Y = _good()
LOW = {
    "csv binary": _csv(b"x0,y\n\x00\x01\x02,3\n"),
    "csv latin-1": _csv(b"x0,y\n1,2\n" + "caf\xe9,1\n".encode("latin-1")),
    "csv header only": _csv("x0,x1,y\n"),
    "csv empty": _csv(""),
    "csv ragged": _csv("x0,x1,y\n1,2,3\n4,5\n"),
    "csv not a number": _csv("x0,x1,y\n1,2,3\n4,five,6\n"),
    "csv huge values": _csv("x0,x1,y\n1,2,3\n4,1e308,6\n1,-1e308,0\n"),
    "csv x,x,y": _csv("x,x,y\n1,2,3\n4,5,6\n"),
    "csv x0,y,y": _csv("x0,y,y\n1,2,3\n4,5,6\n"),
    "npz truncated": _npz(lambda p: (np.savez(p, X=X, Y=Y), p.write_bytes(p.read_bytes()[:100]))),
    "npz empty": _npz(lambda p: p.write_bytes(b"")),
    "npy under npz name": _npz(lambda p: np.save(open(p, "wb"), X)),
    "npz structured": _npz(_savez(X=np.zeros(12, dtype=[("a", "f8"), ("b", "f8")]), Y=Y)),
    "npz 3-D": _npz(_savez(X=np.zeros((12, 2, 2)), Y=Y)),
    "npz complex": _npz(_savez(X=X + 1j, Y=Y)),
    "npz datetime": _npz(_savez(X=np.zeros((12, 2), dtype="datetime64[D]"), Y=Y)),
    "noise a JSON list": _noise("[1, 2]"),
    "noise a number": _noise("3"),
    "noise without block": _noise('{"stream": "keyed-philox", "seed": 0}'),
    "noise a string seed": _noise('{"stream": "keyed-philox", "seed": "0", "block": 4096}'),
    "noise not JSON": _noise("{"),
    "gzip bomb": _edited(_bomb, "info"),
    "records declared huge": _edited(_records_bomb, "info"),
    "kind not the content": _edited(lambda f: f["parameters"].attrs.__setitem__("mfld_kind", "grid"), "info"),
    "counter hides frames": _edited(lambda f: f["parameters/committed"].__setitem__(0, 0), "info"),
    "counted padding": _edited(lambda f: f["particles/mu/position/step"].__setitem__(1, -1), "plot"),
    "frames and records apart": _edited(lambda f: f["parameters/committed"].__setitem__(1, 1)),
    "data.noise = 1e308": _config(data__noise="1e308"),
    "data.n_test = 10^9": _config(data__n_test=10**9),
    "plot --out missing folder": _out("plot"),
    "plot --animate --out missing folder": _out("animate"),
    "compare --out missing folder": _out("compare"),
}


@pytest.mark.parametrize("case", list(LOW))
def test_each_bad_input_is_one_line_naming_it(tmp_path, capsys, case):
    args, named = LOW[case](tmp_path)
    capsys.readouterr()
    assert main(args) == 2, case
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mfld: error:"), err
    assert named in err, err
    assert "Traceback" not in err and "eta" not in err.replace("data.", ""), err


def test_a_deeply_nested_file_is_read_without_recursion(tmp_path, capsys):
    path = build.start(small("time.steps=10"), tmp_path / "f.h5")
    with h5py.File(path, "r+") as f:
        _nested(f)
    assert main(["info", str(path)]) == 0
    assert "frames:          2 (steps 0 .. 10" in capsys.readouterr().out


def test_resume_of_a_file_declaring_too_many_particles_is_refused_before_reading_them(tmp_path, capsys):
    path = build.start(small("time.steps=10"), tmp_path / "f.h5")
    N = 10**9  # 240 GB of positions and step temporaries
    with h5py.File(path, "r+") as f:  # a file that says N = 10^9 everywhere: shapes agree, nothing is allocated
        config = from_toml(f["parameters"].attrs["config"])
        config["particles"]["N"] = N
        f["parameters"].attrs["config"] = to_toml(config)
        el = f["particles/mu/position"]
        del el["value"]
        el.create_dataset("value", shape=(el["step"].shape[0], N, 5), dtype="f8", chunks=(1, 4096, 5))
    assert main(["resume", str(path), "--steps", "5"]) == 2
    err = capsys.readouterr().err
    assert f"particles.N = {N}" in err and "reduce it" in err, err


def test_the_memory_estimate_counts_the_features_of_the_n_side(monkeypatch):
    monkeypatch.setattr(assembly, "available_memory", lambda: 2 * 2**30)
    with pytest.raises(MemoryError, match=r"comes from data.n = 200000"):  # n x N features: 5 x 1.6 GB
        build.check_memory(small("data.n=200000", "particles.N=1000"))
    with pytest.raises(MemoryError, match=r"comes from data.n_test = 1000000000"):
        build.check_memory(small("data.n_test=1000000000"))
    build.check_memory(small())


@pytest.mark.filterwarnings("ignore::mfld.discretizations.mesh.BoxWarning")  # the mass leaving first: expected
def test_an_unstable_spectral_step_names_the_step_size(capsys):
    args = ["-q", "run", "spectral-1d", "--set", "time.eta=1e6", "--set", "time.steps=20", "--set", "output.plot=false"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reduce time.eta" in err[0] and "1e+06" in err[0], err


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_lock_file_of_another_user_is_left_alone(tmp_path):
    path, lock = tmp_path / "k.h5", tmp_path / "k.h5.lock"
    lock.write_text("someone else's")
    os.chown(lock, 65534, 65534)
    with pytest.raises(FileLockedError, match="belongs to user id 65534"):
        build.start(small("time.steps=10"), path)
    assert lock.read_text() == "someone else's" and not path.exists()


def test_a_writer_whose_lock_is_deleted_stops_and_the_next_writer_owns_the_file(tmp_path):
    """`rm FILE.lock` under a running writer: a second writer takes a new lock and continues the file; the first
    stops at its next write, with one line, and writes nothing more. The file reads back as the straight run."""
    path = tmp_path / "L.h5"
    first = _slow(path)  # frame 0 committed, paused after step 1 holding the lock
    (tmp_path / "L.h5.lock").unlink()
    build.resume(path, steps=15)  # the second writer: a new lock, steps 1-15 from frame 0
    first.stdin.write("\n")
    first.stdin.close()
    assert first.wait(timeout=120) != 0
    err = first.stderr.read()
    assert "L.h5.lock' was deleted or replaced while this run wrote" in err and "stops without writing" in err, err
    straight = build.start(small("time.steps=15"), tmp_path / "straight.h5")
    got, want = CheckpointReader(path), CheckpointReader(straight)
    assert got.steps.tolist() == want.steps.tolist() == [0, 10, 15]
    for step in (0, 10, 15):
        np.testing.assert_array_equal(load(path, step).points, load(straight, step).points)
    assert not (tmp_path / "L.h5.lock").exists()  # the second writer removed its own lock; the first touched none


def test_a_lock_replaced_under_its_holder_is_noticed_and_left_to_the_new_holder(tmp_path):
    path = tmp_path / "f.h5"
    first = WriterLock(path).__enter__()
    first.verify()
    first.lock_path.unlink()
    with WriterLock(path) as second:
        with pytest.raises(FileLockedError, match="was deleted or replaced while this run wrote"):
            first.verify()
        second.verify()
        first.__exit__(None, None, None)  # the first writer ends: the second's lock stays, and still excludes
        assert second.lock_path.exists()
        with pytest.raises(FileLockedError, match="is being written by mfld pid"), WriterLock(path):
            pass
    assert not second.lock_path.exists()


def _multilevel(tmp_path, kind: str, scheme: str, steps: int = 12):
    from conftest import SMALL_ANY

    key = "grid.scheme" if kind == "grid" else "spectral.scheme"
    overrides = [*SMALL_ANY, f'discretization="{kind}"', f'{key}="{scheme}"', f"time.steps={steps}"]
    overrides += ["output.checkpoint_every=5", "output.plot=false", 'output.progress="off"']
    return build.start(load_config(None, overrides), tmp_path / f"{kind}.h5")


@pytest.mark.parametrize("kind, scheme", [("grid", "bdf2"), ("spectral", "sbdf2")])
@pytest.mark.parametrize("damage", ["delete", "nan", "inf-cell"])
def test_a_damaged_history_of_a_multilevel_scheme_is_refused_naming_it(tmp_path, kind, scheme, damage):
    """NaN marks a level that does not exist yet (step 0); at step 12 the previous density must exist and be
    finite: a missing or damaged one is refused by name, not taken as a restart of the scheme."""
    path = _multilevel(tmp_path, kind, scheme)
    with h5py.File(path, "r+") as f:
        if damage == "delete":
            del f["fields/mu_previous"]
        else:
            value = f["fields/mu_previous/value"]
            row = value[-1]
            if damage == "nan":
                row[...] = np.nan
            else:
                row.flat[3] = np.inf
            value[-1] = row
    words = "is missing" if damage == "delete" else "holds NaN or infinite values"
    with pytest.raises(CheckpointError, match=f"at step 12 .* saved as 'mu_previous', which {words}"):
        build.resume(path, steps=3)


@pytest.mark.parametrize("kind, scheme", [("grid", "bdf2"), ("spectral", "sbdf2")])
def test_a_state_array_with_fewer_rows_than_frames_is_refused_by_name(tmp_path, kind, scheme):
    """Issue 37 (low): a history cut to fewer rows than the committed frames gave an IndexError traceback from
    h5py; every reader (load, info, resume) now names the array and the counts."""
    from mfld import load

    path = _multilevel(tmp_path, kind, scheme)
    with h5py.File(path, "r+") as f:
        rows = f["fields/mu_previous/value"][:1]
        del f["fields/mu_previous/value"]
        f["fields/mu_previous/value"] = rows
    message = r"/fields/mu_previous/value holds 1 rows, fewer than the \d+ committed frames"
    with pytest.raises(CheckpointError, match=message):
        build.resume(path, steps=3)
    with pytest.raises(CheckpointError, match=message):
        load(path)


def test_a_multilevel_run_resumed_at_step_0_takes_its_nan_levels_as_not_yet_existing(tmp_path):
    path = _multilevel(tmp_path, "grid", "bdf2", steps=0)
    build.resume(path, steps=6)
    (tmp_path / "straight").mkdir()
    straight = _multilevel(tmp_path / "straight", "grid", "bdf2", steps=6)
    np.testing.assert_array_equal(load(path).density, load(straight).density)
