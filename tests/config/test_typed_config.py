"""The typed run configuration: each part is its component's options, read once; the functional is built once; a
time scheme's and an objective's own options reach them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

from conftest import SMALL_RUN
from mfld.config import assembly, flatten, load_config
from mfld.config.typed import RunConfig, typed
from mfld.discretizations.grid import GRID_SCHEMES, ImplicitEuler
from mfld.discretizations.particles import ParticleOptions
from mfld.model.dual_solve import DualSolveOptions
from mfld.model.options import keys_of, positive
from mfld.solver import build

SMALL_GRID = [
    'discretization="grid"',
    'data.target="single-index"',
    "data.d=1",
    "data.n=40",
    "data.n_test=20",
    'model.feature="tanh"',
    "model.lam=0.05",
    "model.lam_a=1.0",
    "model.lam_w=1.0",
    "grid.cells=32",
    "grid.gap=false",
    "time.eta=0.05",
    "time.steps=3",
    "output.plot=false",
    'output.progress="off"',
]


def test_each_part_is_its_components_options_read_from_the_keys():
    config = load_config(None, [*SMALL_RUN, "particles.solve=pcg", "particles.solve_tol=1e-9", "time.eta=0.3"])
    rc = typed(config)
    assert isinstance(rc, RunConfig) and typed(rc) is rc and rc.tree is config
    assert isinstance(rc.discretization, ParticleOptions) and isinstance(rc.objective, DualSolveOptions)
    assert (rc.objective.solve, rc.objective.solve_tol) == ("pcg", 1e-9)
    assert rc.discretization.eta == rc.time.eta == 0.3 and rc.discretization.scheme_options is None
    flat = flatten(config)
    for part in (rc.run, rc.data, rc.model, rc.objective, rc.discretization, rc.stationary, rc.time, rc.output):
        for name, key in keys_of(type(part)).items():
            assert getattr(part, name) == flat[key], key
    assert rc.flat == flat


def test_a_run_builds_its_functional_once(monkeypatch):
    made = []
    real = assembly.make_functional

    def counting(*args, **kwargs):
        made.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(assembly, "make_functional", counting)
    build.run_in_memory(load_config(None, [*SMALL_RUN, "time.steps=2"]))
    assert made == ["two-timescale"]


@dataclass(frozen=True, kw_only=True)
class _Relaxed:
    section: ClassVar[str] = "grid"
    relax: float = positive(1.0, "relaxed Euler: the fraction of the implicit step taken")


class _RelaxedEuler(ImplicitEuler):
    """A scheme with an option of its own: ``m + relax (m_euler - m)``."""

    seen: ClassVar[list[float]] = []

    def __init__(self, history=(), options=None):
        super().__init__(history)
        self.relax = options.relax
        self.seen.append(options.relax)

    def advance(self, fv, V):
        return fv.density + self.relax * (super().advance(fv, V) - fv.density)


def test_a_time_scheme_gets_its_own_options_from_the_configuration():
    with GRID_SCHEMES.registered("relaxed", _RelaxedEuler, "relaxed Euler", options=_Relaxed):
        config = load_config(None, [*SMALL_GRID, 'grid.scheme="relaxed"', "grid.relax=0.5"])
        assert typed(config).discretization.scheme_options == _Relaxed(relax=0.5)
        half = build.run_in_memory(config).system
        full = build.run_in_memory(load_config(None, SMALL_GRID)).system
    assert _RelaxedEuler.seen == [0.5]
    assert half.density.shape == full.density.shape and abs(half.density - full.density).max() > 0
    with pytest.raises(Exception, match="unknown configuration key 'grid.relax'"):
        load_config(None, [*SMALL_GRID, "grid.relax=0.5"])
