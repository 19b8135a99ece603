"""The per-item results CSV: one row per round, the same columns for every method.

No torch here: the plots and the status command read these files too.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable

from fedspec.atomic import make_folder, write_text

COLUMNS = [
    "round",
    "task",
    "method",
    "partition",
    "alpha",
    "seed",
    "test_accuracy",
    "test_loss",
    "train_loss",
    "frobenius_gap",
    "rank",
    "tail_energy",
    "uplink_bytes",
    "downlink_bytes",
    "clients_ok",
    "clients_failed",
    "round_seconds",
    "device",
]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def to_csv_text(rows: Iterable[dict[str, Any]]) -> str:
    """Render rows with a fixed column order and exact float repr (same rows → same bytes)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in COLUMNS])
    return buf.getvalue()


def write_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """Atomically write the results CSV of one item."""
    make_folder(path.parent, path.parent.parent)  # <root>/paper_results/<item>.csv: never a vanished root
    write_text(path, to_csv_text(rows))
