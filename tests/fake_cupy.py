"""A test double of CuPy on the CPU: mfld's ``backend = "cupy"`` code path run without a GPU.

**A test double, not a backend users select**: it exists so that the suite catches, on any machine, what on a real
device would be an error or a silent slowdown, and would first show on a lent GPU with minutes to spare:

- an array of this module refuses implicit conversion to NumPy (``numpy.asarray``, a NumPy or SciPy function
  given one), as CuPy's do: ``TypeError``;
- mixing it with a host array of one or more elements in an operation is refused, as CuPy refuses it;
- NumPy's functions (``numpy.sum(a)``, ``numpy.linalg.*``) refuse it (stricter than CuPy, which dispatches some:
  mfld's array code takes ``xp = namespace(...)`` and must not reach NumPy with a device array);
- every copy to the host is counted: ``asnumpy`` / ``.get()`` as bulk transfers (``bulk``, with their sizes)
  and ``float()``, ``int()``, ``bool()``, ``.item()`` of a one-element array as scalar syncs (``scalar``);
  uploads (``asarray`` of host data) as ``uploads``. ``counting()`` resets and yields the counters.

The module provides what mfld takes from ``cupy`` (the array functions, ``linalg``, ``fft``, ``asnumpy``,
``ndarray``) and ``cupyx.scipy`` (``special.erf``, ``linalg.solve_triangular``, ``sparse`` matrices and
``sparse.linalg``'s ``factorized``, ``LinearOperator`` and ``gmres``), each implemented over NumPy and SciPy on
the wrapped arrays; ``factorized`` counts the host copy of its matrix that CuPy's makes (its LU runs on the CPU).
:func:`installed` puts it in place of CuPy for a ``with`` block.
"""

from __future__ import annotations

import contextlib
import operator
import sys
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import scipy.special


@dataclass
class Transfers:
    bulk: list[int] = field(default_factory=list)  # sizes of the arrays copied to the host
    scalar: int = 0
    uploads: int = 0

    def reset(self) -> None:
        self.bulk.clear()
        self.scalar = 0
        self.uploads = 0


TRANSFERS = Transfers()


class HostDeviceMix(TypeError):
    """A host array met a device array in one operation."""


def _unwrap(value: Any, *, upload: bool = False) -> Any:
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray) and value.ndim > 0 and not upload:
        raise HostDeviceMix(
            f"a host (NumPy) array of shape {value.shape} met a device array: move it with xp.asarray first"
        )
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, upload=upload) for v in value)
    return value


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return ndarray(value)
    if isinstance(value, np.generic):  # CuPy's reductions return 0-d device arrays, not host scalars
        return ndarray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _device(function: Callable[..., Any], *, upload: bool = False) -> Callable[..., Any]:
    """``function`` (NumPy's or SciPy's) on device arrays: arguments unwrapped, results wrapped."""

    def call(*args: Any, **kwargs: Any) -> Any:
        args = tuple(_unwrap(a, upload=upload) for a in args)
        kwargs = {k: _unwrap(v, upload=upload) for k, v in kwargs.items()}
        return _wrap(function(*args, **kwargs))

    call.__name__ = getattr(function, "__name__", "function")
    return call


class ndarray:  # noqa: N801 - CuPy's name
    """A device array: a NumPy array inside, which NumPy may not see."""

    __slots__ = ("_a",)
    __array_priority__ = 1000

    def __init__(self, a: np.ndarray) -> None:
        object.__setattr__(self, "_a", a)

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise TypeError("Implicit conversion to a NumPy array is not allowed (as in CuPy): use cupy.asnumpy or .get()")

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        raise TypeError(f"numpy.{func.__name__} was given a device array: use the array's namespace (xp)")

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        return _wrap(getattr(ufunc, method)(*(_unwrap(i) for i in inputs), **_unwrap(kwargs)))

    # -- host transfers --------------------------------------------------------------------------------------
    def get(self) -> np.ndarray:
        TRANSFERS.bulk.append(self._a.size)
        return self._a.copy()

    def _scalar(self) -> Any:
        if self._a.size != 1:
            raise TypeError(f"only one-element device arrays convert to Python scalars, got shape {self._a.shape}")
        TRANSFERS.scalar += 1
        return self._a.reshape(()).item()

    def __float__(self) -> float:
        return float(self._scalar())

    def __int__(self) -> int:
        return int(self._scalar())

    def __index__(self) -> int:
        return operator.index(self._scalar())

    def __bool__(self) -> bool:
        return bool(self._scalar())

    def __complex__(self) -> complex:
        return complex(self._scalar())

    def item(self) -> Any:
        return self._scalar()

    def tolist(self) -> Any:
        TRANSFERS.bulk.append(self._a.size)
        return self._a.tolist()

    # -- the array interface -----------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self._a.shape

    @property
    def ndim(self) -> int:
        return self._a.ndim

    @property
    def size(self) -> int:
        return self._a.size

    @property
    def dtype(self) -> np.dtype:
        return self._a.dtype

    @property
    def itemsize(self) -> int:
        return self._a.itemsize

    @property
    def nbytes(self) -> int:
        return self._a.nbytes

    @property
    def T(self) -> ndarray:  # noqa: N802 - NumPy's name
        return ndarray(self._a.T)

    @property
    def real(self) -> ndarray:
        return ndarray(self._a.real)

    @property
    def imag(self) -> ndarray:
        return ndarray(self._a.imag)

    @property
    def flags(self) -> Any:
        return self._a.flags

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Iterator[ndarray]:
        return (ndarray(np.asarray(row)) for row in self._a)

    def __getitem__(self, key: Any) -> ndarray:
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self._a[_unwrap(key)] = _unwrap(value)

    def __getattr__(self, name: str) -> Any:  # methods: reshape, sum, copy, astype, ...
        if name.startswith("__"):  # __array_interface__, __array_struct__, __dlpack__: NumPy's ways in, refused
            raise AttributeError(name)
        attr = getattr(self._a, name)
        return _device(attr) if callable(attr) else _wrap(attr)

    def __repr__(self) -> str:
        return f"fake_cupy.ndarray({self._a!r})"

    def __hash__(self) -> int:
        return id(self)


