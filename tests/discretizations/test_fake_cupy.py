"""The ``backend = "cupy"`` code path on the CPU, through a test double of CuPy (tests/fake_cupy.py): device arrays
that refuse NumPy, host arrays refused beside them, and every copy to the host counted. Each discretisation runs
through it (with checkpoint writing) to the NumPy run's numbers, and a step copies to the host only what it declares
(``HOST_READS_PER_STEP`` of :mod:`mfld.discretizations.particles` and :mod:`~mfld.discretizations.density`;
no array, but for the direct LU that CuPy makes on the CPU)."""

from __future__ import annotations

from typing import Any

import fake_cupy
import numpy as np
import pytest

from conftest import SMALL_ANY
from mfld.config import load_config
from mfld.config.assembly import build_problem, build_system
from mfld.discretizations import adaptive, density, particles
from mfld.discretizations.implicit_solvers import ConjugateGradient
from mfld.discretizations.multigrid import VCycle
from mfld.solver import build
from mfld.storage import load

PARTICLES = ["data.d=5", "data.n=100", "particles.N=80", "time.steps=12", "output.checkpoint_every=5"]
PARTICLES += ["output.plot=false", 'output.progress="off"']
PARTICLE_CASES = {
    "auto": [],
    "pcg n side": ['particles.solve="pcg"'],
    "cholesky N side": ["particles.N=40", 'particles.solve="cholesky"'],
    "pcg N side": ["particles.N=40", 'particles.solve="pcg"'],
    "label noise": ["model.label_noise=0.5"],
    "chunks and blocks": ["particles.memory_budget_mb=1", "data.n=2000", "particles.N=600"],
}
GRIDS = [*SMALL_ANY, "time.steps=12", "output.checkpoint_every=5", "output.plot=false", 'output.progress="off"']
GRID_CASES = {
    "direct, mu* gap": ['discretization="grid"', 'grid.linear_solver="direct"', "grid.gap=true"],
    "krylov": ['discretization="grid"', 'grid.linear_solver="krylov"'],
    "splitting": ['discretization="grid"', 'grid.linear_solver="splitting"'],
    "cg": ['discretization="grid"', 'grid.linear_solver="cg"', "grid.cells=600"],
    "auto, bdf2": ['discretization="grid"', 'grid.scheme="bdf2"'],
    "spectral": ['discretization="spectral"'],
    "spectral sbdf2": ['discretization="spectral"', 'spectral.scheme="sbdf2"'],
    "adaptive krylov": ['discretization="grid"', 'grid.linear_solver="krylov"', "time.adaptive=true"],
    "adaptive splitting, p = 2": [
        'discretization="grid"',
        'grid.linear_solver="splitting"',
        'model.feature="tanh_bias"',
        "time.adaptive=true",
    ],
    "adaptive spectral": ['discretization="spectral"', "time.adaptive=true"],
}


@pytest.fixture
def cupy():
    with fake_cupy.installed() as module:
        yield module


def test_the_double_refuses_what_cupy_refuses_and_counts_what_goes_to_the_host(cupy):
    a = cupy.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError, match="numpy.sum was given a device array"):
        np.sum(a)
    with pytest.raises(fake_cupy.HostDeviceMix, match="host .* array of shape \\(3,\\) met a device array"):
        a + np.ones(3)
    x = np.arange(6.0).reshape(2, 3)
    with fake_cupy.counting() as moved:
        b = cupy.exp(a) @ a.T + 1.0  # device work, scalars welcome
        assert float(b.sum()) == pytest.approx(float(np.sum(np.exp(x) @ x.T + 1)))
        host = cupy.asnumpy(b)
    assert isinstance(host, np.ndarray) and moved.bulk == [4] and moved.scalar == 1 and moved.uploads == 0


@pytest.mark.parametrize("extra", PARTICLE_CASES.values(), ids=PARTICLE_CASES.keys())
def test_particle_runs_on_the_double_are_the_numpy_runs(cupy, tmp_path, extra):
    cpu = build.start(load_config(None, [*PARTICLES, *extra]), tmp_path / "cpu.h5")
    gpu = build.start(load_config(None, [*PARTICLES, *extra, 'backend="cupy"']), tmp_path / "gpu.h5")
    a, b = load(cpu), load(gpu)
    assert b.step == 12
    # The GPU path passes over the features whole (no cache blocks): sums in another order, the same trajectory.
    np.testing.assert_allclose(b.points, a.points, rtol=0, atol=1e-12 * np.abs(a.points).max())


@pytest.mark.parametrize("extra", PARTICLE_CASES.values(), ids=PARTICLE_CASES.keys())
def test_a_particle_step_copies_to_the_host_only_what_it_declares(cupy, extra):
    config = load_config(None, [*PARTICLES, *extra, 'backend="cupy"'])
    system = build_system(config, build_problem(config))
    system.step()
    system.step()  # pcg's warm start and preconditioner are in place from here on
    with fake_cupy.counting() as moved:
        system.step()
    noise = "model.label_noise=0.5" in extra
    assert moved.bulk == [], "an array was copied to the host inside a step"
    assert moved.scalar <= particles.HOST_READS_PER_STEP + noise
    assert moved.uploads == (3 if noise else 1)  # the host-drawn noise (and the label noise's draws)


@pytest.mark.parametrize("extra", GRID_CASES.values(), ids=GRID_CASES.keys())
def test_density_runs_on_the_double_are_the_numpy_runs_and_copy_no_array_in_a_step(cupy, tmp_path, extra):
    cpu = build.start(load_config(None, [*GRIDS, *extra]), tmp_path / "cpu.h5")
    gpu = build.start(load_config(None, [*GRIDS, *extra, 'backend="cupy"']), tmp_path / "gpu.h5")
    a, b = load(cpu), load(gpu)
    np.testing.assert_allclose(b.density, a.density, rtol=0, atol=1e-12 * a.density.max())
    config = load_config(None, [*GRIDS, *extra, 'backend="cupy"', "grid.gap=false"])
    system = build_system(config, build_problem(config))
    system.step()
    system.step()
    rejected = system.controller.rejected if system.controller is not None else 0
    solver = getattr(system, "solver", None)
    solver = getattr(solver, "first", solver)  # auto's solver of the moment
    declared: list[int] = []  # cg's own reads, declared per solve and per iteration, for each solve of the step
    if isinstance(solver, ConjugateGradient):
        solve = solver.solve

        def counted(V: Any, dt: float, r: Any) -> Any:
            out = solve(V, dt, r)
            declared.append(
                solver.HOST_READS + solver.HOST_READS_PER_ITERATION * solver.iterations + 2 * (solver.restarts - 1)
            )
            return out

        solver.solve = counted  # type: ignore[method-assign]
    with fake_cupy.counting() as moved:
        system.step()
    direct = 'grid.linear_solver="direct"' in extra  # CuPy's sparse LU runs on the CPU: the matrix goes there
    assert (len(moved.bulk) == 1) if direct else (moved.bulk == []), moved.bulk
    reads = density.HOST_READS_PER_STEP + sum(declared)
    if system.controller is not None:
        reads += (1 + system.controller.rejected - rejected) * adaptive.HOST_READS_PER_ATTEMPT
    if "cg" in GRID_CASES and extra is GRID_CASES["cg"]:  # this case is the multigrid's
        assert isinstance(solver, ConjugateGradient) and solver.iterations >= 1
        assert len(VCycle(system.grid, system.potential(), 0.05, 0.05).levels) >= 2
    assert moved.scalar <= reads and moved.uploads == 0
