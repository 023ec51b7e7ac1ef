"""Array-backend helpers: one code path for NumPy and CuPy.

Every numerical routine in mfld takes ``xp = namespace(*arrays)`` and uses only
functions that NumPy and CuPy share. What differs between them lives here: the
backend registry, moving arrays to the host, and the triangular solves behind the
Cholesky helpers. The other library-specific imports sit where they are used: the
sparse linear algebra of the grid step (:mod:`mfld.discretizations.implicit_solvers`), the
error function of the ``erf`` features (:mod:`mfld.model.features`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import TypeAlias

import numpy as np

from .registry import Registry

Array: TypeAlias = np.ndarray
"""A NumPy array, or a CuPy array where the backend is ``cupy`` (the same interface, at run time any of the two)."""

try:  # CuPy is an optional extra (mfld[gpu]).
    import cupy as _cupy
except ImportError:  # pragma: no cover - depends on the machine
    _cupy = None


def namespace(*arrays: Array) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if _cupy is not None:
        for a in arrays:
            if isinstance(a, _cupy.ndarray):
                return _cupy
    return np


def _cupy_module() -> ModuleType:
    if _cupy is None:
        raise ImportError(
            "backend = 'cupy' needs CuPy: install the GPU extra with `pip install 'mfld[gpu]'` "
            "(or set backend = 'numpy')."
        )
    return _cupy


BACKENDS: Registry[Callable[[], ModuleType]] = Registry("backend")
BACKENDS.add("numpy", lambda: np, "CPU")
BACKENDS.add("cupy", _cupy_module, "an NVIDIA GPU, `pip install 'mfld[gpu]'`")


def get_backend(name: str) -> ModuleType:
    """Array module for a configuration name (``"numpy"`` or ``"cupy"``)."""
    return BACKENDS[name]()


def chunks(total: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(total)`` of length at most ``size``."""
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def row_squares(A: Array) -> Array:
    """``sum_j A_ij^2`` for each row i: one pass by ``einsum``, without the ``A * A`` temporary; on the 2.1 M x 3
    centres of a 128^3 grid 0.008 s against 0.028 s for ``sum(A * A, axis=1)`` (two threads, timed inline)."""
    return namespace(A).einsum("ij,ij->i", A, A)


CACHE_BLOCK_BYTES = 16 * 2**20
"""Bytes of an n x b block of the features that one pass keeps in the CPU's caches (benchmarks/cache_blocks.py)."""


def cache_columns(xp: ModuleType, rows: int, columns: int, itemsize: int = 8) -> int:
    """Columns per block when an n x N array is passed over block by block: at most ``CACHE_BLOCK_BYTES`` a block
    on the CPU, so that the second pass over a block reads the cache, not memory; on a GPU all ``columns`` at once
    (its memory is fast and each block costs kernel launches)."""
    if xp is not np:  # pragma: no cover - GPU only
        return max(columns, 1)
    return max(1, min(columns, CACHE_BLOCK_BYTES // max(rows * itemsize, 1)))


def to_host(a: Array) -> np.ndarray:
    """Copy an array to host memory as a NumPy array (no-op for NumPy input)."""
    if _cupy is not None and isinstance(a, _cupy.ndarray):
        return _cupy.asnumpy(a)
    return np.asarray(a)


def cholesky_solve(K: Array, B: Array) -> tuple[Array, Array]:
    """Solve ``K X = B`` for symmetric positive-definite ``K``.

    Returns ``(X, L)`` with ``K = L L^T``. Raises ``numpy.linalg.LinAlgError``
    when ``K`` is not numerically positive definite.
    """
    L = namespace(K).linalg.cholesky(K)
    return cholesky_apply(L, B), L


def cholesky_apply(L: Array, B: Array) -> Array:
    """``K^{-1} B = L^{-T} L^{-1} B`` for the Cholesky factor ``L`` of ``K`` (B a vector or n x T)."""
    xp = namespace(L, B)
    if xp is np:
        from scipy.linalg import solve_triangular
    else:  # pragma: no cover - GPU only
        from cupyx.scipy.linalg import solve_triangular
    # One column at a time: SciPy's multi-column path (trsm) runs on SciPy's own OpenBLAS threads, which
    # contend with NumPy's (measured 10x slower at n = 200); the single-column path (trsv) does not.
    cols = B if B.ndim == 2 else B[:, None]
    X = xp.empty_like(cols)
    for j in range(cols.shape[1]):
        X[:, j] = solve_triangular(L.T, solve_triangular(L, cols[:, j], lower=True), lower=False)
    return X if B.ndim == 2 else X[:, 0]


def inverse_trace_from_cholesky(L: Array) -> float:
    """``tr(K^{-1}) = ||L^{-1}||_F^2`` for ``K = L L^T``."""
    xp = namespace(L)
    Linv = xp.linalg.inv(L)
    return float(xp.sum(Linv * Linv))


def available_memory() -> int:
    """Bytes of memory available to this process now (Linux's MemAvailable; total memory elsewhere)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