def _binary(name: str) -> None:
    def method(self: ndarray, other: Any) -> Any:
        return _wrap(getattr(self._a, name)(_unwrap(other)))

    method.__name__ = name
    setattr(ndarray, name, method)


for _op in "add sub mul truediv floordiv mod pow matmul and or xor lt le gt ge eq ne lshift rshift".split():
    for _form in (f"__{_op}__", f"__r{_op}__", f"__i{_op}__"):
        if hasattr(np.ndarray, _form):
            _binary(_form)
for _op in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _op, lambda self, _n=_op: ndarray(getattr(self._a, _n)()))


# -- the module ------------------------------------------------------------------------------------------------
def asnumpy(a: Any) -> np.ndarray:
    if isinstance(a, ndarray):
        return a.get()
    return np.asarray(a)


def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    if isinstance(a, ndarray):
        return a if dtype is None else ndarray(a._a.astype(dtype, copy=False))
    TRANSFERS.uploads += 1
    return ndarray(np.array(_unwrap(a, upload=True), dtype=dtype, order=order or "K"))


def array(a: Any, dtype: Any = None, copy: bool = True, order: Any = None) -> ndarray:
    if isinstance(a, ndarray):
        return ndarray(np.array(a._a, dtype=dtype, copy=copy))
    return asarray(a, dtype, order)


class _Namespace(types.ModuleType):
    """A module whose missing attributes are NumPy's (or ``source``'s) functions on device arrays."""

    def __init__(self, name: str, source: Any) -> None:
        super().__init__(name)
        self._source = source

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._source, name)
        if callable(attr) and not isinstance(attr, type):
            return _device(attr)
        return attr


def _module() -> _Namespace:
    cupy = _Namespace("cupy", np)
    this = sys.modules[__name__]
    for name in ("ndarray", "asnumpy", "asarray", "array", "TRANSFERS"):
        setattr(cupy, name, getattr(this, name))
    cupy.linalg = _Namespace("cupy.linalg", np.linalg)  # type: ignore[attr-defined]
    cupy.fft = _Namespace("cupy.fft", np.fft)  # type: ignore[attr-defined]
    cupy.random = _Namespace("cupy.random", np.random)  # type: ignore[attr-defined]
    for dtype in ("float32", "float64", "int64", "int32", "bool_", "complex128", "newaxis", "inf", "nan", "pi", "e"):
        setattr(cupy, dtype, getattr(np, dtype))
    cupy.dtype = np.dtype  # type: ignore[attr-defined]
    return cupy


class spmatrix:  # noqa: N801 - CuPy's name
    """A sparse matrix on the device: SciPy's inside; products with device arrays give device arrays."""

    def __init__(self, m: Any) -> None:
        self._m = m

    def __matmul__(self, other: Any) -> Any:
        return _lift(self._m @ _unwrap(_lower(other)))

    dot = __matmul__

    def __getattr__(self, name: str) -> Any:  # tocsc, tocsr, astype, shape, dtype, nnz, ...
        attr = getattr(self._m, name)
        if callable(attr):
            return lambda *a, **k: _lift(attr(*(_lower(x) for x in a), **k))
        return _lift(attr)


