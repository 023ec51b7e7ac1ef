"""Seeded synthetic data sets used in the paper and the validation suite.

* ``x1x2``: ``f°(x) = x_1 x_2`` (the paper's Section 6 experiment);
* ``single-index``: ``f°(x) = g(u° . x)`` with a random unit direction ``u°`` and a
  link ``g`` (``tanh``, ``relu``, ``he2`` = ``z^2 - 1``, ``he3`` = ``z^3 - 3 z``);
* ``sparse-sin``: ``f°(x) = sin(2 pi omega u° . x)`` with ``u°`` a unit vector
  supported on ``m`` random coordinates (an m-sparse target).

Inputs are standard Gaussian or uniform on the hypercube ``{-1, 1}^d``. Training
labels carry noise ``eps ~ Unif[-sigma, sigma]``; test labels are the clean
``f°(X_test)``, so the test loss measures the error against the truth.
"""

from __future__ import annotations

import csv
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from .backend import available_memory
from .options import choice, option, positive, positive_int, text
from .problem import DATA_LIMIT, check_values

TARGETS = ("x1x2", "single-index", "sparse-sin")
INPUTS = ("gaussian", "hypercube")
LINKS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "he2": lambda z: z * z - 1.0,
    "he3": lambda z: z**3 - 3.0 * z,
}


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """The ``[data]`` keys: a data file, or the generator's target, inputs and sizes."""

    section: ClassVar[str] = "data"
    source: str = text(
        "",
        "a data file instead of a generated set: `.npz` (arrays X, Y, optionally X_test, Y_test) "
        "or CSV with a header; relative to the configuration file (or, with `--set`, to the working "
        "directory); or a scikit-learn set, `sklearn:digits`, `sklearn:digits-binary`, `sklearn:breast-cancer`, "
        "`sklearn:diabetes` (split and standardised, the split drawn by `seed`); empty: the generator below",
        since="0.2.0.dev1",
    )
    test_source: str = text("", "a test set in the same format (when the data file holds none)", since="0.2.0.dev1")
    x_columns: list[str] = option(
        [],
        "CSV: the input columns (empty: every column that is not a target)",
        list,
        lambda v: all(isinstance(c, str) for c in v),
        "a list of column names",
        since="0.2.0.dev1",
    )
    y_columns: list[str] = option(
        ["y"],
        "CSV: the target columns (one per task)",
        list,
        lambda v: len(v) > 0 and all(isinstance(c, str) for c in v),
        "a non-empty list of column names",
        since="0.2.0.dev1",
    )
    comment: str = text(
        "#",
        "CSV: lines starting with this are comments (empty: none); quoted fields, a byte-order mark and pandas' "
        "unnamed index column are read as R, pandas and spreadsheets write them",
        since="0.2.0.dev2",
    )
    target: str = choice(
        "x1x2",
        "`x1x2` (f = x1 x2), `single-index` (f = g(u.x)), `sparse-sin` (f = sin(2 pi omega u.x), u m-sparse)",
        TARGETS,
        docs=False,
    )
    inputs: str = choice("gaussian", "`gaussian` N(0, I) or `hypercube` {-1, 1}^d", INPUTS, docs=False)
    d: int = positive_int(10, "input dimension d")
    n: int = positive_int(1000, "training samples n")
    n_test: int = positive_int(1000, "test samples; test targets are the clean f(x)")
    noise: float = option(
        0.0,
        "label noise sigma, eps ~ Unif[-sigma, sigma]",
        (int, float),
        lambda v: 0 <= v <= DATA_LIMIT,
        f"a number in [0, {DATA_LIMIT:g}] (beyond, the targets overflow float64 in the kernel system)",
    )
    link: str = choice("tanh", "single-index link g (`he2` = z^2 - 1, `he3` = z^3 - 3z)", LINKS, docs=False)
    m: int = positive_int(2, "sparse-sin: number of relevant coordinates")
    frequency: float = positive(0.25, "sparse-sin: omega")


