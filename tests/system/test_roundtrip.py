"""Every registered discretisation x time scheme survives its file: k steps written, read back and resumed for k
more equal a straight 2k-step run bit for bit, and ``mfld info`` and ``mfld plot`` read the file.

A discretisation registered at test time, exactly as the README's "Where to add" table says, is held to the
same: the storage asks the registry whether a kind holds particles or a density.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import SMALL_ANY
from mfld.config import load_config
from mfld.discretizations.grid import FiniteVolume
from mfld.discretizations.kinds import DISCRETIZATIONS, Discretization
from mfld.discretizations.state import existing
from mfld.solver import build
from mfld.solver.cli import main
from mfld.storage import CheckpointError, CheckpointReader

K = 4
SMALL = [
    *SMALL_ANY,
    f"output.checkpoint_every={K}",
    "output.metrics_every=2",
    "output.plot=false",
    'output.progress="off"',
]


def _cases() -> list[tuple[str, str]]:
    return [(kind, scheme) for kind, spec in DISCRETIZATIONS.items() for scheme in spec.schemes]


def _config(kind: str, scheme: str, steps: int, extra: tuple[str, ...] = ()) -> dict:
    overrides = [*SMALL, f'discretization="{kind}"', f"time.steps={steps}", *extra]
    spec = DISCRETIZATIONS[kind]
    overrides.append(f'{spec.keys()["scheme"]}="{scheme}"')
    return load_config(None, overrides)


def _frames(path: Path) -> dict[str, np.ndarray]:
    """Every stored frame and record, by dataset, up to the committed counts."""
    out: dict[str, np.ndarray] = {}
    frames, records = CheckpointReader(path).frames, CheckpointReader(path).records
    with h5py.File(path, "r") as f:

        def keep(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] in ("step", "time", "value"):
                out[name] = obj[: records if name.startswith("observables/") else frames]

        f.visititems(keep)
    return out


def _round_trip(kind: str, scheme: str, folder: Path, extra: tuple[str, ...] = ()) -> None:
    straight = build.start(_config(kind, scheme, 2 * K, extra), folder / "straight.h5")
    half = build.start(_config(kind, scheme, K, extra), folder / "half.h5")
    build.resume(half, steps=K)
    a, b = _frames(straight), _frames(half)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{kind}/{scheme}: {name} after resume")
    assert CheckpointReader(half).steps.tolist() == [0, K, 2 * K]
    assert main(["-q", "info", str(half)]) == 0
    assert main(["-q", "plot", str(half)]) == 0
    assert half.with_suffix(".png").stat().st_size > 0
    assert (folder / "half-measure.png").stat().st_size > 0


@pytest.mark.parametrize("kind, scheme", _cases())
def test_write_read_resume_equals_a_straight_run(kind, scheme, tmp_path):
    _round_trip(kind, scheme, tmp_path)


@pytest.mark.parametrize(
    "kind, scheme, extra",
    [
        ("grid", "implicit-euler", ()),
        ("grid", "implicit-euler", ('model.feature="tanh_bias"', 'grid.linear_solver="splitting"')),  # p = 2
        ("spectral", "imex-euler", ()),
    ],
)
def test_adaptive_steps_resume_the_same_sequence(kind, scheme, extra, tmp_path):
    # A first step far too large: the controller rejects, shrinks and grows again, and all of it must survive.
    _round_trip(kind, scheme, tmp_path, ("time.adaptive=true", "time.eta=5.0", "time.tol=0.005", *extra))
    recorded = CheckpointReader(tmp_path / "half.h5").observables()
    sizes, rejected = recorded["step_size"]["value"], recorded["rejected_steps"]["value"]
    assert rejected[-1] > 0 and len(set(sizes[1:].tolist())) > 1  # it rejected, and the steps varied
    times = CheckpointReader(tmp_path / "half.h5").times
    assert times[-1] < 2 * K * 5.0  # the time is the sum of the steps taken, not steps x time.eta


class _CopyOfFiniteVolume(FiniteVolume):
    """A density discretisation registered by a user: the finite volumes under a new name."""

    kind = "grid-copy"


def _copy_entry() -> Discretization:
    """The finite volumes' registry entry with the renamed class: a user's discretisation."""
    spec = DISCRETIZATIONS["grid"]
    return Discretization(
        spec.options,
        _CopyOfFiniteVolume.build,
        _CopyOfFiniteVolume.check,
        spec.schemes,
        spec.state_type,
        _CopyOfFiniteVolume.memory,
    )


def test_a_discretisation_registered_at_test_time_survives_its_file(tmp_path):
    entry = _copy_entry()
    with DISCRETIZATIONS.registered("grid-copy", entry, "finite volumes, renamed"):
        _round_trip("grid-copy", "implicit-euler", tmp_path)


def test_a_file_of_a_kind_no_discretisation_has_is_refused_by_name(tmp_path):
    entry = _copy_entry()
    with DISCRETIZATIONS.registered("grid-copy", entry, "finite volumes, renamed"):
        path = build.start(_config("grid-copy", "implicit-euler", K), tmp_path / "copy.h5")
    with pytest.raises(CheckpointError, match="unknown kind of run 'grid-copy'.*once its package is installed"):
        CheckpointReader(path)


V02 = Path(__file__).resolve().parents[1] / "data" / "v0.2"
"""Files of K steps written by mfld 0.2.0.dev1 before states were typed (the storage of commit 7823add)."""


@pytest.mark.parametrize("kind, scheme", [("particles", "euler-maruyama"), ("grid", "bdf2"), ("spectral", "sbdf2")])
def test_a_file_written_by_0_2_resumes_to_the_straight_run(kind, scheme, tmp_path):
    """The straight run of this code to round-off, not bit for bit: the file's frames were computed on another
    machine, whose BLAS kernels round differently (a misread state would differ by a step's change). That a resume
    is bit for bit on one machine is the round trip's test above."""
    old = tmp_path / "old.h5"
    old.write_bytes((V02 / f"{kind}-{scheme}.h5").read_bytes())
    assert CheckpointReader(old).provenance["mfld"] == "0.2.0.dev1"
    had = set(_frames(old))  # an observable added since 0.2 has no records of the old file's steps
    straight = build.start(_config(kind, scheme, 2 * K), tmp_path / "straight.h5")
    build.resume(old, steps=K)
    a, b = _frames(straight), _frames(old)
    assert had <= a.keys() and had <= b.keys()
    density = float(np.nanmax(np.abs(a["fields/mu/value"]))) if "fields/mu/value" in a else 0.0
    for name in had:
        if a[name].dtype.kind != "f":  # steps, times as integers, names: equal
            np.testing.assert_array_equal(b[name], a[name], err_msg=f"{kind}/{scheme}: {name} after resume")
            continue
        scale = float(np.nanmax(np.abs(a[name]), initial=0.0))
        if name.startswith("observables/min_density/"):
            # A value of the density: its round-off is the density's, not 1e-13 of its own largest value (the
            # spectral density's minimum crosses zero: 1e-13 x 9.9e-6 against a difference of 7.4e-17, issue 36).
            scale = max(scale, density)
        np.testing.assert_allclose(
            b[name], a[name], rtol=1e-12, atol=1e-13 * scale, err_msg=f"{kind}/{scheme}: {name} after resume"
        )


class _LeimkuhlerMatthews:
    """``w <- w + eta b(w) + sqrt(2 eta lam) (xi_k + xi_{k+1}) / 2``: a particle scheme with memory (the previous
    step's noise), registered by a user; its first step is Euler-Maruyama's."""

    levels = 1

    def __init__(self, history: tuple[np.ndarray, ...] = ()) -> None:
        self.xi = existing(history[0]) if history else None

    def __call__(self, W, q, drift, eta, lam, xi, step, fit=None):
        out = W + eta * drift(W, q, step, fit)
        if xi is not None:
            out = out + math.sqrt(2.0 * eta * lam) * (xi if self.xi is None else 0.5 * (self.xi + xi))
        self.xi = xi
        return out

    def history(self, like: np.ndarray) -> tuple[np.ndarray, ...]:
        return (np.full_like(like, np.nan) if self.xi is None else np.array(self.xi),)


def test_a_particle_scheme_with_memory_registered_at_test_time_survives_its_file(tmp_path, monkeypatch):
    from mfld.discretizations.particles import PARTICLE_SCHEMES

    with PARTICLE_SCHEMES.registered("lm", _LeimkuhlerMatthews, "Leimkuhler-Matthews"):
        _round_trip("particles", "lm", tmp_path)
    with h5py.File(tmp_path / "half.h5") as f:
        assert f["particles/mu/history/value"].shape[1:] == f["particles/mu/position/value"].shape[1:]
