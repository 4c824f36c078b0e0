"""Real classification data sets for the toy nets (`potentials.ClassifierMLP`).

The data come from scikit-learn's bundled copies (no download; the ``datasets`` extra:
``pip install -e ".[datasets]"``).  `load(name)` returns the features X (N, F) float64 and
the classes y (N,) int64 in 0 .. K-1, in the library's order; `split` orders the samples
by the instance's seed, takes a training and a test set and standardizes both by the
training set's feature means and standard deviations.
"""
from __future__ import annotations

import numpy as np

from . import rng
from .errors import ConfigError

# name -> (scikit-learn loader, what it holds)
CLASSIFICATION = {
    "digits": ("load_digits", "1797 handwritten digits, 8x8 grey levels 0-16 (64 features), "
                              "10 classes"),
    "iris": ("load_iris", "150 iris flowers, 4 measurements, 3 species"),
    "wine": ("load_wine", "178 wines, 13 chemical measurements, 3 cultivars"),
    "breast_cancer": ("load_breast_cancer", "569 breast-mass biopsies, 30 features, "
                                            "2 classes (malignant, benign)"),
}


def load(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Features X (N, F) float64 and classes y (N,) int64 of the data set `name` (one of
    `CLASSIFICATION`), as scikit-learn ships it."""
    if name not in CLASSIFICATION:
        raise ConfigError(f"unknown data set {name!r}; choose one of {sorted(CLASSIFICATION)}, "
                          "or give the arrays yourself (inputs=, labels=, test_inputs=, "
                          "test_labels=)")
    try:
        from sklearn import datasets
    except ImportError:
        raise ConfigError(f"the {name!r} data set is loaded by scikit-learn, which is not "
                          "installed: pip install -e \".[datasets]\" (or pip install "
                          "scikit-learn)") from None
    bunch = getattr(datasets, CLASSIFICATION[name][0])()
    return np.asarray(bunch.data, np.float64), np.asarray(bunch.target, np.int64)


def split(X: np.ndarray, y: np.ndarray, n: int, n_test: int, seed: int, n_val: int = 0
          ) -> tuple[np.ndarray, ...]:
    """(train X (n, F), train y (n,), test X (n_test, F), test y (n_test,), val X (n_val, F),
    val y (n_val,)): the samples in the order of a stable argsort of the DATA-stream words of
    `seed` (replica 0), the first n for training, the next n_test for testing and the last
    n_val for validation (so that a validation set leaves the training and test sets as they
    were wherever n + n_test + n_val <= N); features centred and scaled by the training set's
    mean and standard deviation (a feature constant on the training set: centred only)."""
    N = X.shape[0]
    if n < 1 or n_test < 1 or n_val < 0 or n + n_test + n_val > N:
        raise ConfigError(f"the data set has {N} samples: n ({n}) and n_test ({n_test}) must "
                          f"be >= 1, n_val ({n_val}) >= 0, with n + n_test + n_val <= {N}")
    order = np.argsort(rng.stream_words(seed, rng.DATA, [0], 0, N)[0], kind="mergesort")
    train, test, val = order[:n], order[n:n + n_test], order[N - n_val:]
    mean, std = X[train].mean(axis=0), X[train].std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return ((X[train] - mean) / std, y[train], (X[test] - mean) / std, y[test],
            (X[val] - mean) / std, y[val])


def corrupt(y: np.ndarray, classes: int, fraction: float, seed: int) -> np.ndarray:
    """A copy of the classes y (n,) with round(fraction n) of them wrong: the samples first in
    a stable argsort of DATA-stream words (replica 1, words 0 .. n-1) each get a class drawn
    uniformly among the classes - 1 others (word n + i of the same stream)."""
    n = y.shape[0]
    m = int(round(fraction * n))
    out = y.copy()
    if m == 0:
        return out
    words = rng.stream_words(seed, rng.DATA, [1], 0, n + m)[0]
    picked = np.argsort(words[:n], kind="mergesort")[:m]
    shift = 1 + (words[n:] % np.uint64(classes - 1)).astype(np.int64)
    out[picked] = (y[picked] + shift) % classes
    return out
