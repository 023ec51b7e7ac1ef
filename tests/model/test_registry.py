"""Registries: the decorator, scoped registration, built-ins found by their file, plug-ins by their entry point."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from mfld.model.registry import PluginWarning, Registry


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    """A folder on sys.path; modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _write(folder, rel, text):
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_the_decorator_registers_and_returns_what_it_decorates():
    registry: Registry[object] = Registry("thing")

    @registry.register("one", doc="the first")
    def one() -> int:
        return 1

    assert one() == 1 and registry["one"] is one and registry.doc("one") == "the first" and list(registry) == ["one"]
    with pytest.raises(ValueError, match="'one' is registered already"):
        registry.register("one")(one)
    with pytest.raises(ValueError, match=r"thing must be one of \['one'\], got 'two'"):
        registry["two"]


def test_a_scoped_registration_shadows_and_restores():
    registry: Registry[int] = Registry("number", [])
    registry.add("a", 1, "one")
    with registry.registered("a", 10, "ten"), registry.registered("b", 2, "two"):
        assert registry["a"] == 10 and registry["b"] == 2 and registry.doc("a") == "ten"
    assert dict(registry) == {"a": 1} and registry.doc("a") == "one"
    with pytest.raises(RuntimeError), registry.registered("c", 3):
        raise RuntimeError  # restored on an error too
    assert "c" not in registry


def test_a_new_module_of_the_builtins_package_registers_itself_by_being_there(on_path):
    _write(
        on_path,
        "pkg/__init__.py",
        """
        from mfld.model.registry import Registry
        THINGS = Registry("pkg.thing", builtins="pkg")
    """,
    )
    _write(
        on_path,
        "pkg/first.py",
        """
        from pkg import THINGS

        @THINGS.register("first", doc="in its own file")
        class First:
            pass
    """,
    )
    _write(
        on_path,
        "pkg/second.py",
        """
        from pkg import THINGS

        THINGS.add("second", 2, "another file")
    """,
    )
    import pkg

    assert sorted(pkg.THINGS) == ["first", "second"] and pkg.THINGS.doc("first") == "in its own file"


def _install(folder, name, group, entries):
    """A distribution as pip leaves it: its dist-info (METADATA, entry_points.txt) beside its module."""
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items()))


def test_an_installed_package_offers_entries_through_its_entry_point_group(on_path):
    _write(
        on_path,
        "extra_things.py",
        '''
        class Third:
            """A third thing, from a plug-in.

            More lines of its doc.
            """

            class Options:
                pass
    ''',
    )
    _write(on_path, "broken_things.py", "raise ImportError('no such library')\n")
    _install(on_path, "extra-things", "test.things", {"third": "extra_things:Third", "broken": "broken_things:X"})
    registry: Registry[object] = Registry("thing", group="test.things")
    assert registry.plugins() == ["broken", "third"] and list(registry) == []  # offered, not loaded
    assert "third" in registry and registry.doc("third") == "A third thing, from a plug-in."
    import extra_things

    assert registry["third"] is extra_things.Third and registry.options("third") is extra_things.Third.Options
    with pytest.warns(PluginWarning, match="plug-in 'broken' .* cannot be loaded: ImportError: no such library"):
        registry.load_plugins()  # composing the schema loads every plug-in: a broken one must not stop the rest
    assert "third" in registry
    with pytest.raises(ValueError, match="plug-in 'broken' .* cannot be loaded: ImportError: no such library"):
        registry["broken"]  # named, it says why
    with pytest.raises(ValueError, match="got 'fourth'; installed plug-ins: broken, third"):
        registry["fourth"]
    assert "fourth" not in registry


def test_every_configurable_registry_has_an_entry_point_group():
    from mfld.discretizations.density import GRID_DIAGNOSTICS
    from mfld.discretizations.grid import GRID_SCHEMES
    from mfld.discretizations.implicit_solvers import LINEAR_SOLVERS
    from mfld.discretizations.kinds import DISCRETIZATIONS
    from mfld.discretizations.particles import PARTICLE_SCHEMES
    from mfld.discretizations.spectral import SPECTRAL_SCHEMES
    from mfld.model.features import FEATURE_MAPS
    from mfld.model.objectives import OBJECTIVES
    from mfld.model.observables import OBSERVABLES

    registries = [
        OBJECTIVES,
        FEATURE_MAPS,
        OBSERVABLES,
        DISCRETIZATIONS,
        PARTICLE_SCHEMES,
        GRID_SCHEMES,
        SPECTRAL_SCHEMES,
        LINEAR_SOLVERS,
        GRID_DIAGNOSTICS,
    ]
    groups = [r.group for r in registries]
    assert all(g and g.startswith("mfld.") for g in groups) and len(set(groups)) == len(groups)
    assert all(len(r) > 0 for r in registries)


class _Wrapped:
    """The shipped tanh map with one method replaced: a plug-in with one mistake."""

    name = "wrapped"

    def __getattr__(self, attr: str):
        from mfld.model.features import FEATURE_MAPS

        return getattr(FEATURE_MAPS["tanh"], attr)


def _plugin(**methods):
    return type("Plugin", (_Wrapped,), methods)()


@pytest.mark.parametrize(
    "obj, message",
    [
        (_plugin(dim=lambda self, d: -1), r"dim\(3\) must return an integer >= 1, got -1"),
        (_plugin(dim=lambda self, d: "3"), r"dim\(3\) must return an integer >= 1, got '3'"),
        (_plugin(evaluate=lambda self, Xa, W: [None, np.zeros((5, 4)).tolist()]), r"a pair \(cache, H\), got list"),
        (_plugin(evaluate=lambda self, Xa, W: np.zeros((5, 4))), r"a pair \(cache, H\), got ndarray"),
        (_plugin(evaluate=lambda self, Xa, W: (None, np.zeros((5, 4)).tolist())), r"H as an array .* got list"),
        (_plugin(dim=lambda self, d: (_ for _ in ()).throw(MemoryError())), r"MemoryError: \(no message\)"),
        (lambda X, W: X @ W.T, r"is a callable that needs arguments"),
    ],
)
def test_a_plugin_feature_map_that_breaks_its_contract_is_named(obj, message):
    """Issue 37 (low): dim() of -1 or a string, evaluate returning a list or one array, a function instead of a
    feature map, a MemoryError without a message reached numpy or Python errors that did not name the plug-in."""
    from mfld.model.features import _adopt

    with pytest.raises(ValueError, match="'mine:fm'.*" + message):
        _adopt("mine:fm", obj)
