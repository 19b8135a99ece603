from __future__ import annotations

import numpy as np
import pytest

from fedspec.errors import ConfigError
from fedspec.config import make_spec
from fedspec.fl.partition import check_splittable, dirichlet_partition, iid_partition, partition

LABELS = np.repeat(np.arange(10), 60)  # 600 samples, 10 classes


def assert_is_partition(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n
    assert len(np.unique(joined)) == n


def test_iid_partition_sizes_and_determinism() -> None:
    parts = iid_partition(600, 7, seed=3)
    assert_is_partition(parts, 600)
    assert {len(p) for p in parts} <= {85, 86}
    again = iid_partition(600, 7, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, iid_partition(600, 7, seed=4)))


@pytest.mark.parametrize("alpha", [0.05, 0.5, 100.0])
def test_dirichlet_partition_covers_data_and_respects_min_size(alpha: float) -> None:
    parts = dirichlet_partition(LABELS, 10, alpha, seed=42, min_size=20)
    assert_is_partition(parts, 600)
    assert min(len(p) for p in parts) >= 20


def test_dirichlet_partition_is_deterministic_from_seed() -> None:
    a = dirichlet_partition(LABELS, 8, 0.3, seed=5, min_size=10)
    b = dirichlet_partition(LABELS, 8, 0.3, seed=5, min_size=10)
    c = dirichlet_partition(LABELS, 8, 0.3, seed=6, min_size=10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_small_alpha_is_more_skewed_than_large_alpha() -> None:
    def mean_max_share(alpha: float) -> float:
        parts = dirichlet_partition(LABELS, 10, alpha, seed=0, min_size=5)
        return float(np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts]))

    assert mean_max_share(0.1) > mean_max_share(100.0) + 0.3


def test_impossible_min_size_is_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match="min_client_size"):
        dirichlet_partition(LABELS, 50, 0.5, seed=0, min_size=20)
    with pytest.raises(ConfigError, match="clients"):
        partition(LABELS[:5], "iid", 10, 0.5, 0, 1)


def test_a_grid_item_whose_clients_the_data_cannot_supply_is_refused_by_name() -> None:
    ok = make_spec(task="digits", clients=5)
    check_splittable("g.toml", [("fine", ok), ("pooled", make_spec(task="digits", method="centralized", clients=400))])
    with pytest.raises(ConfigError) as err:
        check_splittable("g.toml", [("fine", ok), ("crowded", make_spec(task="digits", clients=400))])
    assert str(err.value) == ("g.toml: item 'crowded': min_client_size: 400 clients × 10 samples exceeds the 1294 training "
                              "samples; lower clients or min_client_size")
    with pytest.raises(ConfigError, match="g.toml: item 'skewed': min_client_size: no Dirichlet"):
        check_splittable("g.toml", [("skewed", make_spec(task="digits", clients=100, alpha=0.01))])
    with pytest.raises(ConfigError, match="g.toml: item 'few': clients: 100 clients but only 50 training samples; lower clients"):
        check_splittable("g.toml", [("few", make_spec(task="digits", partition="iid", clients=100, max_train_samples=50))])
    # A text task's size is known only once it is loaded: its workers check it.
    check_splittable("g.toml", [("text", make_spec(task="tweets-minilm", clients=10_000))])
