"""CuPy runs the same code as NumPy (marker ``gpu``; skipped without CuPy and a device)."""

from __future__ import annotations

import numpy as np
import pytest

from mfld.model.datasets import make_dataset
from mfld.model.problem import Problem
from mfld.model.two_timescale import TwoTimescaleFunctional

cp = pytest.importorskip("cupy")
try:
    has_device = cp.cuda.runtime.getDeviceCount() > 0
except Exception:  # no driver or no device
    has_device = False
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not has_device, reason="no CUDA device")]


@pytest.mark.parametrize("N", [3000, 200])  # the n x n and the N x N dual solve (n = 1000)
def test_drift_on_gpu_matches_cpu_to_1e10(N):
    ds = make_dataset("x1x2", d=15, n=1000, n_test=100, seed=0)
    pb = Problem.from_dataset(ds, "tanh_bias", 0.004, 0.25, 0.25)
    W = pb.sample_prior(N, np.random.default_rng(0))
    q = np.full(N, 1.0 / N)
    F_cpu, F_gpu = TwoTimescaleFunctional(pb), TwoTimescaleFunctional(pb.to(cp, np.float64))
    g_cpu = F_cpu.grad_potential(F_cpu.fit(W, q))
    fit_gpu = F_gpu.fit(cp.asarray(W), cp.asarray(q))
    g_gpu = cp.asnumpy(F_gpu.grad_potential(fit_gpu))
    assert np.linalg.norm(g_gpu - g_cpu) / np.linalg.norm(g_cpu) < 1e-10
    assert abs(fit_gpu.U - F_cpu.fit(W, q).U) < 1e-10 * abs(fit_gpu.U)


def test_particle_run_on_gpu(tmp_path):
    from mfld.config import load_config
    from mfld.solver import build
    from mfld.storage import load

    settings = [
        "data.d=5",
        "data.n=100",
        "particles.N=500",
        "time.steps=20",
        "output.checkpoint_every=10",
        "output.plot=false",
        'output.progress="off"',
    ]
    cpu = build.start(load_config(None, settings), tmp_path / "cpu.h5")
    gpu = build.start(load_config(None, [*settings, 'backend="cupy"']), tmp_path / "gpu.h5")
    a, b = load(cpu), load(gpu)
    assert b.step == 20
    np.testing.assert_allclose(b.points, a.points, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("solver", ["splitting", "krylov", "cg"])
def test_grid_linear_solvers_on_gpu_match_cpu(solver):
    """The splitting sweep (vectorised Thomas), GMRES (cupyx) and multigrid CG run unchanged on CuPy arrays."""
    from mfld.discretizations.implicit_solvers import LINEAR_SOLVERS
    from mfld.discretizations.mesh import Grid

    grid = Grid.box(3.0, [24, 20, 16], 3)
    rng = np.random.default_rng(0)
    V = 0.5 * (grid.centers() ** 2).sum(axis=1) + 0.3 * np.sin(grid.centers() @ rng.normal(size=3))
    V = V.reshape(grid.shape)
    m = rng.random(grid.shape)
    cpu = LINEAR_SOLVERS[solver](grid, 0.05, 1e-12).solve(V, 0.5, m)
    gpu = LINEAR_SOLVERS[solver](grid, 0.05, 1e-12).solve(cp.asarray(V), 0.5, cp.asarray(m))
    np.testing.assert_allclose(cp.asnumpy(gpu), cpu, rtol=1e-9, atol=1e-12 * cpu.max())
