"""The round loop end to end on the digits task: determinism, resume, faults, rank growth."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedspec.config import make_spec
from fedspec.errors import AggregationError, CheckpointError, LeaseLost
from fedspec.fl import client as client_mod
from fedspec.checkpoint_file import NAME as CHECKPOINT
from fedspec.checkpoint_file import read_header
from fedspec.fl.client import TrainSettings, train_local
from fedspec.fl.lora import get_state, lora_pairs, mask_inactive, trainable_names
from fedspec.fl.loop import checkpoint_dir, results_path, run_experiment
from fedspec.fl.tasks import load_task
from tests.conftest import fedspec_cmd, read_rows

SMALL = dict(clients=4, rounds=4, max_train_samples=400, min_client_size=5, alpha=0.5)


@pytest.fixture(scope="module")
def digits():
    return load_task("digits", 400)


def test_run_writes_one_row_per_round_with_every_column(tmp_path: Path, digits) -> None:
    spec = make_spec(method="fedspec", **SMALL)
    out = run_experiment(spec, "x", tmp_path, task=digits)
    rows = read_rows(results_path(tmp_path, "x"), drop=())
    assert out.status == "done" and [int(r["round"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["frobenius_gap"]) >= 0 and r["device"] == "cpu" for r in rows)
    assert float(rows[-1]["test_accuracy"]) > 0.5
    assert int(rows[0]["uplink_bytes"]) > 0 and int(rows[0]["clients_ok"]) == 4


def test_a_max_rank_past_what_the_layers_hold_is_said_and_never_reported(tmp_path: Path, digits, caplog) -> None:
    spec = make_spec(method="fedspec", max_rank=200, rank_step=100, tail_threshold=0.0, **dict(SMALL, rounds=2))
    run_experiment(spec, "x", tmp_path, task=digits)
    assert "x: max_rank 200 is more than any adapted layer of digits can hold: FedSpec's rank stops at 128" in caplog.messages
    assert [int(r["rank"]) for r in read_rows(results_path(tmp_path, "x"), drop=())] == [104, 128]


def run_until_round_two_then_stop(spec, item: str, root: Path, task) -> None:
    """Run ``item`` until its round-2 checkpoint is committed, then stop it as a lost lease does (the checkpoint stays)."""

    def stop_after_round_two(kind: str) -> None:
        meta = read_header(checkpoint_dir(root, item))
        if kind == "checkpoint" and meta and meta["round"] == 2:
            raise LeaseLost("simulated stop")

    with pytest.raises(LeaseLost):
        run_experiment(spec, item, root, task=task, guard=stop_after_round_two)


@pytest.mark.parametrize("method", ["fedavg", "fedspec", "centralized"])
def test_interrupted_and_resumed_run_gives_identical_csv(tmp_path: Path, digits, method: str) -> None:
    spec = make_spec(method=method, tail_threshold=0.0, **SMALL)
    run_experiment(spec, "ref", tmp_path / "a", task=digits)
    run_until_round_two_then_stop(spec, "ref", tmp_path / "b", digits)
    assert not results_path(tmp_path / "b", "ref").exists()
    out = run_experiment(spec, "ref", tmp_path / "b", task=digits)
    assert out.resumed_from == 2
    assert read_rows(results_path(tmp_path / "a", "ref")) == read_rows(results_path(tmp_path / "b", "ref"))


def test_kill_9_at_a_random_moment_then_resume_gives_identical_csv(tmp_path: Path) -> None:
    rounds = 25
    args = ["run", "--clients", "4", "--rounds", str(rounds), "--min-client-size", "5", "--tail-threshold", "0"]
    ref = subprocess.run(fedspec_cmd(*args, "--root", str(tmp_path / "ref")), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr
    root = tmp_path / "killed"
    proc = subprocess.Popen(fedspec_cmd(*args, "--root", str(root)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta_path = checkpoint_dir(root, "fedspec_dirichlet_alpha0.5") / CHECKPOINT
    deadline = time.time() + 120
    while not meta_path.exists() and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(float(np.random.default_rng().uniform(0, 0.5)))  # somewhere inside a later round
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    meta = read_header(meta_path.parent)
    assert meta is not None and meta["round"] < rounds, "the run finished before the kill; the test proves nothing"
    again = subprocess.run(fedspec_cmd(*args, "--root", str(root)), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    name = "fedspec_dirichlet_alpha0.5.csv"
    assert read_rows(tmp_path / "ref" / "paper_results" / name) == read_rows(root / "paper_results" / name)


def test_failing_client_is_retried_then_skipped_and_counted(tmp_path: Path, digits, monkeypatch) -> None:
    real = client_mod.train_local
    calls = {"n": 0}

    def flaky(model, logits, data, indices, start, settings, seed, device, on_step=None):
        if len(indices) == len(client_indices[0]) and np.array_equal(indices, client_indices[0]):
            calls["n"] += 1
            raise FloatingPointError("loss is nan")
        return real(model, logits, data, indices, start, settings, seed, device, on_step)

    from fedspec.fl.partition import partition

    spec = make_spec(method="fedavg", client_retries=2, parallel_clients="off", **SMALL)
    client_indices = partition(digits.train.labels, "dirichlet", 4, 0.5, spec.seed, 5)
    monkeypatch.setattr(client_mod, "train_local", flaky)
    run_experiment(spec, "f", tmp_path, task=digits)
    rows = read_rows(results_path(tmp_path, "f"))
    assert [int(r["clients_failed"]) for r in rows] == [1, 1, 1, 1]
    assert [int(r["clients_ok"]) for r in rows] == [3, 3, 3, 3]
    assert calls["n"] == 4 * 3  # 1 try + 2 retries per round


@pytest.mark.parametrize("parallel", ["off", "on"])
def test_progress_within_a_round_counts_the_examples_trained(tmp_path: Path, digits, parallel: str) -> None:
    from fedspec.fl.partition import partition

    spec = make_spec(method="fedavg", parallel_clients=parallel, local_epochs=2, **{**SMALL, "rounds": 2})
    total = 2 * sum(len(i) for i in partition(digits.train.labels, "dirichlet", 4, 0.5, spec.seed, 5))
    steps: list[tuple[int, int]] = []
    ends: list[int] = []
    of_round: list[int] = []
    run_experiment(spec, "p", tmp_path, task=digits, on_step=lambda rnd, done, of: (steps.append((done, of)), of_round.append(rnd)),
                   on_round=lambda row: ends.append(len(steps)))
    rounds = [steps[:ends[0]], steps[ends[0]:ends[1]]]
    assert of_round == [1] * ends[0] + [2] * (ends[1] - ends[0])  # each call names the round in flight
    for calls in rounds:
        assert {of for _, of in calls} == {total} and calls[-1][0] == total
        assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))  # no client retried here: it only grows
    if parallel == "off":  # one call per step: 4 clients, 2 epochs of batches of 16
        assert len(rounds[0]) > 2 * 4 and rounds[0][0][0] == 16
    else:
        assert len(rounds[0]) == 1  # the clients trained together report once


def test_round_with_no_surviving_client_fails_clearly(tmp_path: Path, digits, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("driver crashed")

    monkeypatch.setattr(client_mod, "train_local", broken)
    with pytest.raises(AggregationError, match="round 1: every sampled client failed") as caught:
        run_experiment(make_spec(parallel_clients="off", **SMALL), "g", tmp_path, task=digits)
    assert not results_path(tmp_path, "g").exists()
    assert str(caught.value).endswith("RuntimeError: driver crashed)")  # a crash is not called a divergence


def test_a_round_that_diverges_says_so_and_what_to_change(tmp_path: Path, digits, monkeypatch) -> None:
    """Every client's loss NaN (a learning rate far too high): the failure says why, not only the last client's error."""
    spec = make_spec(optimizer="sgd", lr=10.0, grad_clip=None, parallel_clients="off", **SMALL)
    with pytest.raises(AggregationError) as caught:
        run_experiment(spec, "d", tmp_path, task=digits)
    assert "every sampled client failed" in str(caught.value)
    assert str(caught.value).endswith("training diverged (NaN or inf): lower the learning rate (lr), or clip gradients (grad_clip)")

    def nan(*args, **kwargs):  # with clipping already on, the advice is the learning rate alone
        raise FloatingPointError("loss is nan")

    monkeypatch.setattr(client_mod, "train_local", nan)
    with pytest.raises(AggregationError) as caught:
        run_experiment(make_spec(parallel_clients="off", **SMALL), "e", tmp_path, task=digits)
    assert str(caught.value).endswith("FloatingPointError: loss is nan); training diverged (NaN or inf): lower the learning rate (lr)")


def test_out_of_memory_halves_batch_size(tmp_path: Path, digits, monkeypatch) -> None:
    real = client_mod.train_local
    seen: list[int] = []

    def oom_on_big_batches(model, logits, data, indices, start, settings, seed, device, on_step=None):
        seen.append(settings.batch_size)
        if settings.batch_size > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(model, logits, data, indices, start, settings, seed, device, on_step)

    monkeypatch.setattr(client_mod, "train_local", oom_on_big_batches)
    spec = make_spec(batch_size=16, parallel_clients="off", **{**SMALL, "rounds": 2})
    run_experiment(spec, "o", tmp_path, task=digits)
    assert seen[:3] == [16, 8, 4] and set(seen[3:]) == {4}
    assert read_header(checkpoint_dir(tmp_path, "o"))["batch_size"] == 4
    assert [int(r["clients_failed"]) for r in read_rows(results_path(tmp_path, "o"))] == [0, 0]


def test_grown_rank_is_trained_by_clients(digits) -> None:
    model = digits.build_model(8, 2.0)
    pairs = lora_pairs(trainable_names(model))
    # As after FedSpec grew the rank 4 → 6: components 4-5 hold a fresh A row and a zero B column.
    start = mask_inactive(get_state(model), pairs, 6)
    idx = np.arange(64)

    def train(rank: int):
        settings = TrainSettings(1, 16, "adamw", 5e-3, 1.0, rank, pairs)
        return train_local(model, digits.logits, digits.train, idx, start, settings, 0, torch.device("cpu")).state

    at4, at6 = train(4), train(6)
    for pair in pairs:
        assert torch.count_nonzero(at4[pair.a][4:]) == 0 and torch.count_nonzero(at4[pair.b][:, 4:]) == 0
        assert torch.count_nonzero(at6[pair.b][:, 4:6]) > 0  # components 4-5 learn at rank 6
        assert torch.count_nonzero(at6[pair.a][6:]) == 0 and torch.count_nonzero(at6[pair.b][:, 6:]) == 0


def test_fedspec_rank_grows_in_a_real_run(tmp_path: Path, digits) -> None:
    spec = make_spec(method="fedspec", tail_threshold=0.0, rank=2, max_rank=6, rank_step=2, **SMALL)
    run_experiment(spec, "r", tmp_path, task=digits)
    ranks = [int(r["rank"]) for r in read_rows(results_path(tmp_path, "r"))]
    assert ranks == [4, 6, 6, 6]


def test_resume_by_another_fedspec_version_is_warned(tmp_path: Path, digits, monkeypatch, caplog) -> None:
    from fedspec import __version__
    from fedspec.fl import loop as loop_mod

    spec = make_spec(method="fedavg", **SMALL)

    run_until_round_two_then_stop(spec, "v", tmp_path, digits)
    assert read_header(checkpoint_dir(tmp_path, "v"))["version"] == __version__
    monkeypatch.setattr(loop_mod, "__version__", "9.9.9")
    with caplog.at_level("WARNING", logger="fedspec.fl.loop"):
        out = run_experiment(spec, "v", tmp_path, task=digits)
    assert out.resumed_from == 2
    assert f"round 2 was checkpointed by fedspec {__version__}, this is fedspec 9.9.9" in caplog.text


def _rewrite_header(path: Path, edit) -> None:
    """Change a checkpoint's ``fedspec`` metadata in place, as another fedspec would have written it (tensors untouched)."""
    blob = path.read_bytes()
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + length])
    meta = json.loads(header["__metadata__"]["fedspec"])
    edit(meta)
    header["__metadata__"]["fedspec"] = json.dumps(meta)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + blob[8 + length :])


