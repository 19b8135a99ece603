"""``work_queue.json``: the list of items, each with its full spec and a stable id.

It changes only when a grid is added, under the queue's lock.  Conflicted
copies made by sync clients are merged as a union of items.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sized

from fedspec import __version__
from fedspec.atomic import write_json
from fedspec.checkpoint_file import header_changes, read_header
from fedspec.config import (ExperimentSpec, did_you_mean, item_id_problem, settings_digest, spec_changes, spec_problem,
                            with_defaults)
from fedspec.errors import CheckpointError, QueueError, RootError, no_such_root
from fedspec.queue.store import QUEUE_FILE, QueueLock, RootPaths, conflicted_copies, read_json

log = logging.getLogger(__name__)

FORMAT = 1
DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class QueueItem:
    id: str
    spec: dict[str, Any]
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    # The fedspec that added the item ({"fedspec": version, "settings": digest}, config.origin()); None in older queues.
    added_by: dict[str, str] | None = field(default=None, compare=False, hash=False)

    @property
    def rounds(self) -> int:
        return int(self.spec.get("rounds", 0))

    @property
    def of_other_settings(self) -> bool:
        """True when a fedspec that declares the settings otherwise than this one added the item (``settings_digest``)."""
        return self.added_by is not None and self.added_by.get("settings") != settings_digest()


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
        stamp = raw.get("added_by")
        added_by = {str(k): str(v) for k, v in stamp.items()} if isinstance(stamp, dict) else None  # another's file: lenient
        items.append(QueueItem(raw["id"], raw["spec"], int(raw.get("max_attempts", DEFAULT_MAX_ATTEMPTS)), added_by))
    return items


def _serialize(items: list[QueueItem]) -> dict[str, Any]:
    return {"format": FORMAT, "items": [{"id": i.id, "spec": i.spec, "max_attempts": i.max_attempts,
                                         **({"added_by": i.added_by} if i.added_by is not None else {})} for i in items]}


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
    if problem == "missing" and not paths.root.is_dir():
        raise no_such_root(paths.root)
    if problem == "missing":
        runs = "" if paths.work.exists() else _files_of_runs(paths)  # a queue's folder whose file is gone is no run's root
        if runs:  # `fedspec run` writes results and checkpoints, never a queue: not a stranger's folder
            raise RootError(
                f"{paths.root}: no queue here (no {paths.queue_file.relative_to(paths.root)}), only what `fedspec run` "
                f"writes ({runs}): `fedspec plots` draws them, a run shows its own progress, and "
                "`fedspec worker --grid FILE` makes a queue here"
            )
        raise RootError(
            f"{paths.root}: not a fedspec root (no {paths.queue_file.relative_to(paths.root)}); "
            "create the queue with `fedspec worker --grid experiments/quick.toml`"
        )
    if problem is not None:
        raise QueueError(f"{paths.queue_file}: {problem}; nothing was changed (restore it, or merge a conflicted copy)")
    return _parse(data, paths.queue_file)


def _files_of_runs(paths: RootPaths) -> str:
    """``2 results, 1 checkpoint`` in a root without a queue (what `fedspec run` leaves), or ``""``."""
    counts = [(len(list(paths.results.glob("*.csv"))), "result"),  # (a missing folder globs to nothing)
              (sum(p.is_dir() for p in paths.checkpoints.glob("*")), "checkpoint")]
    return ", ".join(f"{n} {what}{'' if n == 1 else 's'}" for n, what in counts if n)


def _merge(base: list[QueueItem], extra: list[QueueItem], where: str,
           advice: Callable[[dict[str, Any], dict[str, Any]], str] | None = None) -> tuple[list[QueueItem], list[str]]:
    """The union of two item lists and the ids new in it; an id with two specs is a QueueError, with ``advice(old, new)``."""
    by_id = {i.id: i for i in base}
    merged = list(base)
    added = []
    for item in extra:
        if item.id in by_id:
            queued = by_id[item.id]
            old = queued.spec
            if queued.of_other_settings:  # a later fedspec's settings that this one does not know: no difference it can see
                old = {k: v for k, v in old.items() if k in ExperimentSpec.model_fields}
            changes = spec_changes(old, item.spec)  # none for a setting an earlier fedspec's spec leaves out at its default
            if changes:
                tip = f"; {advice(old, item.spec)}" if advice else ""
                raise QueueError(f"{where}: item {item.id!r} is already in the queue with a different spec ({changes}){tip}")
            continue
        by_id[item.id] = item
        merged.append(item)
        added.append(item.id)
    return merged, added


def _grid_advice(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What to do when a grid's item has the name of a queued item of other settings."""
    old, new = with_defaults(old), with_defaults(new)
    if {k for k in old.keys() | new.keys() if old.get(k) != new.get(k)} == {"seed"}:  # a single-seed grid, another seed
        return (f"to add seeds to this root, list them all in one grid (seeds = [{old.get('seed')}, {new.get('seed')}]): "
                "the items already there keep their names and results")
    return "item names leave such settings out, so give this grid its own --root"


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
        An existing item with the same id has a different spec, a new item's
        name already has a checkpoint or result of other settings in the root
        (:func:`leftover_of_other_settings`), or the queue file is unreadable
        (it is then left untouched).
    """
    paths.make()
    with QueueLock(paths.lock_file):
        if paths.queue_file.exists() or paths.queue_file.with_name(f".{QUEUE_FILE}.icloud").exists():
            items = load_queue(paths)
        else:
            items = []
        merged, added = _merge(items, new, source, _grid_advice)
        fresh = set(added)
        _refuse_leftovers(paths, [i for i in new if i.id in fresh], source)
        if added or not paths.queue_file.exists():
            write_json(paths.queue_file, _serialize(merged))
    return added


def same_spec_elsewhere(existing: list[QueueItem], new: list[QueueItem]) -> dict[str, str]:
    """``{new id: existing id}`` for the new items whose spec an item of another name already has.

    A grid adds ``_seed42`` to its items' names only when it lists several
    seeds, so a root's single-seed grid added again with more seeds names the
    same experiments anew: they would run twice, and count twice among the
    seeds of the figures.
    """
    ids = {i.id for i in existing}
    by_spec = {_key(i.spec): i.id for i in existing}
    return {i.id: by_spec[key] for i in new if i.id not in ids and (key := _key(i.spec)) in by_spec}


def _key(spec: dict[str, Any]) -> str:
    return json.dumps(with_defaults(spec), sort_keys=True)


def other_settings(header: dict[str, Any], item: QueueItem) -> str | None:
    """How the settings of a checkpoint's ``header`` differ from ``item``'s (``rounds 20 -> 10``); None if they do not."""
    spec = ExperimentSpec.model_validate(item.spec)
    changes = header_changes(header, spec.spec_hash(), spec.hashed_fields())
    return None if changes is None else changes or f"spec {header.get('spec_hash')} -> {spec.spec_hash()}"


def leftover_of_other_settings(paths: RootPaths, item: QueueItem) -> str | None:
    """What the root already holds under ``item``'s name from other settings, e.g. ``a checkpoint and result (rounds 20 -> 10)``; None if nothing.

    ``fedspec run`` keeps its checkpoint and CSV under names such as
    ``fedspec_dirichlet_alpha0.5``, the names a grid's items get too; a worker
    counts an item whose CSV exists as done, so a grid added on top would take
    that run's result (another number of rounds, of clients …) for its own.
    The checkpoint's header records the settings; a CSV without one is judged
    by its number of rounds.  A checkpoint that cannot be read is left to the
    worker that loads it, which says why.
    """
    csv = paths.result_csv(item.id)
    try:
        header = read_header(paths.checkpoint_folder(item.id))
    except CheckpointError:
        header = None
    if header is not None:
        changes = other_settings(header, item)
        what = "a checkpoint and result" if csv.exists() else "a checkpoint"
        return f"{what} of other settings ({changes})" if changes else None
    if not csv.exists():
        return None
    try:
        with open(csv, encoding="utf-8") as fh:
            rounds = sum(1 for line in fh if line.strip()) - 1  # the header line
    except (OSError, UnicodeDecodeError):
        return None  # unreadable: plots says so; a worker only checks that it exists
    expected = ExperimentSpec.model_validate(item.spec).rounds
    return None if rounds == expected else f"a result of {rounds} round(s) (the grid's item has {expected})"


def _and_more(found: Sized) -> str:
    """`` (and 2 more item(s))`` after the first of ``found`` named in an error, or ``""``."""
    return f" (and {len(found) - 1} more item(s))" if len(found) > 1 else ""


def _refuse_leftovers(paths: RootPaths, new: list[QueueItem], source: str) -> None:
    in_other_case = paths.files_in_other_case([i.id for i in new])  # e.g. `fedspec run --name FEDAVG_iid`'s, on Linux
    if in_other_case:
        item_id, held = next(iter(in_other_case.items()))
        raise QueueError(f"{source}: item {item_id!r}: {paths.root} holds {' and '.join(held)}{_and_more(in_other_case)}, "
                         "which macOS and Windows take for this item's (they differ in case only), e.g. from `fedspec run "
                         "--name`: move them away, or give this grid its own --root")
    found = [(item, problem) for item in new if (problem := leftover_of_other_settings(paths, item))]
    if not found:
        return
    item, problem = found[0]
    ckpt, csv = paths.checkpoint_folder(item.id), paths.result_csv(item.id)
    move = " and ".join(str(p.relative_to(paths.root)) for p in (ckpt, csv) if p.exists())
    raise QueueError(f"{source}: item {item.id!r} already has {problem} in {paths.root}{_and_more(found)}, e.g. from "
                     f"`fedspec run`; a worker would take that for this grid's result: move {move} away, or give this "
                     "grid its own --root")


def not_taken_here(items: Iterable[QueueItem]) -> list[tuple[QueueItem, str]]:
    """``(item, why)`` for the items that another fedspec added with settings this one does not take.

    Machines of a grid update at different times, and a newer fedspec's
    items may name a setting, task or method this one does not know.  Only
    items stamped with other declarations of the settings are validated: an
    item of this fedspec's own that does not validate is a hand edit.
    """
    return [(item, problem) for item in items if item.of_other_settings and (problem := spec_problem(item.spec, item.id))]


def added_by_other_fedspec(found: list[tuple[QueueItem, str]]) -> str:
    """``x: weight_decay: unknown key (and 2 more item(s)): added by fedspec 0.2.0, whose settings this fedspec 0.1.0
    does not take``, for what :func:`not_taken_here` found."""
    item, problem = found[0]
    theirs = (item.added_by or {}).get("fedspec", "?")
    checkout = "another checkout of " if theirs == __version__ else ""
    return (f"{problem}{_and_more(found)}: added by {checkout}fedspec {theirs}, whose settings this fedspec {__version__} "
            "does not take")


def find_item(items: list[QueueItem], item_id: str, where: Path | str = "the queue") -> QueueItem:
    """The item named ``item_id``; a name not there is a QueueError that offers the nearest id."""
    for item in items:
        if item.id == item_id:
            return item
    raise QueueError(f"{where}: no item {item_id!r}{did_you_mean(item_id, (i.id for i in items))}")


__all__ = ["QueueItem", "add_items", "added_by_other_fedspec", "find_item", "leftover_of_other_settings",
           "load_queue", "merge_conflicted_copies", "not_taken_here", "same_spec_elsewhere"]
