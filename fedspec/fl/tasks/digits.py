"""``digits``: scikit-learn's bundled 8×8 digits, a pretrained frozen MLP, LoRA on its hidden layers.

Offline and seconds on a CPU.  The base MLP (64→128→128→10) is pretrained on a
small public split that no client holds, cached per machine, then frozen;
clients train LoRA on ``fc1`` and ``fc2`` plus the full classifier ``head``.

This is the one model fedspec adapts without peft.  Importing peft imports
transformers, about 3.3 s per process on a laptop CPU: more than a whole
20-round digits run spends training, and paid again by every worker process.
For two ``nn.Linear`` layers LoRA is :class:`LoraLinear` below; the text
tasks, where peft's coverage of transformer layers matters, use peft.
"""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from fedspec.atomic import write_bytes
from fedspec.errors import describe_os_error
from fedspec.fl.tasks.base import Batch, TaskData, TensorExamples
from fedspec.fl.splits import SPLIT_SEED, digits_arrays, digits_splits, subset
from fedspec.fl.tasks.common import cache_dir

log = logging.getLogger(__name__)

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


class LoraLinear(nn.Module):
    """A frozen ``nn.Linear`` plus a low-rank update: ``base(x) + scaling · B(A(x))``.

    Initialised like peft's default LoRA (A kaiming-uniform with a=√5, B zero,
    so the model starts as the base model) and named like it
    (``fc1.lora_A.weight``, ``fc1.lora_B.weight``), which is what
    :func:`fedspec.fl.lora.lora_pairs` pairs.
    """

    def __init__(self, base: nn.Linear, rank: int, scaling: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        # Drawn again after nn.Linear's own init, as peft does: the same random stream as a peft model.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # evaluation: one product with the merged weight W + s·BA (what peft's merge computes)
            merged = torch.addmm(self.base.weight, self.lora_B.weight, self.lora_A.weight, alpha=self.scaling)
            return nn.functional.linear(x, merged, self.base.bias)
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


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

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, save_bytes(weights))
    except OSError as err:  # a cache only saves time: a full or read-only cache folder costs a pretraining per process
        log.warning("digits: base weights not cached (%s); they are pretrained again next time", describe_os_error(err))
    return weights


def load_digits_task(max_train_samples: int | None = None) -> TaskData:
    x, y = digits_arrays()
    test_idx, public_idx, train_idx = digits_splits(len(y))
    train_idx = subset(train_idx, max_train_samples)
    base = pretrained_base(x[public_idx], y[public_idx])

    def build_model(max_rank: int, scaling: float) -> nn.Module:
        model = DigitsMLP()
        model.load_state_dict(base)
        model.requires_grad_(False)
        model.fc1 = LoraLinear(model.fc1, max_rank, scaling)
        model.fc2 = LoraLinear(model.fc2, max_rank, scaling)
        model.head.requires_grad_(True)  # the classifier is trained in full and aggregated like any tensor
        return model

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


__all__ = ["DigitsMLP", "LoraLinear", "load_digits_task"]
