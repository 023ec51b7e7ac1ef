"""Sources of the particles' Gaussian noise (and of the label noise).

:class:`KeyedNoise` makes the noise of particle ``i`` at step ``k`` a function of
``(seed, k, i)`` alone: particles are drawn in blocks of ``BLOCK`` global
indices, each block from a Philox generator keyed by ``(seed, k, block)``. A run
split over any number of processes therefore follows the same trajectory, and a
resumed run needs only the seed and the step. :class:`SequentialNoise` wraps a
NumPy generator for runs built by hand (its state is saved instead).
"""

from __future__ import annotations

import json
from typing import Protocol

import numpy as np

BLOCK = 4096
_LABEL_TAG = 2**32 - 1  # the block index reserved for label noise


class NoiseSource(Protocol):
    """Where a particle system's randomness comes from."""

    def normal(self, step: int, start: int, stop: int, p: int) -> np.ndarray:
        """Standard normals for global particle indices ``start .. stop - 1`` at ``step``."""
        ...

    def uniform(self, step: int, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        """Uniform draws shared by all processes at ``step`` (the label noise)."""
        ...

    def state(self) -> str:
        """JSON text from which :func:`noise_from_state` rebuilds the source."""
        ...


class KeyedNoise:
    """Counter-based noise: rows ``[start, stop)`` of step ``k`` are the same however they are split."""

    def __init__(self, seed: int) -> None:
        if not 0 <= int(seed) < 2**32:
            raise ValueError(f"seed must be an integer in [0, 2^32), got {seed}")
        self.seed = int(seed)

    def _generator(self, step: int, block: int) -> np.random.Generator:
        return np.random.Generator(np.random.Philox(key=(self.seed << 96) | (int(step) << 32) | int(block)))

    def normal(self, step: int, start: int, stop: int, p: int) -> np.ndarray:
        """Standard normals for global particle indices ``start .. stop - 1`` at ``step``, ``(stop - start) x p``."""
        out = np.empty((stop - start, p))
        for b in range(start // BLOCK, (stop - 1) // BLOCK + 1 if stop > start else start // BLOCK):
            lo, hi = max(start, b * BLOCK), min(stop, (b + 1) * BLOCK)
            # A block's rows are its generator's draws in order: only those up to the last row needed are drawn
            # (N = 2000 draws 2000 rows of a block of 4096), straight into the output where the block starts in it.
            generator = self._generator(step, b)
            if lo == b * BLOCK:
                generator.standard_normal(out=out[lo - start : hi - start])
            else:
                out[lo - start : hi - start] = generator.standard_normal((hi - b * BLOCK, p))[lo - b * BLOCK :]
        return out

    def uniform(self, step: int, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        """Uniform draws shared by all processes at ``step`` (the label noise)."""
        return self._generator(step, _LABEL_TAG).uniform(low, high, shape)

    def state(self) -> str:
        return json.dumps({"stream": "keyed-philox", "seed": self.seed, "block": BLOCK})


class SequentialNoise:
    """Noise drawn in sequence from a NumPy generator (single process only)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def normal(self, step: int, start: int, stop: int, p: int) -> np.ndarray:
        return self.rng.standard_normal((stop - start, p))

    def uniform(self, step: int, shape: tuple[int, ...], low: float, high: float) -> np.ndarray:
        return self.rng.uniform(low, high, shape)

    def state(self) -> str:
        # Philox and MT19937 keep arrays in their state (key, counter): stored as lists, which their setters take.
        return json.dumps(
            {"stream": "sequential", "state": self.rng.bit_generator.state},
            default=lambda a: a.tolist() if isinstance(a, np.ndarray) else repr(a),
        )


def as_noise(source: NoiseSource | np.random.Generator | int) -> NoiseSource:
    """A noise source from a seed (keyed), a NumPy generator (sequential) or a noise source."""
    if isinstance(source, np.random.Generator):
        return SequentialNoise(source)
    if isinstance(source, int | np.integer):
        return KeyedNoise(int(source))
    if all(callable(getattr(source, m, None)) for m in ("normal", "uniform", "state")):
        return source
    raise TypeError(f"noise must be a seed, a numpy Generator or a noise source, got {type(source).__name__}")


# Names read from a file select code only through this table.
_BIT_GENERATORS = {
    "PCG64": np.random.PCG64,
    "PCG64DXSM": np.random.PCG64DXSM,
    "Philox": np.random.Philox,
    "SFC64": np.random.SFC64,
    "MT19937": np.random.MT19937,
}


def noise_from_state(text: str) -> KeyedNoise | SequentialNoise:
    """Rebuild a noise source from its saved ``state()``; any other text is refused with one line."""
    bad = "the saved noise state (/particles/mu/rng_state) is not one mfld writes"
    try:
        st = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        raise ValueError(f"{bad}: it is not JSON") from None
    if not isinstance(st, dict):
        raise ValueError(f"{bad}: a JSON {type(st).__name__}, not an object")
    if st.get("stream") == "keyed-philox":
        seed, block = st.get("seed"), st.get("block")
        if not (isinstance(seed, int) and isinstance(block, int)) or isinstance(seed, bool) or isinstance(block, bool):
            raise ValueError(f"{bad}: the keyed stream needs integer 'seed' and 'block', got {seed!r} and {block!r}")
        if block != BLOCK:
            raise ValueError(f"the checkpoint's noise blocks have {block} rows, this mfld uses {BLOCK}")
        return KeyedNoise(seed)
    inner = st.get("state") if st.get("stream") == "sequential" else st
    name = inner.get("bit_generator") if isinstance(inner, dict) else None
    if not isinstance(inner, dict) or name not in _BIT_GENERATORS:
        raise ValueError(f"unknown noise generator {name!r} in a saved state; known: {sorted(_BIT_GENERATORS)}")
    bitgen = _BIT_GENERATORS[name]()
    try:
        bitgen.state = inner
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{bad}: the {name} state is malformed ({type(e).__name__}: {e})") from None
    return SequentialNoise(np.random.Generator(bitgen))
