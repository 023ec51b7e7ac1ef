"""Quick modes of the paper's experiments: their qualitative claims hold with a margin."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mfld.solver.cli import main
from mfld.validation.suite import EXPERIMENTS

pytestmark = pytest.mark.slow  # minutes: the quick subset is `pytest -m "not slow"`


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments")
    assert main(["experiment", "all", "--out", str(out)]) == 0
    return out


def _load(out, name):
    return json.loads((out / f"{name}.json").read_text())


def test_every_experiment_writes_its_report(reports):
    summary = json.loads((reports / "summary.json").read_text())
    assert set(summary["checks"]) == set(EXPERIMENTS)
    for name in EXPERIMENTS:
        assert (reports / f"{name}.md").exists() and _load(reports, name)["tables"]


def test_alignment_scales_and_grows(reports):
    data = _load(reports, "alignment")["data"]
    assert -0.7 <= data["slope_A0"] <= -0.3
    for row in data["rows"]:
        assert row[5] > row[4]  # trained kernel alignment above untrained, every d


def test_label_noise_in_the_data_raises_df(reports):
    """Paired over the seeds: the largest sigma's final df above the smallest's by more than 2 standard errors, and
    no step up in sigma lowering it by more than 2 (the quick size does not resolve neighbouring levels)."""
    curves = _load(reports, "paper-figure-1")["data"]["curves"]
    final = [np.array(c["runs"]["degrees_of_freedom"])[:, -1] for c in curves.values()]

    def paired(a, b):
        diff = b - a
        return diff.mean(), diff.std(ddof=1) / np.sqrt(diff.size)

    rise, se = paired(final[0], final[-1])
    assert rise > 2 * se, (rise, se)
    assert all(d > -2 * e for d, e in (paired(a, b) for a, b in zip(final, final[1:], strict=False)))


def test_label_noise_procedure_lowers_df(reports):
    fig2 = _load(reports, "paper-figure-2")["data"]["rows"]
    assert all(r[1] < fig2[0][1] for r in fig2[1:])
    grid_vs_particles = _load(reports, "label-noise")
    assert grid_vs_particles["passed"], grid_vs_particles["claims"]


def test_the_timescales_and_label_noise_sweep_claims_hold(reports):
    """Their claims are the theory's tests on the data (the order in 1/r, paired differences against the grid)."""
    for name in ("timescales", "label-noise-sweep"):
        report = _load(reports, name)
        assert report["passed"], report["claims"]
    orders = _load(reports, "timescales")["data"]["orders"]
    assert 0.5 < orders["prior"]["q"] < 1.5


def test_sample_complexity_table(reports):
    data = _load(reports, "sample-complexity")["data"]
    assert len(data["rows"]) == len(data["config"]["dims"]) * len(data["config"]["ns"])
    assert all(0 <= v for row in data["rows"] for v in row[2:])


SMALL_FIGURE_2 = [
    "--set",
    "n=120",
    "--set",
    "N=200",
    "--set",
    "steps=300",
    "--set",
    "every=50",
    "--set",
    "seeds=2",
    "--set",
    "label_noise=[0.0, 0.5, 1.0, 2.0]",
    "--jobs",
    "2",
]


def _numbers(path):
    report = json.loads(path.read_text())
    return {k: report[k] for k in ("claims", "tables", "data")}


def test_an_interrupted_experiment_run_again_ends_with_the_uninterrupted_report(tmp_path):
    """Ctrl-C once some runs are saved (a condition, not a time); the same command then reruns only the others."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["experiment", "paper-figure-2", "--out", str(whole), *SMALL_FIGURE_2]) == 0
    command = [sys.executable, "-m", "mfld", "experiment", "paper-figure-2", "--out", str(cut), *SMALL_FIGURE_2]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    saved = cut / "jobs" / "paper-figure-2"
    deadline = time.monotonic() + 600
    while not list(saved.glob("*.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "the same command continues" in stderr
    done = len(list(saved.glob("*.json")))
    assert 0 < done < 8 and not (cut / "paper-figure-2.json").exists()
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"{done} of 8 job results read back" in again.stderr
    assert _numbers(cut / "paper-figure-2.json") == _numbers(whole / "paper-figure-2.json")
