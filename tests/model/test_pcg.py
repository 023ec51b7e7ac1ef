"""The matrix-free dual solve: the same drift as the exact Cholesky solve, on both sides, through runs and resumes."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import small_problem
from mfld.config import assembly, load_config
from mfld.discretizations import loop
from mfld.model.datasets import make_dataset
from mfld.model.functional import DEFAULT_MEMORY_BUDGET
from mfld.model.observables import degrees_of_freedom, kernel_alignment
from mfld.model.pcg import PreconditionerWarning, pcg
from mfld.model.problem import Problem
from mfld.model.two_timescale import DualSolve, TwoTimescaleFunctional
from mfld.solver import build
from mfld.storage import CheckpointReader, load


def test_pcg_solves_a_spd_system_to_the_tolerance(rng):
    A = rng.standard_normal((60, 60))
    K = A @ A.T + 0.5 * np.eye(60)
    B = rng.standard_normal((60, 3))
    res = pcg(lambda V: K @ V, B, lambda R: R, tol=1e-12, max_iter=500)
    assert res.converged
    assert np.linalg.norm(K @ res.x - B, axis=0).max() <= 1e-12 * np.linalg.norm(B, axis=0).max()
    stalled = pcg(lambda V: K @ V, B, lambda R: R, tol=1e-12, max_iter=3)
    assert not stalled.converged and stalled.iterations == 3


@pytest.mark.parametrize("N", [400, 60])  # n = 120: the n-side system, then the N-side one
@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("budget", [DEFAULT_MEMORY_BUDGET, 8 * 120 * 100])  # whole, or chunks of 100 particles
def test_pcg_drift_equals_the_cholesky_drift(N, T, budget, rng):
    pb = small_problem("tanh_bias", n=120, d=4, T=T)
    exact = TwoTimescaleFunctional(pb)
    it = TwoTimescaleFunctional(pb, budget, solve=DualSolve("pcg", tol=1e-11))
    W = pb.sample_prior(N, rng)
    q = rng.random(N) + 0.5
    q /= q.sum()  # non-uniform weights
    it.fit(W, q)  # the first solve is exact and becomes the preconditioner
    assert len(it.iterations) == 0
    for _ in range(5):  # a few steps' worth of motion: the warm start and the old factor are now approximate
        W = W + 0.05 * rng.standard_normal(W.shape)
        fit_it, fit_ex = it.fit(W, q), exact.fit(W, q)
        assert fit_it.gram is None and fit_it.side == fit_ex.side == ("n" if N >= pb.n else "N")
        g_it, g_ex = it.grad_potential(fit_it), exact.grad_potential(fit_ex)
        assert np.linalg.norm(g_it - g_ex) <= 1e-8 * np.linalg.norm(g_ex)
        assert abs(fit_it.U - fit_ex.U) <= 1e-10 * abs(fit_ex.U)
    assert len(it.iterations) == 5 and 0 < max(it.iterations) <= it.solve.refresh * 4
    # Observables that need the Gram matrix are computed exactly from the same measure.
    assert abs(degrees_of_freedom(it, fit_it) - degrees_of_freedom(exact, fit_ex)) < 1e-9
    assert abs(kernel_alignment(it, fit_it) - kernel_alignment(exact, fit_ex)) < 1e-12


def test_a_stale_preconditioner_is_refreshed(rng):
    pb = small_problem("tanh_bias", n=120, d=4)
    it = TwoTimescaleFunctional(pb, solve=DualSolve("pcg", tol=1e-11, refresh=1))
    W = pb.sample_prior(300, rng)
    q = np.full(300, 1 / 300)
    it.fit(W, q)
    old = it._factor["n"]
    it.fit(W + 0.3 * rng.standard_normal(W.shape), q)  # far from the factored system: more than 1 iteration
    assert it.iterations[-1] > 1
    assert it._factor.get("n") is not old  # dropped (the next solve is exact) or already refactored


SMALL = [
    "data.d=4",
    "data.n=100",
    "data.n_test=50",
    "particles.N=300",
    "time.eta=0.1",
    "model.lam=0.05",
    "output.checkpoint_every=50",
    "output.metrics_every=25",
    "output.plot=false",
    'output.progress="off"',
]


def _run(tmp_path, name, *extra):
    return build.start(load_config(None, SMALL + list(extra)), tmp_path / f"{name}.h5")


def test_a_pcg_run_follows_the_cholesky_run(tmp_path):
    chol = _run(tmp_path, "chol", "time.steps=200", 'particles.solve="cholesky"')
    it = _run(tmp_path, "pcg", "time.steps=200", 'particles.solve="pcg"')
    a, b = load(chol), load(it)
    assert a.step == b.step == 200
    assert np.max(np.abs(a.points - b.points)) < 1e-6
    oa, ob = CheckpointReader(chol).observables(), CheckpointReader(it).observables()
    np.testing.assert_allclose(ob["degrees_of_freedom"]["value"], oa["degrees_of_freedom"]["value"], rtol=1e-9)


def test_a_pcg_run_resumes_bit_for_bit(tmp_path):
    whole = _run(tmp_path, "whole", "time.steps=150", 'particles.solve="pcg"')
    half = _run(tmp_path, "half", "time.steps=100", 'particles.solve="pcg"')
    build.resume(half, steps=50)
    np.testing.assert_array_equal(load(half).points, load(whole).points)
    oa, ob = CheckpointReader(whole).observables(), CheckpointReader(half).observables()
    np.testing.assert_array_equal(oa["U"]["value"], ob["U"]["value"])


def test_without_the_solver_state_in_the_file_a_resume_would_drift(tmp_path, monkeypatch):
    """The stored solver state is what makes the resume exact: restarting the solver instead, the trajectories
    part at round-off level."""
    restore = TwoTimescaleFunctional.restore_solver
    monkeypatch.setattr(TwoTimescaleFunctional, "restore_solver", lambda self, state: restore(self, {}))
    whole = _run(tmp_path, "whole", "time.steps=150", 'particles.solve="pcg"')
    half = _run(tmp_path, "half", "time.steps=100", 'particles.solve="pcg"')
    build.resume(half, steps=50)
    diff = np.max(np.abs(load(half).points - load(whole).points))
    assert 0 < diff < 1e-6


def test_neither_the_checkpoint_steps_nor_the_measurements_change_a_pcg_trajectory(tmp_path):
    """The solver is not restarted at checkpoints, and the exact solves behind df and the alignment leave it be."""
    base = _run(tmp_path, "base", "time.steps=120", 'particles.solve="pcg"')
    other = _run(
        tmp_path,
        "other",
        "time.steps=120",
        'particles.solve="pcg"',
        "output.checkpoint_every=7",
        "output.metrics_every=3",
    )
    np.testing.assert_array_equal(load(other).points, load(base).points)
    resumed = _run(
        tmp_path,
        "resumed",
        "time.steps=77",
        'particles.solve="pcg"',
        "output.checkpoint_every=7",
        "output.metrics_every=3",
    )
    build.resume(resumed, steps=43)
    np.testing.assert_array_equal(load(resumed).points, load(base).points)


def test_a_frame_holds_the_solver_state_it_was_entered_with(tmp_path):
    path = _run(tmp_path, "pcg", "time.steps=60", 'particles.solve="pcg"')
    snap = load(path)
    assert sorted(snap.solver) == ["guess_n_1", "source_n", "source_weight_n"]
    assert snap.solver["guess_n_1"].shape == (100, 1) and snap.solver["source_n"].shape == (300, 5)
    assert load(path, step=0).solver == {}  # nothing was solved before the first step
    assert load(_run(tmp_path, "chol", "time.steps=60", 'particles.solve="cholesky"')).solver == {}


@pytest.mark.parametrize(
    "state, match",
    [
        ({"guess_n_1": np.zeros((7, 1))}, "not that of a solution"),
        ({"source_n": np.zeros((5, 5))}, "weights"),
        ({"source_n": np.zeros((5, 2)), "source_weight_n": np.zeros(5)}, r"points \(m x 5\)"),
        ({"factor_n": np.zeros((3, 3))}, "is not part of the two-timescale functional's solver"),
    ],
)
def test_a_solver_state_of_another_shape_or_name_is_refused(state, match):
    F = TwoTimescaleFunctional(small_problem("tanh_bias", n=100, d=4), solve=DualSolve("pcg"))
    with pytest.raises(ValueError, match=match):
        F.restore_solver(state)


def test_the_loop_drives_pcg_and_counts_iterations(rng):
    pb = small_problem("tanh_bias", n=100, d=4)
    from mfld.discretizations.particles import Particles

    F = TwoTimescaleFunctional(pb, solve=DualSolve("pcg"))
    system = Particles(F, pb.sample_prior(300, rng), 0.1, 0)
    loop.run(system, 30)
    assert len(F.iterations) >= 25 and np.mean(F.iterations) < F.solve.refresh


@pytest.mark.parametrize("solve", ["pcg", "cholesky"])
def test_the_default_budget_is_chosen_at_start_stored_and_matches_a_chunked_run(tmp_path, solve, monkeypatch):
    """particles.memory_budget_mb = 0: half the available memory, chosen once and stored, so that the resume chunks
    as the run did; the trajectory is the chunked one's (1 MiB: chunks of 1310 of the 2000 particles, the tanh
    features being one n x N array) to round-off."""
    monkeypatch.setattr(assembly, "available_memory", lambda: 2 * 700 * 2**20)  # the machine has 1400 MiB available
    more = ("particles.N=2000", f'particles.solve="{solve}"')
    auto = _run(tmp_path, "auto", "time.steps=100", *more, "particles.memory_budget_mb=0")
    assert CheckpointReader(auto).config["particles"]["memory_budget_mb"] == 700
    chunked = _run(tmp_path, "chunked", "time.steps=100", *more, "particles.memory_budget_mb=1")
    a, b = load(auto).points, load(chunked).points
    assert 0 < np.max(np.abs(a - b)) <= 1e-10 * np.max(np.abs(b))  # different sums, the same trajectory
    half = _run(tmp_path, "half", "time.steps=50", *more, "particles.memory_budget_mb=0")
    monkeypatch.setattr(assembly, "available_memory", lambda: 2 * 64 * 2**20)  # less memory when it resumes
    build.resume(half, steps=50)
    assert CheckpointReader(half).config["particles"]["memory_budget_mb"] == 700  # the stored choice, not a new one
    np.testing.assert_array_equal(load(half).points, a)


def test_an_explicit_budget_is_kept_and_zero_shares_the_memory_among_processes(monkeypatch):
    monkeypatch.setattr(assembly, "available_memory", lambda: 8 * 2**30)
    assert build.memory_budget(load_config(None, ["particles.memory_budget_mb=300"])) == 300 * 2**20
    assert build.memory_budget(load_config()) == 4 * 2**30
    assert build.memory_budget(load_config(), processes=4) == 2**30
    monkeypatch.setattr(assembly, "available_memory", lambda: 2**20)
    assert build.memory_budget(load_config()) == 64 * 2**20  # a floor, so that chunks are not single particles


@pytest.mark.parametrize(
    "alter, match",
    [
        (lambda g: g.copy(g["solver_guess_n_1"], "intruder"), "intruder/value is not an array of a ParticleState"),
        (
            lambda g: (
                g["solver_guess_n_1"].__delitem__("value"),
                g["solver_guess_n_1"].create_dataset("value", data=np.zeros((3, 99, 1))),
            ),
            r"solver_guess_n_1/value has frames of shape \(99, 1\); a ParticleState's solver_guess_n_1, of axes "
            r"sample x column, has 100 x \?",
        ),
        (
            lambda g: (
                g["solver_source_n"].__delitem__("value"),
                g["solver_source_n"].create_dataset("value", data=np.zeros((3, 300, 4))),
            ),
            r"solver_source_n/value has frames of shape \(300, 4\); .* has 300 x 5",
        ),
    ],
)
def test_a_file_whose_state_arrays_are_not_those_the_state_declares_is_refused(tmp_path, alter, match):
    """Each array of a frame is checked against the axes its state type declares before anything is read."""
    import h5py

    from mfld.storage import CheckpointError

    path = _run(tmp_path, "pcg", "time.steps=100", 'particles.solve="pcg"')
    CheckpointReader(path)
    with h5py.File(path, "r+") as f:
        alter(f["particles/mu"])
    with pytest.raises(CheckpointError, match=match):
        CheckpointReader(path)


def _ill_conditioned(lam_a: float = 1e-7):
    """lam_a = 1e-7 and a narrow measure (tanh features almost linear, N = 300 < n = 1000): cond(K) ~ 7e6 on the N
    side, where a single-precision inverse is no approximate inverse and an earlier step's does not survive a step."""
    ds = make_dataset("x1x2", d=5, n=1000, n_test=50, seed=0)
    return Problem.from_dataset(ds, "tanh_bias", 0.004, lam_a, 0.25)


