"""Local training of one client, with the fault handling a real laptop needs.

A client starts from the global trainable state, trains ``local_epochs`` over
its own indices and returns its new state.  Its randomness (batch order,
dropout) comes from a seed derived from (item seed, round, client), so a round
computes the same thing whether or not the run was interrupted before it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from fedspec.fl.device import empty_cache, is_out_of_memory
from fedspec.fl.lora import LoraPair, State, get_state, is_finite, mask_model_, set_state
from fedspec.fl.tasks.base import Batch, Examples, epoch_batches

log = logging.getLogger(__name__)


class ClientFailed(Exception):
    """A client produced no usable update (exception, NaN or inf) after its retries; ``diverged``: NaN or inf."""

    def __init__(self, message: str, diverged: bool = False) -> None:
        super().__init__(message)
        self.diverged = diverged


@dataclass
class LocalResult:
    state: State
    num_samples: int
    mean_loss: float


@dataclass
class TrainSettings:
    """What local training needs beyond the data: from the spec, resolved for this device."""

    local_epochs: int
    batch_size: int
    optimizer: str
    lr: float
    grad_clip: float | None
    rank: int
    pairs: list[LoraPair]
    group_by_length: bool = False  # text: batch sequences of similar length (see tasks.base.epoch_batches)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, stable across platforms and Python versions."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


def train_local(
    model: nn.Module,
    logits: Callable[[nn.Module, Batch], torch.Tensor],
    data: Examples,
    indices: np.ndarray,
    start: State,
    settings: TrainSettings,
    seed: int,
    device: torch.device,
    on_step: Callable[[int], None] | None = None,
) -> LocalResult:
    """Train one client once from ``start``; raises on a non-finite loss.

    ``on_step`` is called after every optimizer step with the number of
    examples this call has trained on so far (all epochs).
    """
    set_state(model, start)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(settings.optimizer, params, settings.lr)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout in transformer tasks
    losses: list[float] = []
    trained = 0
    for _ in range(settings.local_epochs):
        order = indices[torch.randperm(len(indices), generator=gen).numpy()]
        for chosen in epoch_batches(data, order, settings.batch_size, settings.group_by_length):
            batch = data.batch(chosen, device)
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(logits(model, batch), batch["labels"])
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value}")
            loss.backward()
            if settings.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, settings.grad_clip)
            opt.step()
            mask_model_(model, settings.pairs, settings.rank)
            losses.append(value)
            trained += len(chosen)
            if on_step is not None:
                on_step(trained)
    state = get_state(model)
    if not is_finite(state):
        raise FloatingPointError("update has NaN or inf")
    return LocalResult(state=state, num_samples=len(indices), mean_loss=float(np.mean(losses)) if losses else float("nan"))


def train_client(
    model: nn.Module,
    logits: Callable[[nn.Module, Batch], torch.Tensor],
    data: Examples,
    indices: np.ndarray,
    start: State,
    settings: TrainSettings,
    seed: int,
    device: torch.device,
    retries: int,
    on_batch_size: Callable[[int], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> LocalResult:
    """:func:`train_local` with retries.

    Out of memory halves the batch size (reported through ``on_batch_size``,
    kept for later clients) and tries again without using up a retry; any
    other exception, NaN or inf uses one retry.  After ``retries`` retries the
    client is given up with :class:`ClientFailed`.  ``on_step`` is passed to
    each try, so a retried client's count starts from zero again.
    """
    failures = 0
    while True:
        try:
            return train_local(model, logits, data, indices, start, settings, seed, device, on_step)
        except Exception as err:  # noqa: BLE001 - any client fault is retried, then skipped and counted
            if is_out_of_memory(err) and settings.batch_size > 1:
                empty_cache(device)
                settings.batch_size = max(1, settings.batch_size // 2)
                log.warning("out of memory on %s: batch size halved to %d", device, settings.batch_size)
                if on_batch_size is not None:
                    on_batch_size(settings.batch_size)
                continue
            failures += 1
            log.warning("client failed (%s: %s), attempt %d of %d", type(err).__name__, err, failures, retries + 1)
            if failures > retries:
                raise ClientFailed(f"{type(err).__name__}: {err}", diverged=isinstance(err, FloatingPointError)) from err


@torch.no_grad()
def evaluate(
    model: nn.Module,
    logits: Callable[[nn.Module, Batch], torch.Tensor],
    data: Examples,
    state: State,
    batch_size: int,
    device: torch.device,
) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``state`` on ``data``."""
    set_state(model, state)
    model.eval()
    correct, loss_sum, n = 0, 0.0, len(data)
    for begin in range(0, n, batch_size):
        idx = np.arange(begin, min(n, begin + batch_size))
        batch = data.batch(idx, device)
        out = logits(model, batch).float()
        loss_sum += float(nn.functional.cross_entropy(out, batch["labels"], reduction="sum"))
        correct += int((out.argmax(dim=1) == batch["labels"]).sum())
    return correct / n, loss_sum / n
