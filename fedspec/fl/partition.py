"""Splitting training indices among clients: IID or Dirichlet(α) by label."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

import numpy as np

from fedspec.errors import ConfigError, TaskError

if TYPE_CHECKING:
    from fedspec.config import ExperimentSpec

MAX_DIRICHLET_TRIES = 1000


def iid_partition(num_samples: int, clients: int, seed: int) -> list[np.ndarray]:
    """Shuffle and deal the indices into ``clients`` near-equal parts."""
    if clients > num_samples:
        raise ConfigError(f"clients: {clients} clients but only {num_samples} training samples; lower clients")
    perm = np.random.default_rng(seed).permutation(num_samples)
    return [np.sort(part) for part in np.array_split(perm, clients)]


def dirichlet_partition(labels: np.ndarray, clients: int, alpha: float, seed: int, min_size: int) -> list[np.ndarray]:
    """Label-skewed split: for each class, client shares are drawn from Dirichlet(α).

    Draws again (from the same generator, so the result is still a function of
    the seed) until every client holds at least ``min_size`` samples.

    Raises
    ------
    ConfigError
        When ``min_size`` cannot be met (too many clients for the data).
    """
    labels = np.asarray(labels)
    if clients * min_size > len(labels):
        raise ConfigError(
            f"min_client_size: {clients} clients × {min_size} samples exceeds the {len(labels)} training samples; "
            "lower clients or min_client_size"
        )
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    for _ in range(MAX_DIRICHLET_TRIES):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ConfigError(
        f"min_client_size: no Dirichlet(alpha={alpha}) split gives all {clients} clients "
        f"{min_size} samples in {MAX_DIRICHLET_TRIES} draws; lower min_client_size or clients"
    )


def partition(labels: np.ndarray, scheme: str, clients: int, alpha: float, seed: int, min_size: int) -> list[np.ndarray]:
    """Client index arrays for ``scheme`` ('iid' or 'dirichlet'), deterministic from ``seed``."""
    if scheme == "iid":
        return iid_partition(len(labels), clients, seed)
    if scheme == "dirichlet":
        return dirichlet_partition(labels, clients, alpha, seed, min_size)
    raise ConfigError(f"partition: {scheme!r} is not one of iid, dirichlet")


def check_splittable(where: str, items: Iterable[tuple[str, ExperimentSpec]]) -> None:
    """Refuse the first item whose clients its task's training data cannot supply, where the labels are known without loading the task (digits).

    A worker would fail such an item on every attempt, and the grid, once
    corrected, would be refused: its items' names would be queued with
    other settings.

    Raises
    ------
    ConfigError
        ``<where>: item '<id>': <why>; <what to lower>``.
    """
    from fedspec.fl.splits import train_labels

    labels: dict[tuple[str, int | None], np.ndarray | None] = {}
    for item_id, spec in items:
        if spec.method == "centralized":
            continue
        key = (spec.task, spec.max_train_samples)
        if key not in labels:
            try:
                labels[key] = train_labels(*key)
            except TaskError:  # not loadable here (no scikit-learn): the workers that can load it check it
                labels[key] = None
        if labels[key] is None:
            continue
        try:
            partition(labels[key], spec.partition, spec.clients, spec.alpha, spec.seed, spec.min_client_size)
        except ConfigError as err:
            raise ConfigError(f"{where}: item {item_id!r}: {err}") from None
