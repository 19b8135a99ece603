"""``digits``: scikit-learn's bundled 8×8 digits, a pretrained frozen MLP, LoRA on its hidden layers.

Offline and seconds on a CPU.  The base MLP (64→128→128→10) is pretrained on a
small public split that no client holds, cached per machine, then frozen;
clients train LoRA on ``fc1`` and ``fc2`` plus the full classifier ``head``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from fedspec.atomic import write_bytes
from fedspec.fl.tasks.base import Batch, TaskData, TensorExamples
from fedspec.fl.splits import SPLIT_SEED, digits_arrays, digits_splits, subset
from fedspec.fl.tasks.common import cache_dir, wrap_lora

HIDDEN = 128
PRETRAIN_EPOCHS = 30


class DigitsMLP(nn.Module):
    def __init__(self, hidden: int = HIDDEN, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _pretrain(x: np.ndarray, y: np.ndarray) -> dict[str, torch.Tensor]:
    """Pretrain the base MLP on the public split, deterministically on the CPU."""
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SPLIT_SEED)
        model = DigitsMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(PRETRAIN_EPOCHS):
        perm = torch.randperm(len(yt), generator=gen)
        for start in range(0, len(yt), 32):
            idx = perm[start : start + 32]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def pretrained_base(x_public: np.ndarray, y_public: np.ndarray) -> dict[str, torch.Tensor]:
    """The pretrained base weights, from the local cache when present."""
    key = hashlib.sha256(x_public.tobytes() + y_public.tobytes() + f"{HIDDEN}-{PRETRAIN_EPOCHS}-v1".encode())
    path = cache_dir() / f"digits_mlp_{key.hexdigest()[:16]}.safetensors"
    if path.exists():
        try:
            return load_file(str(path))
        except Exception:  # a torn cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    weights = _pretrain(x_public, y_public)
    from safetensors.torch import save as save_bytes

    write_bytes(path, save_bytes(weights))
    return weights


def load_digits_task(max_train_samples: int | None = None) -> TaskData:
    x, y = digits_arrays()
    test_idx, public_idx, train_idx = digits_splits(len(y))
    train_idx = subset(train_idx, max_train_samples)
    base = pretrained_base(x[public_idx], y[public_idx])

    def build_model(max_rank: int, lora_alpha: float) -> nn.Module:
        model = DigitsMLP()
        model.load_state_dict(base)
        return wrap_lora(model, ["fc1", "fc2"], ["head"], max_rank, lora_alpha)

    def logits(model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(batch["x"])

    return TaskData(
        name="digits",
        train=TensorExamples(torch.from_numpy(x[train_idx]), y[train_idx]),
        test=TensorExamples(torch.from_numpy(x[test_idx]), y[test_idx]),
        num_classes=10,
        build_model=build_model,
        logits=logits,
    )


__all__ = ["DigitsMLP", "load_digits_task"]
