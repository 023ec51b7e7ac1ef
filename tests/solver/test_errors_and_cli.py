"""Bad input is refused with a message naming the parameter; the CLI works end to end."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from conftest import small_problem
from mfld.config import SCHEMA, ConfigError, load_config, observables_table, reference_table
from mfld.discretizations.kinds import DISCRETIZATIONS
from mfld.discretizations.particles import Particles
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional
from mfld.solver.cli import main

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["X", "Y"])
def test_non_finite_data_is_refused(bad, where, rng):
    X, Y = rng.standard_normal((10, 2)), rng.standard_normal(10)
    (X if where == "X" else Y).flat[3] = bad
    with pytest.raises(ValueError, match=rf"^{where} contains 1 NaN or infinite"):
        Problem(X, Y, "tanh_bias", 0.1, 1.0, 1.0)


@pytest.mark.parametrize("name", ["lam", "lam_a", "lam_w"])
@pytest.mark.parametrize("value", [0.0, -1.0, np.nan])
def test_non_positive_hyper_parameters_are_refused(name, value, rng):
    kw = {"lam": 0.1, "lam_a": 1.0, "lam_w": 1.0, name: value}
    with pytest.raises(ValueError, match=rf"^{name} must be a finite number > 0"):
        Problem(rng.standard_normal((10, 2)), rng.standard_normal(10), "tanh_bias", **kw)


def test_mismatched_shapes_are_refused(rng):
    with pytest.raises(ValueError, match="X has 10 rows but Y has 9"):
        Problem(rng.standard_normal((10, 2)), rng.standard_normal(9), "tanh", 0.1, 1.0, 1.0)
    with pytest.raises(ValueError, match="X_test has 3 columns but X has 2"):
        Problem(
            rng.standard_normal((10, 2)),
            rng.standard_normal(10),
            "tanh",
            0.1,
            1.0,
            1.0,
            rng.standard_normal((5, 3)),
            rng.standard_normal(5),
        )
    pb = small_problem()
    with pytest.raises(ValueError, match=r"points must have shape \(N, p=4\)"):
        TwoTimescaleFunctional(pb).fit(rng.standard_normal((5, 3)), np.full(5, 0.2))


def test_unknown_feature_map_is_refused(rng):
    with pytest.raises(ValueError, match="unknown feature map 'relu6'; choose one of"):
        Problem(rng.standard_normal((10, 2)), rng.standard_normal(10), "relu6", 0.1, 1.0, 1.0)


def test_unstable_step_is_refused(rng):
    pb = small_problem(lam=0.5, lam_w=4.0)  # lam_w_bar = 2
    F = TwoTimescaleFunctional(pb)
    with pytest.raises(ValueError, match=r"time.eta = 0.6 is too large for stability.*use time.eta < 0.5"):
        Particles(F, pb.sample_prior(10, rng), 0.6, rng)


def test_non_finite_positions_are_refused(rng):
    pb = small_problem()
    W = pb.sample_prior(10, rng)
    W[4, 1] = np.nan
    system = Particles(TwoTimescaleFunctional(pb), W, 0.1, rng)
    with pytest.raises(ValueError, match="points contain NaN or infinite values.*reduce time.eta"):
        system.step()


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.lamb=0.1", "unknown configuration key 'model.lamb'"),
        ("lam=0.1", r"unknown configuration key 'lam' \(did you mean 'model.lam'\?\)"),
        ("model.lam=-1", "'model.lam' must be a finite number > 0"),
        ('model.lam="big"', "'model.lam' must be a finite number > 0"),
        ("particles.N=1.5", "'particles.N' must be an integer >= 2"),
        ("particles.langevin=1", "'particles.langevin' must be bool"),
        ("model.feature=relu6", "'model.feature' must be a registered feature map, an installed plug-in"),
        ("time.steps", "--set expects key=value"),
    ],
)
def test_bad_configuration_names_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\nlam = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    bad.write_text("[model]\nlam = 0.01\n[particle]\nN = 5\n")
    with pytest.raises(ConfigError, match="'particle.N'"):
        load_config(bad)


def test_readme_configuration_reference_is_generated_from_the_registries():
    """The README's table is `python -m mfld.config`: every key, default and registered choice."""
    text = README.read_text().split("## Configuration reference")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `([A-Za-z_.]+)` \|", text, flags=re.M))
    assert documented == set(SCHEMA), sorted(documented ^ set(SCHEMA))
    assert reference_table() in text, "regenerate the README's table with `python -m mfld.config`"
    for name in DISCRETIZATIONS:
        assert f"`{name}`" in reference_table()
    assert observables_table() in README.read_text(), "regenerate with `python -m mfld.config --observables`"


