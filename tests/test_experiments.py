"""Quick modes of the paper's experiments: their qualitative claims hold with a margin."""

from __future__ import annotations

import json

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
    rows = _load(reports, "paper-figure-1")["data"]["rows"]
    df_final = [r[4] for r in rows]
    assert all(b > a for a, b in zip(df_final, df_final[1:], strict=False)), df_final


def test_label_noise_procedure_lowers_df(reports):
    fig2 = _load(reports, "paper-figure-2")["data"]["rows"]
    assert all(r[1] < fig2[0][1] for r in fig2[1:])
    grid_vs_particles = _load(reports, "label-noise")
    assert grid_vs_particles["passed"], grid_vs_particles["claims"]


def test_sample_complexity_table(reports):
    data = _load(reports, "sample-complexity")["data"]
    assert len(data["rows"]) == len(data["config"]["dims"]) * len(data["config"]["ns"])
    assert all(0 <= v for row in data["rows"] for v in row[2:])
