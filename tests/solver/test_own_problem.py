"""Bring your own problem: data files, plug-in feature maps, the initial measure, provenance."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mfld.config import ConfigError, load_config
from mfld.model.features import FEATURE_MAPS, check_feature_map, get_feature_map
from mfld.model.problem import Problem
from mfld.solver import build
from mfld.solver.cli import main
from mfld.storage import CheckpointReader, load

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "bump_feature.py"
FAST = [
    "particles.N=60",
    "time.steps=6",
    "output.checkpoint_every=3",
    "output.metrics_every=3",
    "output.plot=false",
    'output.progress="off"',
    "model.lam=0.05",
]


def test_a_run_from_an_npz_file(tmp_path, rng):
    X, X_test = rng.standard_normal((40, 3)), rng.standard_normal((20, 3))
    np.savez(tmp_path / "mine.npz", X=X, Y=np.sin(X[:, 0]), X_test=X_test, Y_test=np.sin(X_test[:, 0]))
    (tmp_path / "mine.toml").write_text('[data]\nsource = "mine.npz"\n')  # relative to the configuration file
    config = load_config(tmp_path / "mine.toml", FAST)
    path = build.start(config, tmp_path / "run.h5")
    reader = CheckpointReader(path)
    np.testing.assert_array_equal(reader.data["X"], X)
    np.testing.assert_array_equal(reader.data["Y_test"][:, 0], np.sin(X_test[:, 0]))
    assert reader.config["data"]["d"] == 3 and reader.config["data"]["n"] == 40  # the stored sizes are the file's
    assert np.isfinite(reader.observables()["test_loss"]["value"]).all()
    build.resume(path, steps=3)  # the data come from the checkpoint, not from the file
    assert load(path).step == 9


def test_a_run_from_the_shipped_csv_example(capsys):
    assert main(["run", "csv-example", "--out", "csv.h5", *[a for s in FAST for a in ("--set", s)]]) == 0
    reader = CheckpointReader("csv.h5")
    assert reader.data["X"].shape == (200, 1) and reader.data["X_test"].shape == (200, 1)
    capsys.readouterr()
    assert main(["info", "csv.h5"]) == 0
    assert "source=" in capsys.readouterr().out and "sine-train.csv" in reader.config["data"]["source"]


def test_bad_data_files_are_refused(tmp_path):
    (tmp_path / "a.csv").write_text("x,z\n1,2\n")
    with pytest.raises(ValueError, match=r"has no columns \['y'\]; its columns are \['x', 'z'\]"):
        build.generate_data(load_config(None, [f'data.source="{tmp_path / "a.csv"}"']))
    (tmp_path / "b.csv").write_text("x,y\n1,nan\n2,3\n")
    config = load_config(None, [f'data.source="{tmp_path / "b.csv"}"'])
    with pytest.raises(ValueError, match="Y contains 1 NaN or infinite entries"):
        build.build_problem(config)
    np.savez(tmp_path / "c.npz", X=np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"lacks the arrays \['Y'\]"):
        build.generate_data(load_config(None, [f'data.source="{tmp_path / "c.npz"}"']))
    with pytest.raises(ValueError, match="is not a file"):
        build.generate_data(load_config(None, ['data.source="nowhere.npz"']))


@pytest.fixture
def plugin_path(tmp_path, monkeypatch):
    """The example plug-in module, importable, and declared as an installed distribution's entry point."""
    shutil.copy(EXAMPLE, tmp_path / "bump_feature.py")
    info = tmp_path / "mfld_bump_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mfld-bump-demo\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[mfld.feature_maps]\nbump = bump_feature:BUMP\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("bump_feature", None)
    FEATURE_MAPS.forget_plugins()


@pytest.mark.parametrize("name", ["bump", "bump_feature:BUMP"])  # by entry point, by import path
def test_a_plugin_feature_map_runs(plugin_path, name):
    fm = get_feature_map(name)
    assert fm.dim(4) == 4
    config = load_config(None, [*FAST, f'model.feature="{name}"', "data.d=2"])
    path = build.start(config, plugin_path / "bump.h5")
    U = CheckpointReader(path).observables()["U"]["value"]
    assert np.isfinite(U).all() and U[-1] < U[0]


def test_a_broken_plugin_is_refused_with_the_reason(plugin_path):
    (plugin_path / "raising_feature.py").write_text(
        "import bump_feature\n"
        "class Raising(bump_feature.Bump):\n"
        "    def evaluate(self, X, W):\n"
        "        if W.shape[0] == 1:\n"
        "            raise RuntimeError('one row')\n"
        "        return super().evaluate(X, W)\n"
        "RAISING = Raising()\n"
    )
    with pytest.raises(ValueError, match=r"fails its conformance check: evaluate near w = .*: RuntimeError: one row"):
        get_feature_map("raising_feature:RAISING")
    (plugin_path / "broken_feature.py").write_text(
        "import bump_feature\n"
        "class Wrong(bump_feature.Bump):\n"
        "    def pullback(self, X, W, cache, H, M):\n"
        "        return 2 * super().pullback(X, W, cache, H, M)\n"
        "    def contract_grad(self, X, W, cache, H, C, A):\n"
        "        return 2 * super().contract_grad(X, W, cache, H, C, A)\n"
        "WRONG = Wrong()\n"
    )
    with pytest.raises(ValueError, match="fails its conformance check: contract_grad disagrees with central"):
        get_feature_map("broken_feature:WRONG")
    with pytest.raises(ValueError, match="cannot be imported"):
        get_feature_map("no_such_module:X")
    with pytest.raises(ConfigError, match="'model.feature' must be a registered feature map"):
        load_config(None, ['model.feature="not a name"'])
    check_feature_map(get_feature_map("tanh_bias"), "tanh_bias")  # the shipped maps pass the same check


