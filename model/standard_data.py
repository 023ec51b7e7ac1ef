"""Standard data sets that ship inside scikit-learn (nothing is downloaded): ``data.source = "sklearn:<name>"``.

Each set is split into a training and a held-out test part (``test_fraction`` of the rows; stratified by class
for classification), and its inputs are standardised with the training part's mean and standard deviation
(a constant input, such as a corner pixel of the digits, is centred only). Targets:

- classes (``digits``): the T classes as one-hot rows, ``Y`` n x T;
- two classes (``digits-binary``, ``breast-cancer``): +1 and -1, T = 1;
- regression (``diabetes``): the target standardised with the training part's statistics.

scikit-learn is an optional dependency (``pip install "mfld[data]"``); asking for a set without it says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .datasets import Dataset

PREFIX = "sklearn:"
INSTALL = 'pip install "mfld[data]" (or pip install scikit-learn)'


@dataclass(frozen=True)
class StandardSet:
    """One set: scikit-learn's loader (a name in ``sklearn.datasets``), how its labels become targets, its sizes."""

    loader: str
    kind: str
    doc: str
    n: int
    d: int
    tasks: int
    label: Callable[[np.ndarray], np.ndarray] | None = None


SETS: dict[str, StandardSet] = {
    "digits": StandardSet("load_digits", "classes", "8 x 8 handwritten digits; the 10 classes one-hot", 1797, 64, 10),
    "digits-binary": StandardSet(
        "load_digits", "binary", "the digits, even (+1) against odd (-1)", 1797, 64, 1, lambda y: 1 - 2 * (y % 2)
    ),
    "breast-cancer": StandardSet(
        "load_breast_cancer",
        "binary",
        "Wisconsin breast cancer, benign (+1) against malignant (-1)",
        569,
        30,
        1,
        lambda y: 2 * y - 1,
    ),
    "diabetes": StandardSet(
        "load_diabetes", "regression", "diabetes progression after a year (standardised)", 442, 10, 1
    ),
}


def is_standard(source: str) -> bool:
    """Whether ``data.source`` names a scikit-learn set rather than a file."""
    return str(source).startswith(PREFIX)


def standard_set(source: str) -> StandardSet:
    """The :class:`StandardSet` that ``source`` (``"sklearn:<name>"``) names, or an error listing the names."""
    name = str(source)[len(PREFIX) :]
    if name not in SETS:
        raise ValueError(
            f"data.source {source!r} names no scikit-learn data set; choose one of "
            + ", ".join(f"{PREFIX}{k}" for k in SETS)
        )
    return SETS[name]


def load_standard(source: str, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """The set ``source`` names, split (``seed`` draws the split) and standardised as the module doc says."""
    spec = standard_set(source)
    if not 0 < test_fraction < 1:
        raise ValueError(f"the test fraction must lie in (0, 1), got {test_fraction}")
    try:
        from sklearn import datasets
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError(f"data.source = {source!r} needs scikit-learn: {INSTALL}") from None
    X, y = getattr(datasets, spec.loader)(return_X_y=True)
    X = np.asarray(X, dtype=float)
    rows = np.arange(X.shape[0])
    train, test = train_test_split(
        rows, test_size=test_fraction, random_state=seed, stratify=None if spec.kind == "regression" else y
    )
    mean, sd = X[train].mean(axis=0), X[train].std(axis=0)
    X = (X - mean) / np.where(sd > 0, sd, 1.0)
    if spec.kind == "classes":
        Y = np.eye(spec.tasks)[np.asarray(y, dtype=int)]
    elif spec.label is not None:
        Y = spec.label(np.asarray(y, dtype=int)).astype(float)[:, None]
    else:
        y = np.asarray(y, dtype=float)
        Y = ((y - y[train].mean()) / y[train].std())[:, None]
    return Dataset(X[train], Y[train], X[test], Y[test], relevant=None)


def accuracy(pred: np.ndarray, Y: np.ndarray) -> float:
    """The fraction of rows classified right: the largest output's class for one-hot targets, the sign for +-1."""
    if Y.shape[1] > 1:
        return float(np.mean(np.argmax(pred, axis=1) == np.argmax(Y, axis=1)))
    return float(np.mean(np.sign(pred[:, 0]) == np.sign(Y[:, 0])))
