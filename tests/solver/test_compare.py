"""mfld compare: a particle run against a grid run of one problem, checked against the crosscheck's own measurement."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest

from mfld.config import load_config
from mfld.discretizations import loop
from mfld.discretizations.particles import Particles
from mfld.solver import build
from mfld.solver.cli import main
from mfld.solver.compare import compare
from mfld.storage import CheckpointError, load
from mfld.validation.checks.crosscheck import distances
from mfld.validation.problems import low_dim_functional

# The crosscheck's p = 1 problem (validation/problems.py) as a configuration.
PROBLEM = [
    'data.target="single-index"',
    "data.d=1",
    "data.n=40",
    "data.n_test=200",
    "seed=3",
    'model.feature="tanh"',
    "model.lam=0.05",
    "model.lam_a=1.0",
    "model.lam_w=1.0",
    "output.plot=false",
    'output.progress="off"',
]
GRID = [
    *PROBLEM,
    'discretization="grid"',
    "grid.cells=1000",
    'grid.scheme="bdf2"',
    "grid.gap=false",
    "time.eta=0.02",
    "time.steps=250",
    "output.checkpoint_every=125",
    "output.metrics_every=125",
]
PARTICLES = [
    *PROBLEM,
    "particles.N=400",
    "time.eta=0.05",
    "time.steps=100",
    "output.checkpoint_every=50",
    "output.metrics_every=50",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare")
    grid = build.start(load_config(None, GRID), folder / "grid.h5")
    particles = build.start(load_config(None, PARTICLES), folder / "particles.h5")
    return grid, particles


def test_particles_against_the_grid_within_the_crosscheck_range(files):
    grid, particles = files
    rows = compare(particles, grid)
    assert [r["time"] for r in rows] == pytest.approx([0.0, 2.5, 5.0])  # the times both files saved
    last = rows[-1]
    # The crosscheck's measurement at T = 5, N = 400: 16 seeds of its own particle runs against the grid file.
    F = low_dim_functional(1)
    snap = load(grid)
    w1 = []
    for s in range(16):
        r = np.random.default_rng([0, 1, 400, s])
        system = Particles(F, r.standard_normal((400, 1)) / math.sqrt(F.problem.lam_w), 0.05, r)
        loop.run(system, until=5.0)
        w1.append(distances(system.positions, snap.grid, snap.weights, None)[0])
    assert 0.8 * min(w1) <= last["W1"] <= 1.25 * max(w1), (last["W1"], min(w1), max(w1))
    assert last["W2"] >= last["W1"] > 0
    # W1 is that of the two files' measures, the density's mass spread over its cells: by the CDFs (not the
    # quantiles the code sums), W1 = integral |F_particles(x) - F_grid(x)| dx, F_grid piecewise linear, on a fine
    # grid of x (midpoint rule; the steps of F_particles cost at most N dx of it).
    x = np.linspace(snap.grid.lower[0], snap.grid.upper[0], 2_000_001)
    mid, dx = 0.5 * (x[1:] + x[:-1]), x[1] - x[0]
    edges = np.linspace(snap.grid.lower[0], snap.grid.upper[0], snap.grid.cells[0] + 1)
    F_grid = np.interp(mid, edges, np.concatenate([[0.0], np.cumsum(snap.weights)]))
    F_particles = np.searchsorted(np.sort(load(particles).points[:, 0]), mid, side="right") / 400
    direct = float(np.sum(np.abs(F_particles - F_grid)) * dx)
    assert last["W1"] == pytest.approx(direct, abs=400 * dx)
    atoms = ot.wasserstein_1d(load(particles).points[:, 0], snap.points[:, 0], None, snap.weights, p=1)
    assert abs(last["W1"] - float(atoms)) <= snap.grid.spacing[0] / 4  # cell atoms: within h/4 of it
    assert last["W1_floor"] == 0.0
    assert abs(last["dU"]) < 0.05 * abs(last["U_b"]) and last["kernel_sup"] < 0.1


def test_a_run_against_itself_is_at_distance_zero(files):
    _, particles = files
    for r in compare(particles, particles):
        assert r["W1"] == r["W2"] == r["dU"] == r["kernel_sup"] == 0.0


def test_the_cli_writes_a_table_and_a_plot(files, capsys, tmp_path):
    grid, particles = files
    assert main(["compare", str(particles), str(grid), "--steps", "100", "--out", str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out
    assert "| time | step_a | step_b | W1 (exact) | W2 (exact) | W1_floor |" in out and "| 5 | 100 | 250 |" in out
    assert (tmp_path / "c.png").stat().st_size > 5000


def test_runs_of_different_problems_are_refused(files, tmp_path):
    grid, _ = files
    other = build.start(load_config(None, [*PARTICLES, "model.lam=0.1"]), tmp_path / "other.h5")
    with pytest.raises(CheckpointError, match="different problems .*lam"):
        compare(other, grid)


def test_plot_draws_the_measure_and_animates_it(files, capsys):
    from PIL import Image

    grid, particles = files
    for path in (grid, particles):
        assert main(["plot", str(path), "--animate"]) == 0
        printed = capsys.readouterr().out.split()
        measure, gif = path.with_name(path.stem + "-measure.png"), path.with_suffix(".gif")
        assert str(measure) in printed and str(gif) in printed and measure.stat().st_size > 5000
        with Image.open(gif) as im:
            assert im.format == "GIF" and im.n_frames == 3  # every saved frame
    assert main(["plot", str(grid), "--steps", "7"]) == 2
    assert "steps [7] are not saved" in capsys.readouterr().err


def test_plot_with_out_writes_everything_beside_out_and_nothing_beside_the_file(files, tmp_path, capsys):
    """Issue 36: `mfld plot X --out dir/y.png` wrote X-measure.png and X.gif next to X (failing in a read-only
    folder)."""
    grid, _ = files
    before = set(grid.parent.iterdir())
    out = tmp_path / "pictures" / "y.png"
    out.parent.mkdir()
    assert main(["plot", str(grid), "--animate", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["y-measure.png", "y.gif", "y.png"]
    assert set(grid.parent.iterdir()) == before


def test_distances_in_more_than_one_dimension_are_labelled_sliced(tmp_path, capsys):
    two = [
        "data.d=2",
        'model.feature="tanh"',
        "particles.N=60",
        "time.eta=0.05",
        "time.steps=10",
        "output.checkpoint_every=5",
        "output.metrics_every=5",
        "output.plot=false",
        'output.progress="off"',
    ]
    a = build.start(load_config(None, two), tmp_path / "a.h5")
    b = build.start(load_config(None, [*two, "particles.N=80"]), tmp_path / "b.h5")  # the same problem
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "ab.png")]) == 0
    assert "| time | step_a | step_b | SW1 (sliced) | SW2 (sliced) |" in capsys.readouterr().out


def test_the_one_dimensional_distances_are_exact_and_labelled_so(files):
    grid, particles = files
    rows = compare(particles, grid, [100])
    assert not rows[0]["sliced"]


def test_an_animation_holds_every_frame_in_one_set_of_axes(files, tmp_path):
    """Issue 36: GIF frames changed their axis limits as the measure moved."""
    from mfld.solver.plotting import _limits, _scatter
    from mfld.storage import CheckpointReader

    for path in files:
        record = CheckpointReader(path)
        snaps = [record.snapshot(int(s)) for s in record.steps]
        limits = _limits(snaps, snaps[-1])
        for snap in snaps:
            if snap.density is not None:
                assert limits["y"][0] == 0.0 and snap.density.max() <= limits["y"][1]
                x = snap.grid.axes()[0]
            else:
                x = snap.points[:, 0]
                heights = np.histogram(x, bins=60, density=True)[0]
                assert heights.max() <= limits["y"][1]
            assert limits["x"][0] <= x.min() and x.max() <= limits["x"][1]
    two = build.start(
        load_config(None, [*PARTICLES, "data.d=2", "particles.N=50", "time.steps=20", "output.checkpoint_every=5"]),
        tmp_path / "two.h5",
    )
    record = CheckpointReader(two)
    snaps = [record.snapshot(int(s)) for s in record.steps]
    limits = _limits(snaps, snaps[-1])
    for snap in snaps:
        xy = _scatter(snap, snaps[-1])[0]
        assert limits["x"][0] <= xy[:, 0].min() and xy[:, 0].max() <= limits["x"][1]
        assert limits["y"][0] <= xy[:, 1].min() and xy[:, 1].max() <= limits["y"][1]


def test_figures_name_the_coordinates_u_and_b(tmp_path):
    """Issue 36: axes were named w_0, w_1 instead of the network's u, b."""
    from mfld.solver.plotting import measure_figure

    config = load_config(
        None,
        [
            *PROBLEM,
            'discretization="grid"',
            'model.feature="tanh_bias"',
            "grid.cells=24",
            "grid.gap=false",
            "time.steps=2",
            "output.checkpoint_every=1",
        ],
    )
    fig = measure_figure(build.start(config, tmp_path / "two.h5"))
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("u_1", "b")
