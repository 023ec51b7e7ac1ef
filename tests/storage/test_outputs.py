"""Output formats (``output.formats``, ``mfld export``): a conversion of the checkpoint that holds exactly what the
checkpoint holds, written whole or not at all, and a new format is one registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import SMALL_ANY, SMALL_RUN
from mfld.config import ConfigError, load_config
from mfld.config.outputs import OUTPUTS, export
from mfld.solver import build
from mfld.solver.cli import main
from mfld.storage import CheckpointReader


def _run(tmp_path: Path, overrides: list[str], name: str = "r.h5") -> Path:
    return build.start(load_config(None, overrides), tmp_path / name)


@pytest.mark.parametrize(
    "overrides",
    [[*SMALL_RUN, "time.steps=20"], [*SMALL_ANY, 'discretization="grid"', "time.steps=12", 'output.progress="off"']],
    ids=["particles", "grid"],
)
def test_the_npz_output_holds_what_the_checkpoint_holds(tmp_path, overrides):
    path = _run(tmp_path, [*overrides, 'output.formats=["npz"]', "output.plot=false", "output.checkpoint_every=5"])
    reader = CheckpointReader(path)
    f = np.load(tmp_path / "r.npz")
    np.testing.assert_array_equal(f["step"], reader.steps)
    np.testing.assert_array_equal(f["time"], reader.times)
    measure = "positions" if reader.kind == "particles" else "density"
    assert f[measure].shape[0] == reader.steps.size >= 3
    for k, step in enumerate(reader.steps):
        snap = reader.snapshot(int(step))
        np.testing.assert_array_equal(f[measure][k], snap.points if measure == "positions" else snap.density)
    if measure == "density":
        for k, axis in enumerate(reader.grid().axes()):
            np.testing.assert_array_equal(f[f"axis_{k}"], axis)
    for name, el in reader.observables().items():
        for part, suffix in (("value", ""), ("step", ".step"), ("time", ".time")):
            np.testing.assert_array_equal(f[f"observable.{name}{suffix}"], el[part])
    for name, value in reader.data.items():
        np.testing.assert_array_equal(f[f"data.{name}"], value)
    assert str(f["config"]) == reader.config_text and str(f["kind"]) == reader.kind


def test_a_new_format_is_one_registration_and_is_written_whole_or_not_at_all(tmp_path):
    calls = []

    def steps_txt(checkpoint: Path, target: Path) -> None:
        calls.append(target)
        np.savetxt(target, CheckpointReader(checkpoint).steps, fmt="%d")

    def broken(checkpoint: Path, target: Path) -> None:
        target.write_text("half")
        raise OSError(28, "No space left on device")

    with OUTPUTS.registered("txt", steps_txt, "the saved steps"), OUTPUTS.registered("bad", broken):
        path = _run(tmp_path, [*SMALL_RUN, 'output.formats=["txt"]'])
        assert np.loadtxt(tmp_path / "r.txt").tolist() == CheckpointReader(path).steps.tolist()
        assert calls[0].name.endswith(".partial")  # written aside, then renamed over the target
        with pytest.raises(OSError, match="No space"):
            export(path, "bad")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5", "r.txt"]  # no r.bad, no partial file
    with pytest.raises(ConfigError, match=r"'output.formats' must be a list whose items are each one of 'npz'"):
        load_config(None, ['output.formats=["txt"]'])


def test_export_from_the_command_line_and_its_refusals(tmp_path, capsys):
    path = _run(tmp_path, [*SMALL_RUN, "time.steps=10"])
    assert main(["export", str(path), "--format", "npz", "--out", str(tmp_path / "x.npz")]) == 0
    assert np.load(tmp_path / "x.npz")["positions"].shape[1:] == (64, 5)
    assert main(["export", str(path), "--format", "csv"]) == 2
    assert "--format 'csv' is no output format; the formats are npz" in capsys.readouterr().err
    with pytest.raises(ValueError, match="would overwrite its own checkpoint"):
        export(path, "npz", path)


def test_a_resumed_run_writes_its_formats_again(tmp_path):
    path = _run(tmp_path, [*SMALL_RUN, "time.steps=10", 'output.formats=["npz"]'])
    build.resume(path, 10)
    assert np.load(tmp_path / "r.npz")["step"][-1] == 20
