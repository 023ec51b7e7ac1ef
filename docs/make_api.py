"""Write docs/api.md: the public API, each entry's signature and docstring, with one example each.

    python docs/make_api.py          # rewrite docs/api.md
    python docs/make_api.py --check  # exit 1 if docs/api.md is out of date

The examples run in order in one namespace (tests/solver/test_api_docs.py runs them), so later ones use
what earlier ones made.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

ENTRIES: list[tuple[str, str]] = [
    (
        "mfld.run",
        'r = mfld.run({"particles": {"N": 200}, "time": {"steps": 100}}, set={"output.progress": "off"})\n'
        'print(r, r.series["kernel_alignment"][-1])   # nothing written; out="a.h5" writes a checkpoint',
    ),
    (
        "mfld.solver.python_api.Run",
        "fig = r.figure()                           # a matplotlib Figure; r.measure_figure() draws mu_t\n"
        "print(r.state.positions.shape, r.steps)",
    ),
    ("mfld.model.datasets.make_dataset", 'ds = make_dataset("single-index", d=3, n=60, n_test=100, seed=0)'),
    ("mfld.model.datasets.read_dataset", 'np.savez("mine.npz", X=ds.X, Y=ds.Y)\nmine = read_dataset("mine.npz")'),
    ("mfld.model.problem.Problem", 'pb = Problem.from_dataset(ds, "tanh_bias", lam=0.05, lam_a=1.0, lam_w=1.0)'),
    (
        "mfld.model.features.get_feature_map",
        'fm = get_feature_map("tanh_bias")          # or "package.module:attribute", or an installed plug-in',
    ),
    ("mfld.model.features.check_feature_map", 'check_feature_map(fm, "tanh_bias")'),
    (
        "mfld.model.two_timescale.TwoTimescaleFunctional",
        "F = TwoTimescaleFunctional(pb)\nW = pb.sample_prior(200, np.random.default_rng(0))\n"
        "q = np.full(200, 1 / 200)\nfit = F.fit(W, q)\nprint(fit.U, F.grad_potential(fit).shape)",
    ),
    ("mfld.model.dual_solve.DualSolve", 'F_pcg = TwoTimescaleFunctional(pb, solve=DualSolve("pcg", tol=1e-11))'),
    (
        "mfld.model.observables.evaluate",
        'print(evaluate(Evaluation(F, fit), ["U", "kernel_alignment", "degrees_of_freedom"]))',
    ),
    ("mfld.model.label_noise.LabelNoiseDrift", "noise = KeyedNoise(0)\ndrift = LabelNoiseDrift(F, 0.5, noise.uniform)"),
    (
        "mfld.discretizations.particles.Particles",
        "system = Particles(F, W, eta=0.1, noise=0)   # or Particles(F, W, 0.1, noise, drift=drift)",
    ),
    (
        "mfld.discretizations.loop.run",
        'rec = Recorder(lambda s: {"U": s.fit().U}, every=10)\nrun(system, until=5.0, observers=[rec])\n'
        'print(rec.series()["U"])',
    ),
    ("mfld.discretizations.loop.below", 'run(system, steps=1000, observers=[rec], stop=below(rec, "U", 1.0))'),
    (
        "mfld.discretizations.grid.FiniteVolume",
        'pb1 = Problem(ds.X[:, :1], ds.Y, "tanh", 0.05, 1.0, 1.0)\nF1 = TwoTimescaleFunctional(pb1)\n'
        "grid = Grid.box(6.0, 200, 1)\n"
        'fv = FiniteVolume(F1, grid, gaussian_density(grid, [0.0], [[1.0]]), 0.5, "bdf2")\n'
        'run(fv, steps=20)\nprint(fv.diagnostics()["certificate"])',
    ),
    (
        "mfld.discretizations.stationary.solve_stationary",
        "star = solve_stationary(F1, grid, tol=1e-12)\nprint(star.objective, star.certificate)",
    ),
    (
        "mfld.model.registry.Registry",
        "from mfld.discretizations.grid import GRID_SCHEMES\n"
        'with GRID_SCHEMES.registered("my-euler", GRID_SCHEMES["implicit-euler"], "a copy"):\n'
        "    print(list(GRID_SCHEMES))                # a new file registers with @GRID_SCHEMES.register(...)",
    ),
    (
        "mfld.model.options.option",
        "from dataclasses import dataclass\nfrom typing import ClassVar\nfrom mfld.model.options import positive\n\n\n"
        "@dataclass(frozen=True, kw_only=True)\n"
        "class HuberOptions:                        # registered with its objective: options=HuberOptions\n"
        '    section: ClassVar[str] = "model"\n'
        '    delta: float = positive(1.0, "Huber: where the loss turns linear", since="0.3.0")',
    ),
    ("mfld.config.schema", 'print(len(schema()), schema()["time.eta"].doc)'),
    (
        "mfld.config.load_config",
        'config = load_config("grid-1d", ["time.steps=10", "output.plot=false", \'output.progress="off"\'])',
    ),
    ("mfld.solver.build.start", 'path = start(config, "g.h5", overwrite=True)'),
    ("mfld.solver.build.resume", "resume(path, steps=5)"),
    ("mfld.load", 'saved = mfld.load(path)\nprint(saved.kind, saved.series["certificate"][-1])'),
    (
        "mfld.storage.load",
        "snap = load(path)                          # host arrays, the config and the data\n"
        "print(snap.step, snap.density.shape)",
    ),
    ("mfld.solver.build.build_problem", 'pb_file = build_problem(snap.config, snap.data, backend="numpy")'),
    (
        "mfld.storage.CheckpointReader",
        'reader = CheckpointReader(path)\nprint(reader.observables()["certificate"]["value"])\n'
        'print(reader.provenance["mfld"])',
    ),
    (
        "mfld.solver.compare.compare",
        'start(load_config("grid-1d", ["time.steps=10", "output.plot=false", \'output.progress="off"\', '
        '"grid.cells=128"]), "h.h5", overwrite=True)\nrows = compare("g.h5", "h.h5")\nprint(rows[-1]["W1"])',
    ),
    ("mfld.solver.plotting.plot_measure", "plot_measure(path)                         # g-measure.png"),
    ("mfld.validation.distances.wasserstein", "print(wasserstein(W, None, W + 0.1, None))"),
    ("mfld.validation.suite.run_checks", 'reports = run_checks(["convexity"], "reports")\nprint(reports[0].status)'),
]

HEADER = (
    """# Python API

