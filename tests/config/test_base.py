"""``base = "other.toml"`` in a run configuration: the base first, the file's keys over it, recursively."""

from __future__ import annotations

import pytest

from mfld.config import ConfigError, load_config
from mfld.solver.cli import main


def test_a_file_extends_its_base_which_extends_a_shipped_configuration(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.toml").write_text(
        'base = "grid-1d"\n[data]\nsource = "x.csv"\n[model]\nlam = 0.5\nlam_a = 3.0\n'
    )
    (tmp_path / "a.toml").write_text('base = "sub/b.toml"\n[model]\nlam = 0.02\n')
    config = load_config(tmp_path / "a.toml", ["model.lam_w=2.0"])
    shipped = load_config("grid-1d")
    assert config["discretization"] == "grid" and config["grid"] == shipped["grid"]  # from grid-1d
    assert (config["model"]["lam"], config["model"]["lam_a"], config["model"]["lam_w"]) == (0.02, 3.0, 2.0)
    assert config["data"]["source"] == str(tmp_path / "sub" / "x.csv")  # relative to the file that names it


def test_a_cycle_of_bases_is_refused_naming_it(tmp_path):
    (tmp_path / "a.toml").write_text('base = "b.toml"\n')
    (tmp_path / "b.toml").write_text('base = "./a.toml"\n')
    with pytest.raises(ConfigError, match=r"extend each other in a cycle \(.*a.toml -> .*b.toml -> .*a.toml\)"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "self.toml").write_text('base = "self.toml"\n')
    with pytest.raises(ConfigError, match="in a cycle"):
        load_config(tmp_path / "self.toml")


@pytest.mark.parametrize(
    "line, match",
    [
        ("base = 3", "base must name a configuration file"),
        ('base = ""', "base must name a configuration file"),
        ('base = "nowhere.toml"', r"base = 'nowhere.toml' is neither a file .* nor a shipped configuration"),
    ],
)
def test_a_bad_base_is_one_line_naming_the_file(tmp_path, line, match):
    path = tmp_path / "a.toml"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_mfld_run_takes_a_file_with_a_base(tmp_path, capsys):
    (tmp_path / "small.toml").write_text(
        '[data]\nd = 3\nn = 30\nn_test = 20\n[particles]\nN = 40\n[output]\nplot = false\nprogress = "off"\n'
    )
    (tmp_path / "mine.toml").write_text('base = "small.toml"\n[time]\nsteps = 4\n')
    assert main(["-q", "run", str(tmp_path / "mine.toml"), "--out", str(tmp_path / "r.h5")]) == 0
    from mfld.storage import CheckpointReader

    stored = CheckpointReader(tmp_path / "r.h5").config
    assert (stored["particles"]["N"], stored["time"]["steps"]) == (40, 4)


@pytest.mark.parametrize(
    "key, suggestion",
    [
        ("model.lamda", "'model.lam_a' or 'model.lam'"),  # issue 36: no suggestion before
        ("output.checkpoint_evry", "'output.checkpoint_every'"),
        ("lam", "'model.lam'"),  # the right name in another section
    ],
)
def test_a_mistyped_key_gets_the_keys_it_was_probably_meant_to_be(key, suggestion):
    with pytest.raises(ConfigError, match=f"unknown configuration key '{key}' \\(did you mean {suggestion}\\?\\)"):
        load_config(None, [f"{key}=0.1"])


def test_particle_times_are_steps_times_eta_exactly():
    import mfld

    run = mfld.run(set={"data.n": 30, "particles.N": 20, "time.steps": 400, "time.eta": 0.1})
    # A sum of 400 x 0.1 is 40.0000000000003 (and of 250 x 0.1, 25.000000000000085): what the times were.
    assert run.series["time"][-1] == 40.0 and run.record.times.tolist() == [0.0, 25.0, 40.0]
