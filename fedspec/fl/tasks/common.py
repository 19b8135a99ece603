"""Helpers shared by tasks: local cache folder, LoRA wrapping (splits live in ``fedspec.fl.splits``)."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn


def cache_dir() -> Path:
    """Per-machine cache (never the shared root): ``$FEDSPEC_CACHE`` or the user cache folder (created by its first write)."""
    env = os.environ.get("FEDSPEC_CACHE")
    if env:
        base = Path(env)
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "fedspec" / "cache"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fedspec"
    return base


def wrap_lora(
    model: nn.Module,
    target_modules: list[str],
    modules_to_save: list[str],
    max_rank: int,
    scaling: float,
    task_type: str | None = None,
) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters of width ``max_rank``.

    ``scaling`` multiplies B·A.  fedspec fixes it to ``lora_alpha / rank`` of
    the *initial* rank for the whole run, so growing the rank never changes
    what an existing B·A means.  peft computes ``lora_alpha / r`` with
    ``r = max_rank``, hence the conversion.
    """
    from peft import LoraConfig, get_peft_model  # imports transformers: only the text tasks pay for it

    config = LoraConfig(
        r=max_rank,
        lora_alpha=scaling * max_rank,  # peft's scaling = lora_alpha / r
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        lora_dropout=0.0,
        bias="none",
        task_type=task_type,
    )
    return get_peft_model(model, config)
