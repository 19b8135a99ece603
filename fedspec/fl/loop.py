"""The round loop, written once for every method (Flower's ``Strategy.start``).

``run_experiment`` trains one item from its spec: resumes from the last round
checkpoint if there is one, runs the remaining rounds (federated: sample,
train locally, aggregate, evaluate; centralized: one epoch on pooled data),
commits a checkpoint after every round and the results CSV at the end.

Before every commit it calls ``guard(kind)``; the queue passes a function that
raises :class:`~fedspec.errors.LeaseLost` once a peer has taken the item over
(the fence).  Progress goes to ``on_round``; nothing here prints.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fedspec import __version__
from fedspec.config import ExperimentSpec, without_defaults
from fedspec.errors import AggregationError
from fedspec.fl.aggregators import make_aggregator
from fedspec.fl.checkpoint import Checkpoint, CheckpointWriter, load_checkpoint
from fedspec.fl.client import ClientFailed, LocalResult, TrainSettings, derive_seed, evaluate, train_client
from fedspec.fl.device import default_batch_size, resolve_device
from fedspec.fl.lora import get_state, lora_pairs, mask_inactive, rank_capacity, state_bytes, trainable_names
from fedspec.fl.partition import partition
from fedspec.fl.tasks import TaskData, load_task
from fedspec.results import write_results

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints_distributed"
RESULTS = "paper_results"
EVAL_BATCH = {"digits": 512, "tweets-minilm": 128, "sst2-bert": 64}

# Stream tags for derive_seed: each source of randomness has its own stream.
_INIT, _SAMPLE, _REINIT = 1, 2, 3


def checkpoint_dir(root: Path, item_id: str) -> Path:
    return root / CHECKPOINTS / item_id


def results_path(root: Path, item_id: str) -> Path:
    return root / RESULTS / f"{item_id}.csv"


@dataclass
class RunOutcome:
    """How ``run_experiment`` ended: ``done`` (CSV written), ``duplicate`` (a CSV was already there)."""

    status: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0
    csv_path: Path | None = None


Guard = Callable[[str], None]
RoundCallback = Callable[[dict[str, Any]], None]


def _no_guard(_: str) -> None:
    return None


def run_experiment(
    spec: ExperimentSpec,
    item_id: str,
    root: Path,
    *,
    device: str | None = None,
    guard: Guard = _no_guard,
    on_round: RoundCallback | None = None,
    on_start: Callable[[int, int], None] | None = None,
    on_step: Callable[[int, int, int], None] | None = None,
    task: TaskData | None = None,
    writer: str | None = None,
) -> RunOutcome:
    """Run (or resume) one item to completion.

    Parameters
    ----------
    device
        Overrides ``spec.device`` (the spec hash ignores the device, so an item
        may continue on another machine).
    guard
        Called with ``"checkpoint"`` or ``"result"`` right before each commit;
        raising stops the run with nothing written.
    on_round
        Called with each new CSV row after its checkpoint is committed.
    on_start
        Called once with (rounds already done, rounds in total).
    on_step
        Called during a round's local training with (the round, examples
        trained so far in it, examples it trains: the sampled clients' samples
        times the local epochs), after every step of clients trained one by one
        (a text round takes minutes) and once for clients trained together.
        The count can go back when a client is retried.
    task
        A loaded task to reuse (tests, benchmarks); loaded from the spec if None.
    writer
        Name recorded in each checkpoint (the worker), for audits.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)  # here only: a root that vanishes later (unmounted) is not recreated
    csv_path = results_path(root, item_id)
    spec_hash = spec.spec_hash()
    ckpt_folder = checkpoint_dir(root, item_id)
    hashed = spec.hashed_fields()
    ckpt = load_checkpoint(ckpt_folder, item_id, spec_hash, hashed)  # refuses another spec's checkpoint first
    checkpoints = CheckpointWriter(ckpt_folder, item_id, spec_hash, without_defaults(hashed))
    if csv_path.exists():
        return RunOutcome(status="duplicate", rows=ckpt.rows if ckpt else [], csv_path=csv_path)
    dev = resolve_device(device or spec.device)
    task = task or load_task(spec.task, spec.max_train_samples)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(spec.seed, _INIT))
        model = task.build_model(spec.effective_max_rank, spec.lora_alpha / spec.rank)
    model.to(dev)
    pairs = lora_pairs(trainable_names(model))
    aggregator = make_aggregator(spec)
    state = mask_inactive(get_state(model), pairs, spec.rank)
    capacity = rank_capacity(state, pairs)
    if spec.method == "fedspec" and capacity is not None and spec.max_rank > capacity:
        log.warning("%s: max_rank %d is more than any adapted layer of %s can hold: FedSpec's rank stops at %d",
                    item_id, spec.max_rank, spec.task, capacity)
    rows: list[dict[str, Any]] = []
    batch_size = spec.batch_size or default_batch_size(spec.task, dev)
    start = 0
    if ckpt is not None:
        state, rows, start, batch_size = ckpt.state, list(ckpt.rows), ckpt.round, ckpt.batch_size
        aggregator.load_state_dict(ckpt.aggregator)
        log.info("%s: resuming after round %d (checkpoint written on %s)", item_id, start, ckpt.device)
        if ckpt.version is not None and ckpt.version != __version__:
            log.warning("%s: round %d was checkpointed by fedspec %s, this is fedspec %s: the CSV may differ from an "
                        "uninterrupted run's", item_id, start, ckpt.version, __version__)
    if on_start is not None:
        on_start(start, spec.rounds)

    if spec.method == "centralized":
        client_indices = [np.arange(len(task.train))]
    else:
        client_indices = partition(task.train.labels, spec.partition, spec.clients, spec.alpha, spec.seed, spec.min_client_size)

    def remember_batch_size(size: int) -> None:
        nonlocal batch_size
        batch_size = size

    for rnd in range(start + 1, spec.rounds + 1):
        t0 = time.perf_counter()
        settings = TrainSettings(
            local_epochs=1 if spec.method == "centralized" else spec.local_epochs,
            batch_size=batch_size,
            optimizer=spec.optimizer,
            lr=spec.learning_rate,
            grad_clip=spec.grad_clip,
            rank=aggregator.rank,
            pairs=pairs,
            group_by_length=spec.group_by_length,
        )
        rank_before = aggregator.rank
        sampled = _sample_clients(spec, rnd)
        results: list[LocalResult] = []
        failures: list[str] = []
        diverged = 0  # clients given up on for a NaN or inf loss or update
        together = _train_together(model, task, client_indices, sampled, state, settings, spec, rnd, dev)
        examples = {k: len(client_indices[k]) * settings.local_epochs for k in sampled}
        round_examples = sum(examples.values())
        trained = sum(examples[k] for k in together)  # examples of the clients done so far
        if on_step is not None and together:
            on_step(rnd, trained, round_examples)
        for k in sampled:
            if k in together:
                results.append(together[k])
                continue
            step = None if on_step is None else functools.partial(_step, on_step, rnd, trained, round_examples)
            try:
                results.append(
                    train_client(model, task.logits, task.train, client_indices[k], state, settings,
                                 derive_seed(spec.seed, rnd, int(k)), dev, spec.client_retries, remember_batch_size, step)
                )
            except ClientFailed as err:
                failures.append(f"client {k}: {err}")
                diverged += err.diverged
            trained += examples[k]
        if not results:
            advice = ""
            if diverged == len(failures):
                advice = "; training diverged (NaN or inf): lower the learning rate (lr)" + (
                    ", or clip gradients (grad_clip)" if spec.grad_clip is None else "")
            raise AggregationError(f"{item_id}: round {rnd}: every sampled client failed ({failures[-1]}){advice}")
        gen = torch.Generator().manual_seed(derive_seed(spec.seed, rnd, _REINIT))
        agg = aggregator.aggregate([r.state for r in results], [r.num_samples for r in results], pairs, generator=gen)
        state = agg.state
        accuracy, test_loss = evaluate(model, task.logits, task.test, state, EVAL_BATCH[spec.task], dev)
        federated = spec.method != "centralized"
        rows.append({
            "round": rnd,
            "task": spec.task,
            "method": spec.method,
            "partition": spec.partition if federated else "pooled",
            "alpha": spec.alpha if federated and spec.partition == "dirichlet" else None,
            "seed": spec.seed,
            "test_accuracy": accuracy,
            "test_loss": test_loss,
            "train_loss": float(np.mean([r.mean_loss for r in results])),
            "frobenius_gap": agg.gap,
            "rank": agg.rank,
            "tail_energy": agg.tail_energy,
            "uplink_bytes": sum(state_bytes(r.state, pairs, rank_before) for r in results) if federated else 0,
            "downlink_bytes": len(sampled) * state_bytes(state, pairs, rank_before) if federated else 0,
            "clients_ok": len(results),
            "clients_failed": len(failures),
            "round_seconds": round(time.perf_counter() - t0, 4),
            "device": dev.type,
        })
        guard("checkpoint")
        checkpoints.commit(Checkpoint(round=rnd, state=state, aggregator=aggregator.state_dict(), batch_size=batch_size,
                                      rows=rows, device=dev.type, writer=writer))
        _return_freed_memory()
        if on_round is not None:
            on_round(rows[-1])
    guard("result")
    if csv_path.exists():  # a peer finished first: the first accepted result wins
        return RunOutcome(status="duplicate", rows=rows, resumed_from=start, csv_path=csv_path)
    write_results(csv_path, rows)
    return RunOutcome(status="done", rows=rows, resumed_from=start, csv_path=csv_path)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl): nothing to do
        return None