def _lower(value: Any) -> Any:
    """The SciPy object inside a device sparse matrix or operator."""
    return value._m if hasattr(value, "_m") and not isinstance(value, ndarray) else value


def _lift(value: Any) -> Any:
    if scipy.sparse.issparse(value):
        return spmatrix(value)
    return _wrap(value)


def _sparse_operator(name: str) -> None:
    def method(self: spmatrix, other: Any) -> Any:
        return _lift(getattr(self._m, name)(_unwrap(_lower(other))))

    setattr(spmatrix, name, method)


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__neg__"):
    if _name == "__neg__":
        spmatrix.__neg__ = lambda self: spmatrix(-self._m)  # type: ignore[method-assign]
    else:
        _sparse_operator(_name)


def _sparse_constructor(function: Callable[..., Any]) -> Callable[..., Any]:
    def make(*args: Any, **kwargs: Any) -> spmatrix:
        return spmatrix(function(*(_unwrap(_lower(a)) for a in args), **kwargs))

    return make


def _sparse_linalg() -> types.ModuleType:
    module = types.ModuleType("cupyx.scipy.sparse.linalg")

    def factorized(M: spmatrix) -> Callable[[Any], Any]:
        TRANSFERS.bulk.append(M._m.nnz)  # CuPy's factorizes on the CPU (scipy's splu): the matrix goes to the host
        solve = scipy.sparse.linalg.factorized(M._m)
        return lambda b: _wrap(solve(_unwrap(b)))

    class LinearOperator:
        """Device in, device out, as CuPy's; SciPy's GMRES gets a host operator over it."""

        def __init__(self, shape: Any, dtype: Any = None, matvec: Any = None, **kw: Any) -> None:
            self.shape, self.dtype, self.matvec = shape, dtype, matvec
            host = lambda x: _unwrap(matvec(ndarray(x)))  # noqa: E731
            self._m = scipy.sparse.linalg.LinearOperator(shape, dtype=dtype, matvec=host)

    def gmres(  # CuPy's signature (its tolerance is ``tol``)
        A: Any,
        b: Any,
        x0: Any = None,
        tol: float = 1e-5,
        restart: Any = None,
        maxiter: Any = None,
        M: Any = None,
        callback: Any = None,
        atol: Any = None,
        callback_type: Any = None,
    ) -> tuple[Any, int]:
        x, info = scipy.sparse.linalg.gmres(
            _lower(A),
            _unwrap(b),
            x0=_unwrap(x0),
            rtol=tol,
            restart=restart,
            maxiter=maxiter,
            M=_lower(M),
            callback=callback,
            atol=atol,
            callback_type=callback_type,
        )
        return _wrap(x), info

    module.factorized, module.LinearOperator, module.gmres = factorized, LinearOperator, gmres  # type: ignore[attr-defined]
    return module


def _cupyx() -> dict[str, types.ModuleType]:
    cupyx = types.ModuleType("cupyx")
    sci = types.ModuleType("cupyx.scipy")
    special = _Namespace("cupyx.scipy.special", scipy.special)
    linalg = _Namespace("cupyx.scipy.linalg", scipy.linalg)
    sparse = types.ModuleType("cupyx.scipy.sparse")
    for name in ("coo_matrix", "csr_matrix", "csc_matrix", "identity", "diags", "eye"):
        setattr(sparse, name, _sparse_constructor(getattr(scipy.sparse, name)))
    sparse.spmatrix = spmatrix  # type: ignore[attr-defined]
    sparse_linalg = _sparse_linalg()
    sparse.linalg = sparse_linalg  # type: ignore[attr-defined]
    cupyx.scipy = sci  # type: ignore[attr-defined]
    sci.special, sci.linalg, sci.sparse = special, linalg, sparse  # type: ignore[attr-defined]
    return {
        "cupyx": cupyx,
        "cupyx.scipy": sci,
        "cupyx.scipy.special": special,
        "cupyx.scipy.linalg": linalg,
        "cupyx.scipy.sparse": sparse,
        "cupyx.scipy.sparse.linalg": sparse_linalg,
    }


@contextlib.contextmanager
def installed() -> Iterator[types.ModuleType]:
    """This double in place of CuPy (``import cupy``, ``cupyx.scipy``, mfld's backend) for a ``with`` block."""
    from mfld.model import backend

    cupy = _module()
    modules = {"cupy": cupy, **_cupyx()}
    saved = {name: sys.modules.get(name) for name in modules}
    saved_backend = backend._cupy
    sys.modules.update(modules)
    backend._cupy = cupy
    try:
        yield cupy
    finally:
        backend._cupy = saved_backend
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


@contextlib.contextmanager
def counting() -> Iterator[Transfers]:
    """The transfers made inside the block."""
    TRANSFERS.reset()
    yield TRANSFERS
