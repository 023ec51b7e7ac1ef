"""Configuration keys declared by the components: the composed schema is the hand-written one it replaced, the
generated files are current, and a component's new key is one field in its own file."""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from mfld.config import ConfigError, load_config
from mfld.model.options import declared, from_values, keys_of, positive, ref
from mfld.solver import config as cfg

ROOT = Path(__file__).resolve().parents[2]

# Values each key's check is asked about: numbers at the edges of every range in use, the names of the shipped
# components, lists of every shape the list keys take, and values of the wrong type.
PROBES = [
    -1,
    0,
    1,
    2,
    3,
    0.5,
    1e-4,
    1e-3,
    0.999,
    1.5,
    1e9,
    float("inf"),
    float("nan"),
    True,
    False,
    "",
    "x",
    "tanh",
    "particles",
    "grid",
    "numpy",
    "float64",
    "auto",
    "pcg",
    "prior",
    "x1x2",
    "gaussian",
    "euler-maruyama",
    "implicit-euler",
    "imex-euler",
    "direct",
    "two-timescale",
    "tanh_bias",
    "mod:attr",
    [],
    ["y"],
    [1.0, 2.0],
    [3, 4],
    [2],
    [1, 2, 3, 4],
    [0.5, -1],
]


def _refused_or_not(check, value) -> bool:
    try:
        return bool(check(value))
    except Exception:  # the hand-written checks raised on values of a wrong type, which the type test refuses first
        return False


def _one_of(requirement: str) -> str | frozenset[str]:
    """A choice's requirement as the set it names (the order of registered entries is theirs, not the key's)."""
    return frozenset(re.findall(r"'([^']*)'", requirement)) if requirement.startswith("one of ") else requirement


# Keys whose meaning changed on purpose after the switch, with the change that made it; everything else of theirs
# (type, requirement, default, version, checks) is still compared.
REDOCUMENTED = {
    "stationary.max_iter": "the safeguarded mu* solver counts evaluations of the map, rejected trials included",
    "stationary.damping": "the safeguarded mu* solver takes damping as its largest step and halves it on a rise of Obj",
    "time.eta": "with time.adaptive it is the first step",
    "data.source": "it also names scikit-learn's data sets, sklearn:<name>",
    "grid.solver_tol": "it is also the cg solver's bound on the relative L1 error of a step",
}
REDOCUMENTED_CHOICES = {
    ("grid.linear_solver", "auto"): "auto takes cg, not krylov, above the crossover",
}


def test_the_composed_schema_is_the_hand_written_one_it_replaced():
    """Every key of solver/config.py's SCHEMA at e6d68c8 (its type, requirement, doc, choices, default from
    default.toml, KEY_SINCE version, and its check's verdict on each probe, tests/data/schema-e6d68c8.json) is
    declared by a component with the same of each: no key was lost or changed. Keys, and a choice's entries,
    registered since (docs/examples/extensions.patch adds some) are new, not changes."""
    before = json.loads((ROOT / "tests/data/schema-e6d68c8.json").read_text())["keys"]
    now = cfg.schema()
    assert set(before) <= set(now), sorted(set(before) - set(now))
    for key, old in before.items():
        spec = now[key]
        types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
        assert [t.__name__ for t in types] == old["type"], key
        want, have = _one_of(old["requirement"]), _one_of(spec.requirement)
        assert want <= have if isinstance(want, frozenset) else want == have, key
        if key == "model.feature":  # its doc ended with the registered maps' names; they are its choices now
            doc, names = old["doc"].rsplit(": ", 1)
            assert spec.doc == doc and set(re.findall("`([^`]*)`", names)) <= set(spec.choices), key
        else:
            assert spec.doc == old["doc"] or key in REDOCUMENTED, key
            assert (spec.choices is None) == (old["choices"] is None), key
            kept = {k: v for k, v in (old["choices"] or {}).items() if (key, k) not in REDOCUMENTED_CHOICES}
            assert old["choices"] is None or kept.items() <= spec.choices.items(), key
            assert all(name in spec.choices for k, name in REDOCUMENTED_CHOICES if k == key), key
        assert spec.default == old["default"], key
        assert spec.since == old["since"], key
        assert [_refused_or_not(spec.check, v) for v in PROBES] == old["check"], key


def test_the_shipped_default_and_the_readme_tables_are_generated_from_the_options():
    shipped = (ROOT / "data/configs/default.toml").read_text()
    assert shipped == cfg.generated_default_text(), "regenerate with `python -m mfld.config --write`"
    assert tomllib.loads(shipped) == cfg.defaults()
    readme = (ROOT / "README.md").read_text()
    assert cfg.reference_table() in readme and cfg.observables_table() in readme, (
        "regenerate with `python -m mfld.config --write`"
    )


def test_every_key_has_a_meaning_a_default_that_passes_its_check_and_a_version():
    for key, spec in cfg.schema().items():
        assert spec.doc and spec.accepts(spec.default), key
        assert cfg.version_order(spec.since) != cfg.version_order("not a version"), key


@dataclass(frozen=True, kw_only=True)
class _HuberOptions:
    section: ClassVar[str] = "model"
    huber_width: float = positive(1.0, "Huber: the residual where the loss turns linear", since="9.0.0")
    lam: float = ref("model.lam")


def test_a_component_declares_its_key_in_its_own_file_and_the_configuration_takes_it():
    """A new objective with a parameter: its options are one dataclass registered with it; the key is in the
    schema, the defaults and the README table, checked, and refused again once the objective is gone."""
    from mfld.model.objectives import OBJECTIVES

    assert declared(_HuberOptions).keys() == {"model.huber_width"}
    assert keys_of(_HuberOptions) == {"huber_width": "model.huber_width", "lam": "model.lam"}
    with OBJECTIVES.registered("huber", OBJECTIVES["two-timescale"], "pseudo-Huber", options=_HuberOptions):
        config = load_config(None, ["model.huber_width=0.5"])
        assert config["model"]["huber_width"] == 0.5 and cfg.defaults()["model"]["huber_width"] == 1.0
        assert "| `model.huber_width` | `1.0` | Huber: the residual" in cfg.reference_table()
        assert cfg.key_since()["model.huber_width"] == "9.0.0"  # a file of an earlier mfld takes the default
        opts = from_values(_HuberOptions, {"model.huber_width": 0.5, "model.lam": 0.01})
        assert (opts.huber_width, opts.lam) == (0.5, 0.01)
        with pytest.raises(ConfigError, match="'model.huber_width' must be a finite number > 0, got -1"):
            load_config(None, ["model.huber_width=-1"])
    with pytest.raises(ConfigError, match="unknown configuration key 'model.huber_width'"):
        load_config(None, ["model.huber_width=0.5"])


def test_a_key_declared_twice_is_refused_by_name():
    @dataclass(frozen=True, kw_only=True)
    class Clash:
        section: ClassVar[str] = "time"
        eta: float = positive(0.1, "another step")

    from mfld.discretizations.particles import PARTICLE_SCHEMES

    with (
        PARTICLE_SCHEMES.registered("clash", PARTICLE_SCHEMES["euler-maruyama"], options=Clash),
        pytest.raises(ConfigError, match="'time.eta' is declared by both .*TimeOptions and .*Clash"),
    ):
        cfg.schema()