LATE_FAULTS = {
    # +inf far from the origin: the load-time check draws |w| ~ 1, a run's prior reaches |w| ~ 3
    "inf_far": (
        "    def evaluate(self, X, W):\n"
        "        cache, H = super().evaluate(X, W)\n"
        "        return cache, np.where((W * W).sum(axis=1) > 4.0, np.inf, H)\n",
        r"failed in evaluate: it returned NaN or infinite values for N = \d+ parameters w \(largest \|w\| ",
    ),
    "nan_later": (
        "    calls = 0\n"
        "    def evaluate(self, X, W):\n"
        "        type(self).calls += 1\n"
        "        cache, H = super().evaluate(X, W)\n"
        "        return cache, H * np.nan if type(self).calls > 5 else H\n",
        r"failed in evaluate: it returned NaN or infinite values",
    ),
    "shape_later": (
        "    calls = 0\n"
        "    def contract_grad(self, X, W, cache, H, C, A):\n"
        "        type(self).calls += 1\n"
        "        G = super().contract_grad(X, W, cache, H, C, A)\n"
        "        return G[:-1] if type(self).calls > 5 else G\n",
        r"failed in contract_grad: it returned shape \(59, 2\), not \(60, 2\)",
    ),
    "raises_later": (
        "    calls = 0\n"
        "    def evaluate(self, X, W):\n"
        "        type(self).calls += W.shape[0] > 4  # the check's blocks have 4 rows at most, the run's 60\n"
        "        if type(self).calls > 5:\n"
        "            raise RuntimeError('the plug-in gave up')\n"
        "        return super().evaluate(X, W)\n",
        r"failed in evaluate: RuntimeError: the plug-in gave up",
    ),
}


@pytest.mark.parametrize("fault", sorted(LATE_FAULTS))
def test_a_plugin_that_fails_during_the_run_is_named(plugin_path, fault):
    """Issue 37 (low): faults the load-time check cannot see (it tries small |w|, a few calls, one block size) are
    reported as the plug-in's, naming it and the method, not as a diverged run or a NumPy error inside mfld."""
    body, message = LATE_FAULTS[fault]
    module = f"late_{fault}"
    (plugin_path / f"{module}.py").write_text(
        f"import numpy as np\nimport bump_feature\nclass Late(bump_feature.Bump):\n{body}LATE = Late()\n"
    )
    config = load_config(None, [*FAST, f'model.feature="{module}:LATE"', "data.d=2", "model.lam_w=0.25"])
    try:
        with pytest.raises(ValueError, match=f"feature map '{module}:LATE' {message}"):
            build.start(config, plugin_path / f"{fault}.h5")
    finally:
        sys.modules.pop(module, None)


def test_a_watched_plugin_copies_and_pickles(plugin_path):
    """The guard forwards unknown attributes to the plug-in; a copy or a pickle (a process pool's) must not recurse
    through that forwarding before the plug-in is set."""
    import copy
    import importlib
    import pickle

    from mfld.model.plugin_guard import Guarded

    # Wrapped here rather than taken from get_feature_map's cache, whose object may come from an earlier test's
    # import of the module (which pickle refuses as another class).
    fm = Guarded(importlib.import_module("bump_feature").BUMP, "bump_feature:BUMP")
    for twin in (copy.deepcopy(fm), pickle.loads(pickle.dumps(fm))):
        assert twin.name == "bump_feature:BUMP" and twin.dim(3) == fm.dim(3)


def test_a_file_does_not_choose_code_to_import(plugin_path):
    config = load_config(None, [*FAST, 'model.feature="bump_feature:BUMP"', "data.d=2"])
    path = build.start(config, plugin_path / "b.h5")
    sys.modules.pop("bump_feature", None)
    from mfld.model import features

    features._PLUGINS.clear()
    with pytest.raises(ValueError, match="import path read from a file"):
        build.resume(path, steps=3)
    build.resume(path, steps=3, trust=True)
    assert load(path).step == 9


def test_a_gaussian_initial_measure(tmp_path):
    narrow = build.start(
        load_config(None, [*FAST, 'particles.init="gaussian"', "particles.init_sd=0.1"]), tmp_path / "narrow.h5"
    )
    W0 = load(narrow, step=0).points
    assert abs(W0.std() - 0.1) < 0.02  # 60 x 11 draws of N(0, 0.1^2)
    prior = load(build.start(load_config(None, FAST), tmp_path / "prior.h5"), step=0).points
    assert abs(prior.std() - 2.0) < 0.2  # nu = N(0, I / lam_w), lam_w = 0.25


def test_every_file_records_its_provenance(tmp_path):
    path = build.start(load_config(None, FAST), tmp_path / "p.h5")
    prov = CheckpointReader(path).provenance
    for key in ("mfld", "python", "numpy", "scipy", "h5py", "host", "started", "command"):
        assert prov.get(key), key
    with h5py.File(path, "r") as f:
        assert f["h5md/creator"].attrs["version"].decode() == prov["mfld"]


def test_a_problem_needs_samples_and_dimensions():
    with pytest.raises(ValueError, match="needs at least one sample"):
        Problem(np.zeros((0, 2)), np.zeros(0), "tanh", 0.1, 1.0, 1.0)
    with pytest.raises(ValueError, match="needs at least one sample"):
        Problem(np.zeros((3, 0)), np.zeros(3), "tanh", 0.1, 1.0, 1.0)


def test_a_plugin_in_the_working_directory_is_found():
    """As with `python -m`, a module next to the user's files imports without touching the Python path."""
    shutil.copy(EXAMPLE, Path.cwd() / "bump_here.py")
    try:
        assert get_feature_map("bump_here:BUMP").dim(2) == 2
    finally:
        sys.modules.pop("bump_here", None)
