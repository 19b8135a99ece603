"""Write every figure and the summary tables for a root."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from fedspec.atomic import write_text
from fedspec.errors import FedspecError, RootError
from fedspec.plots.data import load_results, summarize, summary_markdown
from fedspec.plots.figures import FIGURES, label_distribution, style
from fedspec.queue.status import STATES, ItemStatus, classify
from fedspec.queue.store import RootPaths
from fedspec.queue.workqueue import load_queue


class NoResults(FedspecError):
    """Nothing to plot yet."""


def _queue(root: Path, notes: list[str]) -> tuple[dict[str, dict[str, Any]], list[ItemStatus]]:
    """Each queue item's spec and state; none where the root has no queue (results copied elsewhere) or it cannot be read (noted)."""
    paths = RootPaths(root)
    try:
        items = load_queue(paths)
        report = classify(paths, items, with_progress=False, scan_placeholders=False)  # only the states are used
    except RootError:
        return {}, []
    except (FedspecError, OSError) as err:
        notes.append(f"queue not read ({err}): items with no rounds yet are not listed, label splits use default settings")
        return {}, []
    return {i.id: i.spec for i in items}, report.items


def _not_shown(items: list[ItemStatus], data) -> str | None:
    """One line on the queue's items that have no rounds in ``data``: a table without them is not the whole grid."""
    shown = set(data["item"])
    missing = [i for i in items if i.id not in shown]
    if not missing:
        return None
    count = Counter(i.state for i in missing)
    states = ", ".join(f"{count[s]} {s}" for s in STATES if count[s])
    return f"{len(missing)} of {len(items)} items of the queue have no rounds yet and are not shown ({states}; see `fedspec status`)"


def _partitions(data, specs: dict[str, dict[str, Any]]) -> dict[str, tuple[list[np.ndarray], np.ndarray]]:
    """Client label splits of every Dirichlet/IID setting, from the engine's own partition code."""
    from fedspec.fl.partition import partition
    from fedspec.fl.splits import train_labels

    out: dict[str, tuple[list[np.ndarray], np.ndarray]] = {}
    fed = data[data["method"] != "centralized"].drop_duplicates("setting").sort_values(["partition", "alpha"])
    for _, row in fed.iterrows():
        spec = specs.get(row["item"], {})
        labels = train_labels(str(row["task"]), spec.get("max_train_samples"))
        if labels is None:
            continue
        clients = int(spec.get("clients", row.get("clients_ok", 10) + row.get("clients_failed", 0)))
        alpha = float(row["alpha"]) if row["partition"] == "dirichlet" else 1.0
        parts = partition(labels, str(row["partition"]), clients, alpha, int(row["seed"]), int(spec.get("min_client_size", 10)))
        out[row["setting"]] = (parts, labels)
    return out


def make_plots(root: Path, out: Path, formats: list[str]) -> tuple[list[Path], list[str]]:
    """Render everything; returns (files written, notes about skipped inputs)."""
    data, notes = load_results(root)
    if data.empty:
        raise NoResults(f"{root / 'paper_results'}: no results yet (run `fedspec worker` first)")
    specs, items = _queue(root, notes)
    missing = _not_shown(items, data)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with style():
        for name, draw in FIGURES.items():
            for fmt in formats:
                path = out / f"{name}.{fmt}"
                draw(data, path)
                written.append(path)
        try:
            parts = _partitions(data, specs)
        except FedspecError as err:
            parts = {}
            notes.append(f"label distribution skipped: {err}")
        if parts:
            for fmt in formats:
                path = out / f"label_distribution.{fmt}"
                label_distribution(parts, path)
                written.append(path)
        elif not any("label distribution" in n for n in notes):
            notes.append("label distribution skipped: needs the digits task's labels (other tasks load their data with torch)")
    summary = summarize(data)
    write_text(out / "summary.csv", summary.to_csv(index=False))
    write_text(out / "summary.md", summary_markdown(summary) + (f"\n{missing}.\n" if missing else ""))
    if missing:
        notes.append(missing)
    written += [out / "summary.csv", out / "summary.md"]
    return written, notes
