"""What every task provides to the round loop."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class Examples(Protocol):
    """An indexable training or test set that can build padded batches."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def batch(self, indices: np.ndarray | list[int], device: torch.device) -> Batch: ...


@dataclass
class TensorExamples:
    """Fixed-size feature vectors (digits)."""

    features: torch.Tensor
    labels: np.ndarray

    def __post_init__(self) -> None:
        self._labels_t = torch.as_tensor(self.labels, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: np.ndarray | list[int], device: torch.device) -> Batch:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return {"x": self.features[idx].to(device), "labels": self._labels_t[idx].to(device)}


@dataclass
class TokenExamples:
    """Tokenized text, padded per batch to its longest sequence (never to a fixed length)."""

    input_ids: list[list[int]]
    labels: np.ndarray
    pad_id: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        """Tokens per example."""
        return np.fromiter((len(r) for r in self.input_ids), dtype=np.int64, count=len(self.input_ids))

    def batch(self, indices: np.ndarray | list[int], device: torch.device) -> Batch:
        rows = [self.input_ids[int(i)] for i in indices]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            ids[j, : len(r)] = torch.as_tensor(r, dtype=torch.long)
            mask[j, : len(r)] = 1
        labels = torch.as_tensor(self.labels[np.asarray(indices)], dtype=torch.long)
        return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


# Length grouping sorts chunks of this many batches (Hugging Face's LengthGroupedSampler uses 50 too).
LENGTH_GROUP_BATCHES = 50


def epoch_batches(data: Examples, order: np.ndarray, batch_size: int, group_by_length: bool = False) -> list[np.ndarray]:
    """Cut one epoch's shuffled ``order`` into batches.

    With ``group_by_length`` (text only), each chunk of ``LENGTH_GROUP_BATCHES``
    batches of the shuffled order is sorted by length, longest first, before it
    is cut: a batch then holds sequences of similar length and is padded to
    little more than their mean instead of to the longest of a random draw.
    Every example is still seen once per epoch, and the chunks stay random.
    """
    if group_by_length and isinstance(data, TokenExamples) and len(order):
        chunk = batch_size * LENGTH_GROUP_BATCHES
        parts = [order[s : s + chunk] for s in range(0, len(order), chunk)]
        order = np.concatenate([p[np.argsort(-data.lengths[p], kind="stable")] for p in parts])
    return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]


@dataclass
class TaskData:
    """A loaded task: data splits and a factory for the LoRA-wrapped model.

    ``build_model(max_rank, scaling)`` returns a LoRA-adapted model (peft for
    the text tasks) whose trainable tensors are the LoRA factors (width
    ``max_rank``, named ``….lora_A.…``/``….lora_B.…``) and the classifier head.
    ``logits(model, batch)`` runs the forward pass.
    """

    name: str
    train: Any
    test: Any
    num_classes: int
    build_model: Callable[[int, float], nn.Module]
    logits: Callable[[nn.Module, Batch], torch.Tensor]
