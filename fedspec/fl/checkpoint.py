"""Round checkpoints: tensors in safetensors, everything else in plain JSON.

A checkpoint folder holds ``state_rNNNNN.safetensors`` (the global trainable
tensors) and ``checkpoint.json`` (round, aggregator state, batch size, the CSV
rows so far, the spec hash, the SHA-256 of the state file).  The tensor file
is written first under a new name; renaming ``checkpoint.json`` over the old
one is the commit.  Nothing read back is unpickled: safetensors holds raw
tensors only, and the JSON is parsed as data.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from fedspec.atomic import write_bytes, write_json
from fedspec.errors import CheckpointError, NotSyncedYet

log = logging.getLogger(__name__)

FORMAT = 1
META_NAME = "checkpoint.json"


@dataclass
class Checkpoint:
    """Everything needed to continue an item after ``round``."""

    round: int
    state: dict[str, torch.Tensor]
    aggregator: dict[str, Any]
    batch_size: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"
    writer: str | None = None  # the worker that committed it (informational)


def _state_name(round_: int) -> str:
    return f"state_r{round_:05d}.safetensors"


def save_checkpoint(folder: Path, item_id: str, spec_hash: str, ckpt: Checkpoint) -> None:
    """Atomically commit ``ckpt`` to ``folder``, then remove older tensor files."""
    folder.mkdir(parents=True, exist_ok=True)
    blob = save_tensors({k: v.detach().to("cpu").contiguous() for k, v in ckpt.state.items()})
    name = _state_name(ckpt.round)
    write_bytes(folder / name, blob, sync_folder=False)  # the checkpoint.json write below fsyncs the folder for both
    meta = {
        "format": FORMAT,
        "item_id": item_id,
        "spec_hash": spec_hash,
        "round": ckpt.round,
        "state_file": name,
        "state_sha256": hashlib.sha256(blob).hexdigest(),
        "aggregator": ckpt.aggregator,
        "batch_size": ckpt.batch_size,
        "device": ckpt.device,
        "writer": ckpt.writer,
        "rows": ckpt.rows,
    }
    write_json(folder / META_NAME, meta, compact=True)
    for old in folder.glob("state_r*.safetensors"):
        if old.name != name:
            try:
                old.unlink()
            except OSError as err:  # a peer's sync client may hold it; it is harmless garbage
                log.debug("could not remove old state %s: %s", old, err)


def read_meta(folder: Path) -> dict[str, Any] | None:
    """The parsed ``checkpoint.json`` or None when there is none; raises on a torn or foreign file."""
    path = folder / META_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if (folder / f".{META_NAME}.icloud").exists():
            raise NotSyncedYet(f"{path}: iCloud placeholder, not downloaded yet") from None
        return None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror})") from None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path}: torn or foreign checkpoint (not fedspec JSON); move it away to restart the item") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("round"), int):
        raise CheckpointError(f"{path}: not a fedspec checkpoint (format {FORMAT} expected); move it away to restart the item")
    return meta


def load_checkpoint(folder: Path, item_id: str, spec_hash: str) -> Checkpoint | None:
    """Load the last committed round, or None when the item has not started.

    Raises
    ------
    CheckpointError
        Torn, truncated or foreign files, or a checkpoint of a different spec.
    """
    meta = read_meta(folder)
    if meta is None:
        return None
    where = folder / META_NAME
    if meta.get("spec_hash") != spec_hash or meta.get("item_id") != item_id:
        raise CheckpointError(
            f"{where}: checkpoint belongs to a different spec (item {meta.get('item_id')!r}, spec {meta.get('spec_hash')}; "
            f"expected {item_id!r}, spec {spec_hash}); move it away or use another --root"
        )
    state_name = str(meta.get("state_file", ""))
    if Path(state_name).name != state_name or not state_name.endswith(".safetensors"):
        raise CheckpointError(f"{where}: invalid state_file entry {state_name!r}")
    try:
        blob = (folder / state_name).read_bytes()
    except FileNotFoundError:
        raise NotSyncedYet(f"{folder / state_name}: tensor file of round {meta['round']} has not arrived yet") from None
    if hashlib.sha256(blob).hexdigest() != meta.get("state_sha256"):
        raise CheckpointError(f"{folder / state_name}: truncated or altered (SHA-256 differs from {META_NAME})")
    try:
        state = load_tensors(blob)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{folder / state_name}: not a safetensors file ({err})") from None
    try:
        return Checkpoint(
            round=int(meta["round"]),
            state=state,
            aggregator=dict(meta["aggregator"]),
            batch_size=int(meta["batch_size"]),
            rows=list(meta["rows"]),
            device=str(meta.get("device", "cpu")),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: checkpoint is missing or has a bad field ({err})") from None