def test_a_checkpoint_of_an_earlier_fedspec_resumes_when_the_setting_it_lacks_is_at_its_default(tmp_path: Path, digits) -> None:
    """A setting added in a later fedspec changes every spec hash, so an upgraded machine refused to resume a
    grid's checkpoints of the same settings.  A setting an earlier fedspec's header leaves out is at its default."""
    spec = make_spec(method="fedavg", **SMALL)
    run_experiment(spec, "v", tmp_path / "ref", task=digits)

    run_until_round_two_then_stop(spec, "v", tmp_path, digits)
    recorded = read_header(checkpoint_dir(tmp_path, "v"))["spec"]
    # What a checkpoint records leaves the defaults out, so that an earlier fedspec reads a later setting at its default.
    assert recorded == {"clients": 4, "max_train_samples": 400, "method": "fedavg", "min_client_size": 5, "rounds": 4}
    earlier = {k: v for k, v in spec.hashed_fields().items() if k != "parallel_clients"}  # a fedspec before the setting
    path = checkpoint_dir(tmp_path, "v") / CHECKPOINT
    _rewrite_header(path, lambda meta: meta.update(spec={**earlier, "parallel_clients": "off"}, spec_hash="0" * 16))
    with pytest.raises(CheckpointError, match=r"belongs to a different spec \(parallel_clients 'off' -> 'auto'\)"):
        run_experiment(spec, "v", tmp_path, task=digits)
    _rewrite_header(path, lambda meta: meta.update(spec=earlier, spec_hash="0" * 16))
    out = run_experiment(spec, "v", tmp_path, task=digits)
    assert out.resumed_from == 2
    assert read_rows(results_path(tmp_path, "v")) == read_rows(results_path(tmp_path / "ref", "v"))