def test_cli_run_info_plot_resume(tmp_path, capsys):
    out = tmp_path / "cli.h5"
    common = [
        "--set",
        "data.n=30",
        "--set",
        "particles.N=40",
        "--set",
        "time.steps=12",
        "--set",
        "output.checkpoint_every=6",
        "--set",
        "output.metrics_every=3",
        "--set",
        "data.d=3",
    ]
    assert main(["run", "--out", str(out), *common]) == 0
    assert out.exists() and out.with_suffix(".png").stat().st_size > 10_000
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "frames:          3 (steps 0 .. 12" in text and "kernel_alignment" in text
    assert "n=30 samples, d=3 inputs, T=1 target(s)" in text and "particles:       N=40 (euler-maruyama" in text
    assert main(["resume", str(out), "--steps", "6"]) == 0
    assert main(["plot", str(out), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").exists()
    assert main(["run", "--out", str(out), *common]) == 2  # refuses to overwrite
    assert "mfld resume" in capsys.readouterr().err
    assert main(["run", "--set", "model.lam=-2"]) == 2
    assert "'model.lam' must be a finite number > 0" in capsys.readouterr().err
    (tmp_path / "junk.h5").write_text("x")
    assert main(["info", str(tmp_path / "junk.h5")]) == 2


def test_classical_objective_runs_from_the_cli(tmp_path):
    out = tmp_path / "cl.h5"
    args = [
        "run",
        "--out",
        str(out),
        "--set",
        "model.objective=classical",
        "--set",
        "data.n=30",
        "--set",
        "particles.N=40",
        "--set",
        "time.steps=10",
        "--set",
        "output.plot=false",
        "--set",
        "data.d=3",
        "--set",
        "time.eta=0.05",
        "--set",
        "model.lam=0.05",
    ]
    assert main(args) == 0
    from mfld.storage import CheckpointReader, load

    snap = load(out)
    assert snap.points.shape == (40, 1 + 4)  # (a, w) with w = (u, b) in R^4
    U = CheckpointReader(out).observables()["U"]["value"]
    assert U[-1] < U[0]


def test_a_file_deleted_under_its_writer_stops_the_run_by_name(tmp_path):
    """Issue 37 (low): `rm FILE.h5` under a running writer ended with HDF5's "unable to open file" text."""
    from conftest import SMALL_RUN
    from mfld.solver import build
    from mfld.storage import CheckpointError

    path = tmp_path / "gone.h5"

    class Remove:
        def start(self, system) -> None:
            pass

        def observe(self, system) -> None:
            if system.step_count == 7:
                path.unlink()

        def finish(self, system, interrupted: bool) -> None:
            pass

    config = load_config(None, [*SMALL_RUN, "time.steps=20", "output.checkpoint_every=5"])
    with pytest.raises(CheckpointError, match="was deleted or moved while this run was writing it"):
        build.start(config, path, observers=[Remove()])
    assert not path.exists()


def test_a_configuration_that_is_not_a_regular_file_is_refused(capsys):
    """Issue 37 (low): `mfld run /dev/zero` read forever (reported as an empty error)."""
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    assert main(["run", "/dev/zero"]) == 2
    assert "'/dev/zero' is not a regular file" in capsys.readouterr().err


def test_damaged_steps_and_data_of_the_wrong_width_are_named(tmp_path, capsys):
    """Issue 37 (low): a step dataset of text gave numpy's UFuncTypeError; X with d - 1 columns failed in plot with
    numpy's matmul error; a run of 0 steps could not be plotted."""
    import h5py

    from conftest import SMALL_RUN
    from mfld.solver import build

    path = build.start(load_config(None, [*SMALL_RUN, "time.steps=4", "output.checkpoint_every=2"]), tmp_path / "a.h5")
    steps = tmp_path / "steps.h5"
    steps.write_bytes(path.read_bytes())
    with h5py.File(steps, "r+") as f:
        el = f["particles/mu/position"]
        rows = el["step"].shape[0]
        del el["step"]
        el["step"] = np.array(["a"] * rows, dtype="S3")
    assert main(["info", str(steps)]) == 2
    assert "/particles/mu/position/step has dtype |S3, not integers" in capsys.readouterr().err
    narrow = tmp_path / "narrow.h5"
    narrow.write_bytes(path.read_bytes())
    with h5py.File(narrow, "r+") as f:
        X = f["parameters/data/X"][()]
        del f["parameters/data/X"]
        f["parameters/data/X"] = X[:, :-1]
    assert main(["plot", str(narrow)]) == 2
    assert f"/parameters/data/X has {X.shape[1] - 1} columns, the configuration's data.d is {X.shape[1]}" in (
        capsys.readouterr().err
    )
    empty = build.start(load_config(None, [*SMALL_RUN, "time.steps=0"]), tmp_path / "zero.h5")
    assert main(["plot", str(empty)]) == 0 and empty.with_suffix(".png").stat().st_size > 0


def test_the_memory_refusal_names_the_dimension_with_the_count():
    """Issue 37 (low): data.d = 10^8 was blamed on a count of samples alone (earlier on particles.N)."""
    from mfld.config.assembly import check_memory

    with pytest.raises(MemoryError, match=r"from data.n(_test)? = \d+ with data.d = 100000000: reduce either"):
        check_memory(load_config(None, ["data.d=100000000", "data.n=30", "particles.N=20"]))


@pytest.mark.parametrize(
    "X, message",
    [
        (np.array([["a", "b"]] * 5), r"X holds text \(dtype <U1\)"),
        (np.array([[1.0, None]] * 5, dtype=object), r"X holds Python objects"),
        ([[1.0, 2.0]] * 5, r"X must be an array .* got a list: pass numpy.asarray\(X, dtype=float\)"),
        (np.ones((5, 2), dtype=int), r"X holds int64 numbers"),
    ],
)
def test_data_that_are_not_arrays_of_floats_are_named(X, message):
    """Issue 37 (low): text, None and plain lists reached numpy's own errors, naming nothing."""
    with pytest.raises(TypeError, match=message):
        Problem(X, np.zeros(5), "tanh", 0.1, 1.0, 1.0)
