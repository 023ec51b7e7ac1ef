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
