"""Device choice and the settings that depend on it."""

from __future__ import annotations

import os

import torch

from fedspec.errors import ConfigError

# Default batch sizes when a spec leaves batch_size unset: small models train in
# small batches everywhere; transformers use what a 6 GB GTX 1660 Ti or an M2 holds.
DEFAULT_BATCH: dict[str, dict[str, int]] = {
    "digits": {"cpu": 16, "cuda": 16, "mps": 16},
    "tweets-minilm": {"cpu": 32, "cuda": 32, "mps": 32},
    "sst2-bert": {"cpu": 16, "cuda": 32, "mps": 32},
}


def cpu_threads() -> dict[str, int]:
    """The torch threads of this process and the CPUs it may use, for its heartbeat (status warns where they crowd)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # no affinity on macOS/Windows
    return {"threads": torch.get_num_threads(), "cpus": cpus}


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(requested: str) -> torch.device:
    """Return the torch device for ``auto`` (cuda > mps > cpu) or a forced choice.

    Raises
    ------
    ConfigError
        A forced device that this machine does not have.
    """
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' was requested but CUDA is not available on this machine (use --device auto or cpu)")
    if requested == "mps" and not mps_available():
        raise ConfigError("device: 'mps' was requested but MPS is not available on this machine (use --device auto or cpu)")
    if requested not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: {requested!r} is not one of auto, cpu, cuda, mps")
    return torch.device(requested)


def default_batch_size(task: str, device: torch.device) -> int:
    return DEFAULT_BATCH[task][device.type]


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA and MPS out-of-memory errors (MPS raises a plain RuntimeError)."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
