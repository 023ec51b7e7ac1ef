"""The quick validation suite: the theory's claims hold, and the checks can detect their failure."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfld.validation.checks import convexity
from mfld.validation.suite import CHECKS, run_checks

pytestmark = pytest.mark.slow  # minutes: the quick subset is `pytest -m "not slow"`


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    return out, {r.name: r for r in run_checks(["all"], out)}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_quick_check_confirms_the_theory(reports, name):
    out, by_name = reports
    report = by_name[name]
    failed = [text for text, ok in report.claims if not ok]
    assert report.claims and not failed, failed
    payload = json.loads((out / f"{name}.json").read_text())
    assert payload["passed"] and payload["tables"]
    assert (out / f"{name}.md").read_text().startswith("## ")
    for fig_name, _ in report.figures:
        assert (out / f"{name}-{fig_name}.png").stat().st_size > 5000


def test_summary_lists_every_check(reports):
    out, _ = reports
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["checks"]) == set(CHECKS)
    assert "| check | claims held | wall s |" in (out / "summary.md").read_text()


class _Concave:
    """The functional with its energy negated: -G is concave in the measure."""

    def __init__(self, F):
        self.F, self.problem = F, F.problem

    def features(self, W):
        return self.F.features(W)

    def fit(self, *a, **k):
        return self.F.fit(*a, **k)

    def energy(self, fit):
        return {k: -v for k, v in self.F.energy(fit).items()}

    def potential(self, fit, W=None):
        return -self.F.potential(fit, W)


@pytest.mark.parametrize("kind", ["grid", "particles"])
def test_convexity_check_detects_a_concave_functional(kind):
    F = convexity._functional("tanh_bias", 1, 0.0, 0)
    s = np.linspace(0, 1, 11)
    chord, lin, _ = convexity.measure_pairs(_Concave(F), kind, 3, np.random.default_rng(0), s)
    assert chord > 1e-6 and lin > 1e-6
    chord, lin, _ = convexity.measure_pairs(F, kind, 3, np.random.default_rng(0), s)
    assert chord < 1e-10 and lin < 1e-10


def test_unknown_check_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"unknown name\(s\) \[.convexitty.\]; choose from"):
        run_checks(["convexitty"], tmp_path)
