"""Fixed data splits shared by all items, and training labels without torch (the plots use them)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from fedspec.errors import TaskError

# Splits and the pretrained base are the same for every item, whatever its seed,
# so that all methods of a grid start from the same frozen model.
SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.25
DIGITS_PUBLIC_FRACTION = 0.03  # of the whole set: a weak base (~80% accuracy) that LoRA can improve
TWEETS_TEST_FRACTION = 0.2


def split_indices(n: int, fractions: tuple[float, ...], seed: int = SPLIT_SEED) -> list[np.ndarray]:
    """Shuffle ``range(n)`` once and cut it into consecutive parts of the given fractions (rest last)."""
    perm = np.random.default_rng(seed).permutation(n)
    parts, start = [], 0
    for frac in fractions:
        stop = start + int(round(frac * n))
        parts.append(np.sort(perm[start:stop]))
        start = stop
    parts.append(np.sort(perm[start:]))
    return parts


def subset(indices: np.ndarray, max_samples: int | None, seed: int = SPLIT_SEED) -> np.ndarray:
    if max_samples is None or max_samples >= len(indices):
        return indices
    pick = np.random.default_rng(seed + 1).choice(len(indices), size=max_samples, replace=False)
    return np.sort(indices[pick])


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits (features scaled to [0, 1], labels).

    Read straight from the CSV that ships inside scikit-learn, the file
    ``sklearn.datasets.load_digits`` reads, without importing scikit-learn:
    its import costs about 1.5 s per process, more than the whole digits
    run's training.  ``tests/fl/test_digits_task.py`` checks equality with
    ``load_digits``.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise TaskError("digits: scikit-learn is not installed (pip install scikit-learn)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64)
    except OSError as exc:
        raise TaskError(f"digits: cannot read scikit-learn's {path}: {exc}") from exc
    return (table[:, :-1] / 16.0).astype(np.float32), table[:, -1].astype(np.int64)


def digits_splits(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(test, public, train) indices of the digits task."""
    test_idx, public_idx, train_idx = split_indices(n, (DIGITS_TEST_FRACTION, DIGITS_PUBLIC_FRACTION))
    return test_idx, public_idx, train_idx


def train_labels(task: str, max_train_samples: int | None = None) -> np.ndarray | None:
    """Training labels of a task as the engine partitions them; None where that needs the task's full loader."""
    if task == "digits":
        _, y = digits_arrays()
        _, _, train_idx = digits_splits(len(y))
        return y[subset(train_idx, max_train_samples)]
    return None