def _walk(F, steps: int, start: int = 0, W=None):
    """Steps ``start`` .. ``start + steps - 1`` of a random walk of the measure from ``W`` (default: its start), each
    fitted by ``F``; the walk's k-th move is the same whoever makes it."""
    W = 0.05 * np.random.default_rng(7).standard_normal((300, 6)) if W is None else W
    q = np.full(300, 1 / 300)
    fit = None
    for k in range(start, start + steps):
        W = W + 0.001 * np.random.default_rng([7, k]).standard_normal(W.shape)
        fit = F.fit(W, q)
    return W, fit


def test_a_preconditioner_beyond_single_precision_or_a_step_gives_way_with_a_warning_each():
    pb = _ill_conditioned()
    F, exact = TwoTimescaleFunctional(pb, solve=DualSolve("pcg")), TwoTimescaleFunctional(pb)
    with pytest.warns(PreconditionerWarning) as caught:
        W, fit = _walk(F, 12)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2, messages
    assert "beyond single precision" in messages[0] and "solved exactly (cholesky) for the rest" in messages[1]
    assert F.exact_only and list(F.iterations) == [40, 40]  # two attempts at the cap, then none
    np.testing.assert_array_equal(fit.coef, exact.fit(W, np.full(300, 1 / 300)).coef)