_TRIM_EVERY_S = 1.0  # one trim costs ~0.5-1 ms; at most one per second keeps it under 0.1 % of the run
_last_trim = 0.0


def _return_freed_memory() -> None:
    """Hand memory freed during the last rounds back to the OS (glibc only), at most once a second.

    Text batches are padded to their own length, so every step allocates
    activations of a new size; glibc keeps the freed blocks in fragmented
    arenas and the process's RSS crept up round after round.  Rounds of a
    text task take seconds, so each is followed by a trim; digits rounds take
    ~60 ms and are trimmed every ~15 rounds instead of paying ~0.8 ms each.
    """
    global _last_trim
    trim = _malloc_trim()
    now = time.monotonic()
    if trim is not None and now - _last_trim >= _TRIM_EVERY_S:
        trim(0)
        _last_trim = now


def _train_together(model, task: TaskData, client_indices, sampled: list[int], state, settings: TrainSettings,
                    spec: ExperimentSpec, rnd: int, dev: torch.device) -> dict[int, LocalResult]:
    """Clients trained together (batched.py; a single client too) where that applies; the rest (or all, on any error) go sequential."""
    from fedspec.fl.batched import batching_applies, train_clients_batched

    if not batching_applies(model, task.train, settings, spec.parallel_clients):
        return {}
    try:
        out = train_clients_batched(model, task.logits, task.train, [client_indices[k] for k in sampled], state,
                                    settings, [derive_seed(spec.seed, rnd, int(k)) for k in sampled], dev)
    except Exception as err:  # noqa: BLE001 - e.g. out of memory: the sequential path has its own handling
        log.warning("round %d: training clients together failed (%s); training them one by one", rnd, err)
        return {}
    # A client whose loss or update is not finite (NaN mean loss) is retried alone, with the sequential path's retries.
    return {k: r for k, r in zip(sampled, out) if math.isfinite(r.mean_loss)}


def _step(on_step: Callable[[int, int, int], None], rnd: int, before: int, total: int, in_client: int) -> None:
    on_step(rnd, before + in_client, total)


def _sample_clients(spec: ExperimentSpec, rnd: int) -> list[int]:
    if spec.method == "centralized":
        return [0]
    m = max(1, int(round(spec.client_fraction * spec.clients)))
    if m == spec.clients:  # every client: what the draw below returns, without its ~0.2 ms
        return list(range(m))
    rng = np.random.default_rng(derive_seed(spec.seed, rnd, _SAMPLE))
    return sorted(int(k) for k in rng.choice(spec.clients, size=m, replace=False))