The public functions and classes, with one example each. The examples run in order in one
namespace (`tests/solver/test_api_docs.py` runs them), after

```python
import numpy as np
import mfld
"""
    + "\n".join("from {} import {}".format(*n.rsplit(".", 1)) for n, _ in ENTRIES if n.count(".") > 1)
    + """
from mfld.model.observables import Evaluation
from mfld.discretizations.noise import KeyedNoise
from mfld.discretizations.loop import Recorder
from mfld.discretizations.mesh import Grid, gaussian_density
```

This page is generated by `python docs/make_api.py` from the docstrings.

"""
)


def render() -> str:
    parts = [HEADER]
    for dotted, example in ENTRIES:
        module, name = dotted.rsplit(".", 1)
        obj = getattr(importlib.import_module(module), name)
        try:
            signature = str(inspect.signature(obj))
        except (TypeError, ValueError):
            signature = "(...)"
        doc = inspect.getdoc(obj) or ""
        parts.append(f"## `{dotted}`\n\n```python\n{name}{signature}\n```\n\n{doc}\n\n```python\n{example}\n```\n\n")
    return "".join(parts)


def examples() -> str:
    """The preamble and every example, as one script."""
    text = render()
    blocks = text.split("```python\n")[1:]
    return "\n".join(b.split("```")[0] for i, b in enumerate(blocks) if i == 0 or i % 2 == 0)


if __name__ == "__main__":
    target = Path(__file__).with_name("api.md")
    if "--check" in sys.argv:
        sys.exit(0 if target.read_text() == render() else 1)
    target.write_text(render())
    print(target)
