"""Elementwise passes over large NumPy arrays on several threads, within the run's thread count.

An elementwise pass (``tanh`` of the pre-activations, ``1 - h^2``) over an n x N array runs on one
core in NumPy while its BLAS products use all of them. NumPy's ufuncs release the GIL, so the rows
split into blocks run side by side on threads of this process; each entry is computed by the same
ufunc loop as in one pass, so the result does not depend on the number of threads (bit for bit).
The thread count follows the run's BLAS threads (:func:`limited`, entered where the run machinery
limits BLAS, :mod:`mfld.solver.threads`); outside it, and for CuPy arrays, a pass is one call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .backend import Array, namespace

MIN_BLOCK = 1 << 15
"""Entries per thread below which a pass stays on one thread (starting a block costs about a microsecond's work)."""

_local = threading.local()  # a thread's own count: the job pool's and the tests' threads do not share one


def threads() -> int:
    """The threads an elementwise pass of this thread may use (1 outside :func:`limited`)."""
    return getattr(_local, "threads", 1)


@contextlib.contextmanager
def limited(count: int) -> Iterator[None]:
    """Elementwise passes of the calling thread use up to ``count`` threads inside the ``with`` block."""
    before, pool = threads(), getattr(_local, "pool", None)
    _local.threads = max(1, int(count))
    _local.pool = ThreadPoolExecutor(_local.threads - 1) if _local.threads > 1 else None
    try:
        yield
    finally:
        if _local.pool is not None:
            _local.pool.shutdown()
        _local.threads, _local.pool = before, pool


def apply(fn: Callable[[Array, Array], object], x: Array) -> Array:
    """``out = fn(x)`` for an elementwise ``fn(x, out)``, over blocks of rows of ``x`` on :func:`threads` threads
    (NumPy arrays of two or more dimensions; anything else in one call)."""
    xp = namespace(x)
    out = xp.empty_like(x)
    pool: ThreadPoolExecutor | None = getattr(_local, "pool", None)
    k = min(threads(), x.shape[0], x.size // MIN_BLOCK) if xp is np and x.ndim >= 2 else 1
    if k <= 1 or pool is None:
        fn(x, out)
        return out
    edges = np.linspace(0, x.shape[0], k + 1).astype(int)
    blocks = [(x[a:b], out[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    futures = [pool.submit(fn, *block) for block in blocks[1:]]
    fn(*blocks[0])
    for future in futures:
        future.result()
    return out