def test_a_well_conditioned_system_keeps_the_single_precision_preconditioner(recwarn):
    pb = _ill_conditioned(lam_a=0.25)
    F = TwoTimescaleFunctional(pb, solve=DualSolve("pcg"))
    _walk(F, 6)
    assert not F.exact_only and F._factor["N"].dtype == np.float32
    assert not [w for w in recwarn if issubclass(w.category, PreconditionerWarning)]


def test_a_run_that_gave_up_resumes_to_the_same_numbers():
    """A resumed functional starts with pcg again and gives up again; the solves it makes meanwhile fail and are
    replaced by exact ones, so its fits are those of the run that went on."""
    pb = _ill_conditioned()
    straight = TwoTimescaleFunctional(pb, solve=DualSolve("pcg"))
    with pytest.warns(PreconditionerWarning):
        _, whole = _walk(straight, 12)
    first = TwoTimescaleFunctional(pb, solve=DualSolve("pcg"))
    with pytest.warns(PreconditionerWarning):
        W, _ = _walk(first, 3)
    second = TwoTimescaleFunctional(pb, solve=DualSolve("pcg"))
    second.restore_solver(first.solver_state())
    with pytest.warns(PreconditionerWarning):
        _, resumed = _walk(second, 9, start=3, W=W)
    np.testing.assert_array_equal(resumed.coef, whole.coef)
