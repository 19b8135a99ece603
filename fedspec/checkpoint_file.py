"""The round checkpoint's file, and reading its metadata without torch.

A checkpoint is one file, ``checkpoint.safetensors`` in the item's folder: the
global trainable tensors, and in the safetensors header's ``__metadata__`` two
JSON strings,

* ``fedspec``: format, item id, spec hash and the settings behind it, round,
  aggregator state, batch size, device, writer, and the SHA-256 of the tensors;
* ``rows``: the CSV rows of every round so far.

One file means one atomic rename commits a round (two fsyncs: the file, then
the folder).  ``fedspec status`` and ``fedspec plots`` read only the header
(an 8-byte little-endian length, then JSON), never the tensors, so they need
neither torch nor the tensor bytes.  The header is parsed as data: nothing in
it is executed or unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedspec.config import spec_changes
from fedspec.errors import CheckpointError, NotSyncedYet

NAME = "checkpoint.safetensors"
FORMAT = 2
LEGACY_NAME = "checkpoint.json"  # format 1 (fedspec before the one-file checkpoint)
MAX_HEADER = 100_000_000  # safetensors refuses larger headers too


def read_header(folder: Path) -> dict[str, Any] | None:
    """The checkpoint's metadata with its ``rows``, reading only the header; None when the item has no checkpoint.

    Raises
    ------
    NotSyncedYet
        The file is an iCloud placeholder that has not been downloaded.
    CheckpointError
        A torn, foreign or older-format file.
    """
    path = Path(folder) / NAME
    try:
        with open(path, "rb") as fh:
            size = fh.read(8)
            length = int.from_bytes(size, "little") if len(size) == 8 else 0
            head = size + (fh.read(length) if 0 < length <= MAX_HEADER else b"")
    except FileNotFoundError:
        raise_if_pending(path)
        return None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror})") from None
    return parse_header(head, path)


def parse_header(blob: bytes, path: Path) -> dict[str, Any]:
    """The metadata (with ``rows``) from the start of a checkpoint file's bytes; ``path`` names it in errors."""
    torn = CheckpointError(f"{path}: torn or foreign checkpoint (no fedspec header); move it away to restart the item")
    length = int.from_bytes(blob[:8], "little") if len(blob) >= 8 else 0
    if not 0 < length <= min(MAX_HEADER, len(blob) - 8):
        raise torn
    try:
        fields = json.loads(blob[8 : 8 + length].decode("utf-8"))["__metadata__"]
        meta = json.loads(fields["fedspec"])
        rows = json.loads(fields["rows"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        raise torn from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("round"), int):
        raise CheckpointError(f"{path}: not a fedspec checkpoint (format {FORMAT} expected); move it away to restart the item")
    if not isinstance(rows, list):
        raise torn
    meta["rows"] = rows
    return meta


def header_changes(meta: dict[str, Any], spec_hash: str, hashed: dict[str, Any] | None) -> str | None:
    """How the settings a checkpoint's header records differ from ``hashed`` (``rounds 20 -> 10``).

    None when the header is of the spec ``spec_hash``, or records the same
    settings hashed another way: an earlier fedspec's, whose settings leave
    out those added since (at their defaults, which keep the earlier
    behaviour).  An empty string where there is nothing to compare (an older
    fedspec's header records no settings, or the caller has none).
    """
    if meta.get("spec_hash") == spec_hash:
        return None
    recorded = meta.get("spec")  # the settings behind its hash
    if not (isinstance(recorded, dict) and hashed):
        return ""
    return spec_changes(recorded, hashed) or None


def raise_if_pending(path: Path) -> None:
    """A missing checkpoint that is really an iCloud placeholder, or one in the old two-file format."""
    if path.with_name(f".{NAME}.icloud").exists():
        raise NotSyncedYet(f"{path}: iCloud placeholder, not downloaded yet")
    if path.with_name(LEGACY_NAME).exists():
        raise CheckpointError(
            f"{path.with_name(LEGACY_NAME)}: checkpoint of an older fedspec (format 1); "
            "finish the item with that version, or move the folder away to restart the item"
        )
