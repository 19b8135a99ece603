"""``work_queue.json``: the list of items, each with its full spec and a stable id.

It changes only when a grid is added, under the queue's lock.  Conflicted
copies made by sync clients are merged as a union of items.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedspec.atomic import write_json
from fedspec.config import did_you_mean, item_id_problem, spec_changes
from fedspec.errors import QueueError, RootError
from fedspec.queue.store import QUEUE_FILE, QueueLock, RootPaths, conflicted_copies, read_json

log = logging.getLogger(__name__)

FORMAT = 1
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class QueueItem:
    id: str
    spec: dict[str, Any]
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    @property
    def rounds(self) -> int:
        return int(self.spec.get("rounds", 0))


def _parse(data: Any, where: Path) -> list[QueueItem]:
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("items"), list):
        raise QueueError(f"{where}: not a fedspec work queue (expected {{\"format\": {FORMAT}, \"items\": [...]}})")
    items = []
    for n, raw in enumerate(data["items"]):
        if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or not isinstance(raw.get("spec"), dict):
            raise QueueError(f"{where}: items[{n}] is not an item with an id and a spec")
        problem = item_id_problem(raw["id"])
        if problem:
            raise QueueError(f"{where}: items[{n}]: id {raw['id']!r} is not a safe file name ({problem})")
        items.append(QueueItem(raw["id"], raw["spec"], int(raw.get("max_attempts", DEFAULT_MAX_ATTEMPTS))))
    return items


def _serialize(items: list[QueueItem]) -> dict[str, Any]:
    return {"format": FORMAT, "items": [{"id": i.id, "spec": i.spec, "max_attempts": i.max_attempts} for i in items]}


def load_queue(paths: RootPaths) -> list[QueueItem]:
    """The items of the queue.

    Raises
    ------
    RootError
        No queue: the folder is not a fedspec root (yet).
    QueueError
        The queue file is empty, torn, a placeholder or not fedspec's.
    """
    data, problem = read_json(paths.queue_file, unreachable_raises=True)
    if problem == "missing":
        raise RootError(
            f"{paths.root}: not a fedspec root (no {paths.queue_file.relative_to(paths.root)}); "
            "create the queue with `fedspec worker --grid experiments/quick.toml`"
        )
    if problem is not None:
        raise QueueError(f"{paths.queue_file}: {problem}; nothing was changed (restore it, or merge a conflicted copy)")
    return _parse(data, paths.queue_file)


def _merge(base: list[QueueItem], extra: list[QueueItem], where: str, advice: str = "") -> tuple[list[QueueItem], list[str]]:
    by_id = {i.id: i for i in base}
    merged = list(base)
    added = []
    for item in extra:
        if item.id in by_id:
            if by_id[item.id].spec != item.spec:
                changes = spec_changes(by_id[item.id].spec, item.spec)
                raise QueueError(f"{where}: item {item.id!r} is already in the queue with a different spec ({changes})"
                                 + (f"; {advice}" if advice else ""))
            continue
        by_id[item.id] = item
        merged.append(item)
        added.append(item.id)
    return merged, added


def merge_conflicted_copies(paths: RootPaths) -> list[str]:
    """Fold sync-client copies of the queue into it (union of items); returns a report line per copy."""
    copies = conflicted_copies(paths.work, QUEUE_FILE)
    if not copies:
        return []
    reports = []
    with QueueLock(paths.lock_file):
        items = load_queue(paths)
        for copy in copies:
            data, problem = read_json(copy)
            if problem is not None:
                reports.append(f"{copy.name}: conflicted copy ignored ({problem})")
                continue
            try:
                items, added = _merge(items, _parse(data, copy), str(copy))
            except QueueError as err:
                reports.append(f"{copy.name}: conflicted copy not merged ({err})")
                continue
            write_json(paths.queue_file, _serialize(items))
            copy.replace(copy.with_name(copy.name + ".merged"))
            reports.append(f"{copy.name}: conflicted copy merged ({len(added)} new item(s))")
    for line in reports:
        log.warning(line)
    return reports


def add_items(paths: RootPaths, new: list[QueueItem], source: str = "grid") -> list[str]:
    """Create the queue or merge ``new`` into it; idempotent.  Returns the ids that were added.

    Raises
    ------
    QueueError
        An existing item with the same id has a different spec, or the queue
        file is unreadable (it is then left untouched).
    """
    paths.make()
    with QueueLock(paths.lock_file):
        if paths.queue_file.exists() or paths.queue_file.with_name(f".{QUEUE_FILE}.icloud").exists():
            items = load_queue(paths)
        else:
            items = []
        merged, added = _merge(items, new, source, "item names leave such settings out, so give this grid its own --root")
        if added or not paths.queue_file.exists():
            write_json(paths.queue_file, _serialize(merged))
    return added


def find_item(items: list[QueueItem], item_id: str, where: Path | str = "the queue") -> QueueItem:
    """The item named ``item_id``; a name not there is a QueueError that offers the nearest id."""
    for item in items:
        if item.id == item_id:
            return item
    raise QueueError(f"{where}: no item {item_id!r}{did_you_mean(item_id, (i.id for i in items))}")


__all__ = ["QueueItem", "add_items", "find_item", "load_queue", "merge_conflicted_copies"]
