"""What a new user meets first: version, messages, Ctrl-C in the report commands, plots that leave Matplotlib alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from mfld.config import ConfigError, load_config
from mfld.discretizations.loop import Interrupted
from mfld.model.registry import Registry
from mfld.solver.cli import main
from mfld.validation.report import Report
from mfld.validation.suite import run_checks


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("mfld ")


def test_plotting_leaves_the_matplotlib_backend_alone(tmp_path):
    script = (
        "import matplotlib; matplotlib.use('svg'); import mfld.solver.plotting, mfld.validation.report; "
        "print(matplotlib.get_backend())"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_a_directory_or_binary_file_as_configuration_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "x.toml"
    binary.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(binary)


def test_a_report_without_claims_is_not_counted_as_passed(tmp_path):
    empty = Report("numbers", "numbers only")
    empty.table("t", ["a"], [[1]])
    assert empty.status == "no claims" and not empty.passed
    assert "No claim of the theory is tested here" in empty.markdown()
    failing = Report("f", "f")
    failing.claim("a claim the numbers contradict", False)
    assert failing.status == "failed"


def test_ctrl_c_between_checks_keeps_what_was_done(tmp_path):
    def first(full: bool, seed: int) -> Report:
        r = Report("first", "the first check")
        r.claim("holds", True)
        return r

    def second(full: bool, seed: int) -> Report:
        raise KeyboardInterrupt

    registry = Registry("check", [])
    registry.add("first", first, "")
    registry.add("second", second, "")
    with pytest.raises(Interrupted, match="interrupted during second; the 1 finished report"):
        run_checks(["all"], tmp_path, registry=registry)
    assert (tmp_path / "first.md").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["interrupted"] == "second" and summary["checks"]["first"]["status"] == "passed"


@pytest.mark.slow
def test_ctrl_c_in_mfld_experiment_ends_cleanly(tmp_path):
    """SIGINT while the second experiment runs: exit 130, one line on stderr, the first report and the summary kept.

    The signal is sent once the second experiment is seen running (its first of ten runs saved), not at a fixed
    time after the first report: on a busy machine the second may not have started a second later."""
    out = tmp_path / "rep"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mfld.solver.cli", "experiment", "alignment", "paper-figure-1", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    second = out / "jobs" / "paper-figure-1"
    while not (out / "alignment.json").exists() or not any(second.glob("*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted during paper-figure-1" in stderr
    summary = (out / "summary.md").read_text()
    assert "[alignment](alignment.md)" in summary and "paper-figure-1 | interrupted" in summary


def test_quiet_keeps_results_and_drops_progress(capsys):
    assert (
        main(
            [
                "-q",
                "run",
                "--out",
                "q.h5",
                "--set",
                "time.steps=2",
                "--set",
                "output.plot=false",
                "--set",
                "particles.N=20",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "checkpoint: q.h5" in captured.out and captured.err == ""
