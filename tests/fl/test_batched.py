"""Training a round's clients together (vmap) equals training them one by one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedspec.config import make_spec
from fedspec.fl.batched import batching_applies, train_clients_batched
from fedspec.fl.client import TrainSettings, train_local
from fedspec.fl.lora import get_state, lora_pairs, mask_inactive, trainable_names
from fedspec.fl.loop import results_path, run_experiment
from fedspec.fl.tasks import load_task
from tests.conftest import read_rows


@pytest.fixture(scope="module")
def digits():
    return load_task("digits")


# Uneven client sizes: batches of different lengths and different numbers of steps.
UNEVEN = [np.arange(0, 37), np.arange(40, 140), np.arange(200, 216), np.arange(300, 301)]
SINGLE = [np.arange(0, 300)]  # one client (centralized training): the path without vmap


@pytest.mark.parametrize("optimizer, clip, clients", [("adamw", 1.0, UNEVEN), ("adam", None, UNEVEN), ("adamw", 1.0, SINGLE)],
                         ids=["adamw-clip", "adam", "one-client"])
def test_batched_clients_equal_sequential_clients(digits, optimizer: str, clip, clients) -> None:
    torch.manual_seed(0)
    model = digits.build_model(8, 2.0)
    pairs = lora_pairs(trainable_names(model))
    start = mask_inactive(get_state(model), pairs, 4)
    seeds = [11, 12, 13, 14][: len(clients)]
    settings = TrainSettings(2, 16, optimizer, 5e-3, clip, 4, pairs)
    cpu = torch.device("cpu")
    together = train_clients_batched(model, digits.logits, digits.train, clients, start, settings, seeds, cpu)
    for idx, seed, got in zip(clients, seeds, together):
        alone = train_local(model, digits.logits, digits.train, idx, start, settings, seed, cpu)
        assert got.num_samples == alone.num_samples
        assert got.mean_loss == pytest.approx(alone.mean_loss, rel=1e-5)
        for name in alone.state:
            assert torch.allclose(got.state[name], alone.state[name], atol=2e-5, rtol=1e-4), name
        for pair in pairs:
            assert torch.count_nonzero(got.state[pair.a][4:]) == 0  # the rank mask held


def test_auto_mode_uses_batching_for_small_fixed_size_models_only(digits) -> None:
    model = digits.build_model(8, 2.0)
    pairs = lora_pairs(trainable_names(model))
    settings = TrainSettings(1, 16, "adamw", 5e-3, 1.0, 4, pairs)
    assert batching_applies(model, digits.train, settings, "auto")
    assert not batching_applies(model, digits.train, settings, "off")
    sgd = TrainSettings(1, 16, "sgd", 5e-3, 1.0, 4, pairs)
    assert not batching_applies(model, digits.train, sgd, "auto")  # momentum SGD: sequential


@pytest.mark.parametrize("method", ["fedavg", "centralized"])
def test_whole_runs_agree_between_batched_and_sequential(tmp_path: Path, digits, method: str) -> None:
    common = dict(method=method, clients=5, rounds=3, alpha=0.5, min_client_size=5)
    run_experiment(make_spec(parallel_clients="on", **common), "x", tmp_path / "on", task=digits)
    run_experiment(make_spec(parallel_clients="off", **common), "x", tmp_path / "off", task=digits)
    on, off = read_rows(results_path(tmp_path / "on", "x")), read_rows(results_path(tmp_path / "off", "x"))
    for a, b in zip(on, off):
        assert abs(float(a["test_accuracy"]) - float(b["test_accuracy"])) <= 0.01
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-3)


def test_a_client_whose_update_is_not_finite_reports_a_nan_loss(digits) -> None:
    model = digits.build_model(8, 2.0)
    pairs = lora_pairs(trainable_names(model))
    start = mask_inactive(get_state(model), pairs, 4)
    # One step each: the loss is computed before the update, so it is finite; an infinite lr makes the update not.
    blown = TrainSettings(1, 16, "adamw", float("inf"), 1.0, 4, pairs)
    fine = TrainSettings(1, 16, "adamw", 5e-3, 1.0, 4, pairs)
    clients, seeds = [np.arange(0, 16), np.arange(16, 32)], [1, 2]
    cpu = torch.device("cpu")
    bad = train_clients_batched(model, digits.logits, digits.train, clients, start, blown, seeds, cpu)
    good = train_clients_batched(model, digits.logits, digits.train, clients, start, fine, seeds, cpu)
    assert all(np.isnan(r.mean_loss) for r in bad)  # the loop retries these alone
    assert all(np.isfinite(r.mean_loss) for r in good)