@dataclass(frozen=True)
class Dataset:
    """Training and test data with the target's relevant subspace (d x k, orthonormal; None when unknown)."""

    X: np.ndarray
    Y: np.ndarray
    X_test: np.ndarray | None
    Y_test: np.ndarray | None
    relevant: np.ndarray | None


def _inputs(kind: str, n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "gaussian":
        return rng.standard_normal((n, d))
    if kind == "hypercube":
        return rng.choice(np.array([-1.0, 1.0]), size=(n, d))
    raise ValueError(f"data.inputs must be one of {INPUTS}, got {kind!r}")


def make_dataset(
    target: str = "x1x2",
    *,
    d: int,
    n: int,
    n_test: int,
    noise: float = 0.0,
    inputs: str = "gaussian",
    link: str = "tanh",
    m: int = 2,
    frequency: float = 0.25,
    seed: int = 0,
) -> Dataset:
    """Draw a data set; everything is a deterministic function of ``seed``."""
    if noise < 0:
        raise ValueError(f"data.noise (label noise level sigma) must be >= 0, got {noise}")
    rng = np.random.default_rng([seed, 0x5EED])
    if target == "x1x2":
        if d < 2:
            raise ValueError(f"target 'x1x2' needs data.d >= 2, got {d}")
        relevant = np.eye(d)[:, :2]

        def f(X: np.ndarray) -> np.ndarray:
            return X[:, 0] * X[:, 1]

    elif target == "single-index":
        if link not in LINKS:
            raise ValueError(f"data.link must be one of {sorted(LINKS)}, got {link!r}")
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
        relevant = u[:, None]
        g = LINKS[link]

        def f(X: np.ndarray) -> np.ndarray:
            return g(X @ u)

    elif target == "sparse-sin":
        if not 1 <= m <= d:
            raise ValueError(f"data.m must satisfy 1 <= m <= d = {d}, got {m}")
        support = np.sort(rng.choice(d, size=m, replace=False))
        u = np.zeros(d)
        u[support] = rng.choice([-1.0, 1.0], size=m) / np.sqrt(m)
        relevant = u[:, None]

        def f(X: np.ndarray) -> np.ndarray:
            return np.sin(2.0 * np.pi * frequency * (X @ u))

    else:
        raise ValueError(f"data.target must be one of {TARGETS}, got {target!r}")
    X = _inputs(inputs, n, d, rng)
    X_test = _inputs(inputs, n_test, d, rng)
    Y = f(X) + rng.uniform(-noise, noise, size=n)
    return Dataset(X, Y[:, None], X_test, f(X_test)[:, None], relevant)


def _npz(path: Path) -> dict[str, np.ndarray]:
    """The real-valued arrays of an ``.npz`` archive, refused with one line for anything else."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(
            f"data file {str(path)!r} is not a readable .npz archive (empty, truncated or another "
            f"format: {type(e).__name__}); write it with numpy.savez(path, X=..., Y=...)"
        ) from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(
            f"data file {str(path)!r} is a single .npy array, not an .npz archive; write it with "
            "numpy.savez(path, X=..., Y=...)"
        )
    out = {}
    with z:
        for name in z.files:
            # A compressed member can inflate a small file to gigabytes: its declared size is known before reading.
            members = z.zip
            size = members.getinfo(f"{name}.npy").file_size if members and f"{name}.npy" in members.namelist() else 0
            if size > available_memory() // 2:
                raise ValueError(
                    f"data file {str(path)!r}: array {name!r} inflates to {size / 2**30:.3g} GiB, more than half "
                    f"of the {available_memory() / 2**30:.3g} GiB of memory available; mfld does not read it"
                )
            try:
                a = z[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise ValueError(
                    f"data file {str(path)!r}: array {name!r} cannot be read ({type(e).__name__}: "
                    f"{e}); the archive is damaged or holds objects"
                ) from None
            if a.dtype.kind not in "iuf":
                what = {
                    "c": "complex",
                    "M": "datetime",
                    "m": "timedelta",
                    "V": "structured",
                    "b": "boolean",
                    "U": "text",
                    "S": "bytes",
                    "O": "object",
                }.get(a.dtype.kind, str(a.dtype))
                raise ValueError(
                    f"data file {str(path)!r}: array {name!r} is {what} ({a.dtype}); inputs and "
                    "targets must be real numbers (integers or floats)"
                )
            out[name] = a.astype(float)
    return out


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _csv(path: Path, comment: str = "#") -> tuple[list[str], np.ndarray]:
    """Header and rows of a UTF-8 CSV file as R's ``write.csv``, pandas' ``to_csv`` and spreadsheets write it: fields
    quoted or not, a byte-order mark, blank lines, and lines starting with ``comment`` (``data.comment``; empty:
    none) skipped. The unnamed row-name column pandas (0 .. n-1) and R (1 .. n) write by default is dropped;
    each malformed file is refused with one line naming it and the fix."""
    raw = path.read_bytes()
    if b"\0" in raw:
        raise ValueError(f"CSV file {str(path)!r} holds binary data (NUL bytes), not text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"CSV file {str(path)!r} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    numbered = [(k, line) for k, line in enumerate(text.splitlines(), start=1) if line.strip()]
    comments = [line for _, line in numbered if comment and line.lstrip().startswith(comment)]
    numbered = [(k, line) for k, line in numbered if not (comment and line.lstrip().startswith(comment))]
    if not numbered:
        raise ValueError(f"CSV file {str(path)!r} is empty; it needs a header row and data rows")
    try:
        parsed = list(csv.reader((line for _, line in numbered), skipinitialspace=True, strict=True))
    except csv.Error as e:
        raise ValueError(f"CSV file {str(path)!r} is not valid CSV: {e}") from None
    header = [h.strip() for h in parsed[0]]
    lines = [k for k, _ in numbered]
    if all(_is_number(h) for h in header):
        hint = ""
        if comments:
            hint = (
                f"; its header seems to be the comment line {comments[-1].strip()!r} (numpy.savetxt writes its header "
                "so: pass comments='' to it)"
            )
        raise ValueError(f"CSV file {str(path)!r} has no header row: its first row is numbers{hint}")
    rows = [[f.strip() for f in fields] for fields in parsed[1:]]
    for first in (0, 1):  # the row names pandas (0 .. n-1) and R's write.csv (1 .. n) write by default: not data
        if header[0] in ("", "Unnamed: 0") and rows and all(r and r[0] == str(i + first) for i, r in enumerate(rows)):
            header, rows = header[1:], [r[1:] for r in rows]
            break
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise ValueError(
            f"CSV file {str(path)!r}: the header names {repeated} more than once; each column needs its own name"
        )
    if "" in header:
        k = header.index("")
        hint = (
            " (pandas and R write their row names so: save with to_csv(..., index=False) or write.csv(..., "
            "row.names = FALSE))"
            if k == 0
            else ""
        )
        raise ValueError(f"CSV file {str(path)!r}: column {k + 1} of the header has no name{hint}")
    if not rows:
        raise ValueError(f"CSV file {str(path)!r} has a header and no data rows")
    for line, fields in zip(lines[1:], rows, strict=True):
        if len(fields) != len(header):
            raise ValueError(f"CSV file {str(path)!r}, line {line}: {len(fields)} fields, the header has {len(header)}")
        for column, field in zip(header, fields, strict=True):
            if not _is_number(field):
                raise ValueError(f"CSV file {str(path)!r}, line {line}, column {column!r}: {field!r} is not a number")
    return header, np.array(rows, dtype=float)


Table = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]


def _read_table(path: Path, x_columns: list[str], y_columns: list[str], comment: str = "#") -> Table:
    """``(X, Y, X_test, Y_test)`` of an ``.npz`` file (arrays ``X``, ``Y``, optionally ``X_test``, ``Y_test``)
    or of a CSV file with a header row (no test set), each array's values checked and the file named."""
    if path.suffix == ".npz":
        arrays = _npz(path)
        missing = [k for k in ("X", "Y") if k not in arrays]
        if missing:
            raise ValueError(f"data file {str(path)!r} lacks the arrays {missing}; it holds {sorted(arrays)}")
        if arrays["X"].ndim != 2 or arrays["Y"].ndim not in (1, 2):
            raise ValueError(
                f"data file {str(path)!r}: X must be n x d and Y n or n x T, got shapes "
                f"{arrays['X'].shape} and {arrays['Y'].shape}"
            )
        if ("X_test" in arrays) != ("Y_test" in arrays):
            raise ValueError(f"data file {str(path)!r} has one of X_test and Y_test; give both or neither")
        return _checked(path, (arrays["X"], arrays["Y"], arrays.get("X_test"), arrays.get("Y_test")))
    if path.suffix != ".csv":
        raise ValueError(f"data.source must be a .npz or .csv file, got {str(path)!r}")
    for key, names in (("data.x_columns", x_columns), ("data.y_columns", y_columns)):
        if len(set(names)) != len(names):
            raise ValueError(f"{key} names a column more than once: {names}")
    both = sorted(set(x_columns) & set(y_columns))
    if both:
        raise ValueError(
            f"columns {both} are in both data.x_columns and data.y_columns; a column is an input or a target"
        )
    header, table = _csv(path, comment)
    missing = [c for c in y_columns + x_columns if c not in header]
    if missing:
        raise ValueError(
            f"CSV file {str(path)!r} has no columns {missing}; its columns are {header} "
            "(set data.x_columns and data.y_columns)"
        )
    xs = x_columns or [c for c in header if c not in y_columns]
    if not xs:
        raise ValueError(f"CSV file {str(path)!r} has no input column: its columns {header} are all targets")
    return _checked(
        path, (table[:, [header.index(c) for c in xs]], table[:, [header.index(c) for c in y_columns]], None, None)
    )


def _checked(path: Path, table: Table) -> Table:
    """``table`` once its values pass :func:`~mfld.model.problem.check_values`, or an error naming the file."""
    for name, a in zip(("X", "Y", "X_test", "Y_test"), table, strict=True):
        if a is not None:
            try:
                check_values(name, a)
            except ValueError as e:
                raise ValueError(f"data file {str(path)!r}: {e}") from None
    return table


def read_dataset(
    source: str | Path,
    x_columns: list[str] | None = None,
    y_columns: list[str] | None = None,
    test_source: str | Path | None = None,
    comment: str = "#",
) -> Dataset:
    """A data set from files: ``.npz`` with arrays ``X`` (n x d), ``Y`` (n or n x T) and optionally
    ``X_test``, ``Y_test``; or CSV with a header, inputs ``x_columns`` (default: every column not a
    target) and targets ``y_columns`` (default ``["y"]``), lines starting with ``comment`` skipped.
    ``test_source`` (same format) gives the test set when the training file has none. Files are read without
    pickles; values are checked as :class:`~mfld.model.problem.Problem` checks them, with the file named, and
    shapes by Problem."""
    y_columns = list(y_columns or ["y"])
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"data.source {str(path)!r} is not a file")
    X, Y, X_test, Y_test = _read_table(path, list(x_columns or []), y_columns, comment)
    if test_source:
        tpath = Path(test_source)
        if not tpath.is_file():
            raise ValueError(f"data.test_source {str(tpath)!r} is not a file")
        X_test, Y_test = _read_table(tpath, list(x_columns or []), y_columns, comment)[:2]

    def column(a: np.ndarray) -> np.ndarray:
        return a[:, None] if a.ndim == 1 else a

    return Dataset(
        column(X),
        column(Y),
        None if X_test is None else column(X_test),
        None if Y_test is None else column(Y_test),
        relevant=None,
    )
