"""Property tests (Hypothesis): states, noise states and configurations come back from their stored form as they
went in, for any value of the shapes and ranges mfld accepts; a hostile noise state is refused by one ValueError."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mfld.config import from_toml, load_config, schema, to_toml
from mfld.discretizations.noise import KeyedNoise, SequentialNoise, noise_from_state
from mfld.discretizations.state import DensityState, ParticleState
from mfld.storage import CheckpointReader, CheckpointStore

# Example counts are fixed (no deadline: the suite must pass on a busy machine); the database stays off so that
# a run depends on nothing a previous run left.
FEW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
finite = st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e300, max_value=1e300)


def _arrays(shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float64, shape, elements=finite)


@st.composite
def particle_states(draw: st.DrawFn, fewest: int = 1) -> ParticleState:
    N, p, levels = draw(st.integers(fewest, 12)), draw(st.integers(1, 4)), draw(st.integers(0, 2))
    return ParticleState(
        draw(_arrays((N, p))),
        draw(st.integers(0, 10**9)),
        draw(finite.filter(lambda t: t >= 0)),
        KeyedNoise(draw(st.integers(0, 2**32 - 1))).state(),
        tuple(draw(_arrays((N, p))) for _ in range(levels)),
    )


@given(particle_states())
@FEW
def test_a_particle_state_comes_back_from_its_arrays(state):
    back = ParticleState.from_arrays(state.step, state.time, state.arrays())
    assert back.step == state.step and back.time == state.time and back.rng_state == state.rng_state
    np.testing.assert_array_equal(back.positions, state.positions)
    assert len(back.history) == len(state.history)
    for a, b in zip(back.history, state.history, strict=True):
        np.testing.assert_array_equal(a, b)


@given(
    st.lists(st.integers(1, 5), min_size=1, max_size=3).flatmap(
        lambda shape: st.tuples(_arrays(tuple(shape)), st.lists(_arrays(tuple(shape)), max_size=2))
    ),
    st.integers(0, 10**6),
)
@FEW
def test_a_density_state_comes_back_from_its_arrays(arrays, step):
    density, history = arrays
    state = DensityState(density, step, 0.5 * step, tuple(history))
    back = DensityState.from_arrays(state.step, state.time, state.arrays())
    np.testing.assert_array_equal(back.density, density)
    assert len(back.history) == len(history)


@given(particle_states(fewest=2))
@settings(max_examples=10, deadline=None, database=None)
def test_a_particle_state_comes_back_from_a_checkpoint_file(state):
    """Through HDF5: the store writes the frame and the reader gives it back exactly (frames of any finite values,
    any size and any number of history levels)."""
    N, p = state.positions.shape
    data = {"X": np.zeros((3, 1)), "Y": np.zeros((3, 1)), "X_test": None, "Y_test": None, "relevant": None}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.h5"
        config = load_config(None, values={"particles.N": N, "data.n": 3, "data.d": 1})
        store = CheckpointStore.create(path, to_toml(config), data, "particles", p, None, "", False)
        store.add_observables(state.step, state.time, {"U": 0.0})
        store.commit(state)
        store.finish()
        back = CheckpointReader(path).snapshot().state()
    assert isinstance(back, ParticleState) and back.rng_state == state.rng_state
    np.testing.assert_array_equal(back.positions, state.positions)
    assert [h.tolist() for h in back.history] == [h.tolist() for h in state.history]


@given(st.integers(0, 2**32 - 1), st.integers(0, 10**6), st.integers(0, 9000), st.integers(1, 300), st.integers(1, 4))
@FEW
def test_keyed_noise_comes_back_from_its_state_and_any_split_draws_the_same(seed, step, start, rows, p):
    noise = noise_from_state(KeyedNoise(seed).state())
    assert isinstance(noise, KeyedNoise) and noise.seed == seed
    whole = noise.normal(step, start, start + rows, p)
    cut = start + rows // 2
    np.testing.assert_array_equal(
        np.vstack([KeyedNoise(seed).normal(step, start, cut, p), KeyedNoise(seed).normal(step, cut, start + rows, p)]),
        whole,
    )


@given(st.integers(0, 2**63), st.sampled_from(["PCG64", "PCG64DXSM", "Philox", "SFC64", "MT19937"]), st.integers(0, 50))
@FEW
def test_sequential_noise_continues_from_its_state(seed, name, skip):
    rng = np.random.Generator(getattr(np.random, name)(seed))
    rng.standard_normal(skip)
    saved = SequentialNoise(rng).state()
    ahead = rng.standard_normal(7)
    again = noise_from_state(saved)
    assert isinstance(again, SequentialNoise)
    np.testing.assert_array_equal(again.normal(0, 0, 7, 1)[:, 0], ahead)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


@given(st.text(max_size=40) | json_values.map(json.dumps))
@settings(max_examples=200, deadline=None, database=None)
def test_a_hostile_noise_state_is_refused_by_one_value_error(text):
    try:
        noise_from_state(text)
    except ValueError:
        pass


def _value_for(key: str) -> st.SearchStrategy[object]:
    """Values the key accepts: drawn by its type, filtered by its own check."""
    spec = schema()[key]
    if spec.options is not None and key != "model.feature":
        names = st.sampled_from(sorted(spec.options))
        return st.lists(names, max_size=2, unique=True) if isinstance(spec.default, list) else names
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if bool in types:
        return st.booleans()
    candidates: list[st.SearchStrategy[object]] = []
    if int in types:
        candidates.append(st.integers(0, 10**6))
    if float in types:
        candidates.append(st.floats(1e-12, 1e6, allow_nan=False))
    if str in types:
        candidates.append(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12))
    if list in types:
        candidates.append(st.lists(st.integers(3, 40), min_size=1, max_size=3))
    return st.one_of(*candidates).filter(spec.accepts)


# Keys whose values are read as file or code names when loaded (a data file, a feature map): left at their defaults.
NAMED = {"data.source", "data.test_source", "model.feature"}


@st.composite
def configurations(draw: st.DrawFn) -> dict[str, object]:
    keys = draw(st.lists(st.sampled_from(sorted(set(schema()) - NAMED)), max_size=8, unique=True))
    return {key: draw(_value_for(key)) for key in keys}


@given(configurations())
@settings(max_examples=60, deadline=None, database=None)
def test_a_configuration_comes_back_from_its_stored_toml(values):
    """Any values the keys accept: the configuration loads, and its TOML (as a checkpoint stores it) reads back to
    the same tables, with every value of the same type."""
    config = load_config(None, values=values)
    back = from_toml(to_toml(config), written_by="0.2.0.dev1")
    assert back == config
    for key, value in values.items():
        section, _, leaf = key.rpartition(".")
        got = back[section][leaf] if section else back[leaf]
        assert type(got) is type(value) and (got == value or (isinstance(value, float) and math.isclose(got, value)))
