"""Paths of a fedspec root, safe JSON reads, the queue lock, and sync-client debris.

A shared folder is not a file system to trust: files arrive torn or late, sync
clients leave conflicted copies (``name (Host's conflicted copy 2026-01-02).json``,
``name 2.json``) and iCloud placeholders (``.name.icloud``).  Readers here
never crash on such files: they return None and report them.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from fedspec.errors import is_unreachable

log = logging.getLogger(__name__)

WORK = "distributed_work"
QUEUE_FILE = "work_queue.json"
CHECKPOINTS = "checkpoints_distributed"
RESULTS = "paper_results"
PLOTS = "plots"

# Dropbox: "name (Host's conflicted copy 2026-01-02).json"; Google Drive: "name (1).json";
# iCloud: "name 2.json".
CONFLICT_RE = re.compile(r"^(?P<stem>.+?)(?: \(.*conflicted copy.*\)| \(\d+\)| \d+)(?P<ext>\.[A-Za-z0-9]+)$")
PLACEHOLDER_RE = re.compile(r"^\.(?P<name>.+)\.icloud$")


@dataclass(frozen=True)
class RootPaths:
    """The folders of one fedspec root (each joined once: a worker's scan of the queue asks for them per item)."""

    root: Path

    @cached_property
    def work(self) -> Path:
        return self.root / WORK

    @cached_property
    def queue_file(self) -> Path:
        return self.work / QUEUE_FILE

    @cached_property
    def lock_file(self) -> Path:
        return self.work / (QUEUE_FILE + ".lock")

    @cached_property
    def claims(self) -> Path:
        return self.work / "claims"

    @cached_property
    def heartbeats(self) -> Path:
        return self.work / "heartbeats"

    @cached_property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS

    @cached_property
    def results(self) -> Path:
        return self.root / RESULTS

    def result_csv(self, item_id: str) -> Path:
        return self.results / f"{item_id}.csv"

    def checkpoint_folder(self, item_id: str) -> Path:
        return self.checkpoints / item_id

    def make(self) -> None:
        for folder in (self.work, self.claims, self.heartbeats, self.checkpoints, self.results):
            folder.mkdir(parents=True, exist_ok=True)

    def files_in_other_case(self, item_ids: list[str]) -> dict[str, list[str]]:
        """``{item id: ['paper_results/Trial.csv', 'checkpoints_distributed/Trial']}`` for the ids whose CSV or
        checkpoint folder the root holds under a name that differs in case only.

        macOS and Windows take such names for the same file, so an item would
        resume, or count as done, from another experiment's files there; on
        Linux they are two files, which a sync client renames on the Mac
        ("Trial (Case Conflict).csv").  One listing of each folder for any
        number of ids.
        """
        found: dict[str, list[str]] = {}
        for folder, suffix in ((self.results, ".csv"), (self.checkpoints, "")):
            try:
                names = os.listdir(folder)
            except OSError:  # no such folder yet (or unreadable: whoever reads it next says why)
                continue
            by_key: dict[str, list[str]] = {}
            for name in names:
                if name.isascii():  # item ids are
                    by_key.setdefault(name.lower(), []).append(name)
            for item_id in item_ids:
                own = f"{item_id}{suffix}"
                other = [name for name in by_key.get(own.lower(), []) if name != own]
                found.setdefault(item_id, []).extend(f"{folder.name}/{name}" for name in other)
        return {item_id: held for item_id, held in found.items() if held}


def read_json(path: Path, unreachable_raises: bool = False) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, reason) for a missing, torn, placeholder or foreign file.

    ``unreachable_raises``: a folder that cannot be reached (ENOTCONN,
    ETIMEDOUT, EIO, Windows' network errors) raises the OSError instead of
    reading as "unreadable", for the queue file: a worker with --wait waits
    for the folder then, instead of taking it for a torn file up to a limit.
    A peer's heartbeat or failure record that cannot be read is only skipped.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        placeholder = path.with_name(f".{path.name}.icloud")
        return None, ("iCloud placeholder, not downloaded" if placeholder.exists() else "missing")
    except OSError as err:
        if unreachable_raises and is_unreachable(err):  # the share dropped, not this file torn
            raise
        return None, f"unreadable ({err.strerror})"
    if not raw.strip():
        return None, "empty"
    try:
        return json.loads(raw.decode("utf-8")), None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"not valid JSON ({err.__class__.__name__}: {str(err)[:80]})"


def conflicted_copies(folder: Path, name: str) -> list[Path]:
    """Sync-client copies of ``folder/name`` (Dropbox, Google Drive and iCloud naming)."""
    stem, ext = Path(name).stem, Path(name).suffix
    found = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    for p in entries:
        m = CONFLICT_RE.match(p.name)
        if m and m.group("stem") == stem and m.group("ext") == ext:
            found.append(p)
    return sorted(found)


def placeholders(folder: Path) -> list[Path]:
    """iCloud placeholders (``.name.icloud``) anywhere under ``folder``.

    ``os.walk`` on plain strings: a worker's scan before every claim walks
    the root, and ``Path.rglob`` cost about four times as much there.  Folders
    that cannot be read are skipped, as before.
    """
    return sorted(Path(top, name) for top, _, files in os.walk(folder) for name in files if PLACEHOLDER_RE.match(name))


# How often a waiter retries the queue lock (filelock polls; it has no queue).
# With 8 processes contending on 2 cores (bench/queue_bench.py, 3-4 runs each):
# filelock's default 50 ms gave claim p50 19-23 ms but p99 385-516 ms (an
# unlucky waiter misses the lock for many polls); 20 ms gave p99 270-312 ms but
# p50 41-43 ms (waiters burn the CPUs the holder needs); 30 ms: p50 29-44 ms,
# p99 261-391 ms.  Since a worker's scan no longer walks the root before each
# claim (2 runs each): 10 ms: p50 18-19, p99 182-348 ms; 20 ms: 25-26 / 285-371;
# 30 ms: 8-10 / 313-349 (5 runs); 50 ms: 6-7 / 411-514.
POLL_S = 0.03


class QueueLock:
    """The queue's file lock, or nothing where the folder cannot lock.

    A lock that raises (ENOTSUP on a macOS SMB mount, no flock on some network
    file systems) does not stop the worker: ``acquired`` is False and callers
    fall back to the single-writer protocol with a settle window.  A lock that
    silently does not exclude (a sync folder: it only excludes processes on
    this machine) is covered by the same protocol and by the fence.
    """

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self._lock = FileLock(str(path), timeout=timeout, poll_interval=POLL_S)
        self.acquired = False

    def __enter__(self) -> "QueueLock":
        try:
            self._lock.acquire()
            self.acquired = True
        except Timeout:
            log.warning("queue lock %s busy for %.0fs; going on without it", self._lock.lock_file, self._lock.timeout)
        except (OSError, NotImplementedError) as err:
            log.warning("queue lock %s unusable here (%s); using the lock-free protocol", self._lock.lock_file, err)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.acquired:
            try:
                self._lock.release()
            except OSError as err:
                log.warning("could not release queue lock: %s", err)
            self.acquired = False
