"""Claims, generations and the fence: who holds an item, decided from single-writer files.

Every record about an item is a file written once by one worker, in
``distributed_work/claims/<item>/``:

* ``gNNNNN.<worker>.claim.json``     the worker claims generation N
* ``gNNNNN.<worker>.failed.json``    its attempt at generation N failed (with the error; ``final`` when
                                     no attempt can succeed: the item's own settings are invalid)
* ``gNNNNN.<worker>.released.json``  it gave generation N back (Ctrl-C, SIGTERM)
* ``retry.gNNNNN.<worker>.json``     a user reset the attempts counted up to generation N (``rerun``: and
                                     moved a done item's result aside, so generation N's holder has left it)

Single-writer files cannot conflict on any sync service.  Of several claims
for the top generation the lowest worker name wins, so every observer agrees
once the files have arrived.  The holder re-reads the records before every
commit and stops when a newer generation, or a winning rival, shows up.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fedspec.atomic import make_folder, write_json
from fedspec.errors import LeaseLost
from fedspec.queue.store import QueueLock, RootPaths, read_json

log = logging.getLogger(__name__)

RECORD_RE = re.compile(r"^g(?P<gen>\d{5,})\.(?P<worker>[A-Za-z0-9_-]+)\.(?P<kind>claim|failed|released)\.json$")
RETRY_RE = re.compile(r"^retry\.g(?P<gen>\d{5,})\.(?P<worker>[A-Za-z0-9_-]+)\.json$")
WORKER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass
class ItemClaims:
    """What the records of one item say (before heartbeats are taken into account)."""

    generation: int = 0  # top generation claimed, 0 = never
    holder: str | None = None  # winner of the top generation
    ended: str | None = None  # "failed" / "released" / "rerun" when the holder left the top generation
    failures: list[tuple[int, str, str]] = field(default_factory=list)  # (gen, worker, error) counted since the last retry
    foreign: list[str] = field(default_factory=list)  # files that are not fedspec records
    final: bool = False  # one of those failures says no attempt can succeed (the item's settings are invalid)

    @property
    def attempts(self) -> int:
        return len(self.failures)

    @property
    def last_error(self) -> str | None:
        return self.failures[-1][2] if self.failures else None


def item_folder(paths: RootPaths, item_id: str) -> Path:
    return paths.claims / item_id


def items_with_records(paths: RootPaths) -> set[str]:
    """The items that have a claims folder, in one listing: a scan then reads only those folders.

    An item never claimed has none, and a queue of hundreds of pending items
    cost one failing listing each in every worker's scan before each claim.
    """
    try:
        return set(os.listdir(paths.claims))
    except FileNotFoundError:
        return set()


def read_claims(paths: RootPaths, item_id: str) -> ItemClaims:
    """Parse every record of an item; unknown files are listed, never trusted."""
    folder = item_folder(paths, item_id)
    claims: dict[int, list[str]] = {}
    ended: dict[tuple[int, str], str] = {}
    failures: list[tuple[int, str, str]] = []
    finals: list[int] = []  # generations of final failures
    retry_gen = 0
    reruns: set[int] = set()  # generations whose done result a user moved aside
    foreign = []
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return ItemClaims()
    for name in names:
        if name.startswith("."):
            continue  # temporary files of atomic writes, placeholders
        m = RECORD_RE.match(name)
        if m:
            gen, worker, kind = int(m["gen"]), m["worker"], m["kind"]
            if kind == "claim":
                claims.setdefault(gen, []).append(worker)
            else:
                ended[(gen, worker)] = kind
                if kind == "failed":
                    data, _ = read_json(folder / name)
                    error = str(data.get("error", "unknown error")) if isinstance(data, dict) else "unknown error"
                    failures.append((gen, worker, error))
                    if isinstance(data, dict) and data.get("final") is True:
                        finals.append(gen)
            continue
        r = RETRY_RE.match(name)
        if r:
            retry_gen = max(retry_gen, int(r["gen"]))
            data, _ = read_json(folder / name)
            if isinstance(data, dict) and data.get("rerun") is True:
                reruns.add(int(r["gen"]))
            continue
        foreign.append(name)
    out = ItemClaims(foreign=foreign)
    if claims:
        top = max(claims)
        out.generation = top
        out.holder = min(claims[top])
        out.ended = ended.get((top, out.holder)) or ("rerun" if top in reruns else None)
    out.failures = sorted(f for f in failures if f[0] > retry_gen)
    out.final = any(gen > retry_gen for gen in finals)
    return out


def _record(paths: RootPaths, item_id: str, generation: int, worker: str, kind: str, data: dict) -> None:
    folder = item_folder(paths, item_id)
    make_folder(folder, paths.root)
    write_json(folder / f"g{generation:05d}.{worker}.{kind}.json",
               {"item": item_id, "generation": generation, "worker": worker, "wall_time": time.time(), **data})


@dataclass
class Lease:
    """This worker's hold on one item at one generation."""

    paths: RootPaths
    item_id: str
    generation: int
    worker: str

    def check(self, kind: str = "commit") -> None:
        """The fence: raise :class:`LeaseLost` if a peer holds a newer generation or won this one."""
        now = read_claims(self.paths, self.item_id)
        if now.holder is None and now.generation == 0:
            os.stat(self.paths.claims)  # not even this worker's claim: the folder itself gone (unmounted) raises here
        if now.generation > self.generation or now.holder != self.worker:
            raise LeaseLost(
                f"{self.item_id}: lease lost before {kind} (generation {self.generation} by {self.worker}; "
                f"now generation {now.generation} by {now.holder})"
            )

    def fail(self, error: str, final: bool = False) -> None:
        """Record this attempt as failed; ``final``: no attempt can succeed, the item fails now, its other attempts unused."""
        _record(self.paths, self.item_id, self.generation, self.worker, "failed", {"error": error, "final": final})

    def release(self) -> None:
        _record(self.paths, self.item_id, self.generation, self.worker, "released", {})


def try_claim(
    paths: RootPaths,
    item_id: str,
    seen_generation: int,
    worker: str,
    settle_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Lease | None:
    """Claim generation ``seen_generation + 1``; None when a peer got there first.

    Under an enforced lock (local disk, SMB) the claim is decided under the lock
    and ``settle_s`` may be 0.  Where the lock is missing or does not exclude
    other machines (sync folders), the claim is written, then after
    ``settle_s`` the records are read again and the lowest worker name among
    the claims of that generation wins.
    """
    gen = seen_generation + 1
    with QueueLock(paths.lock_file) as lock:
        if read_claims(paths, item_id).generation != seen_generation:
            return None  # somebody moved first
        _record(paths, item_id, gen, worker, "claim", {})
        locked = lock.acquired
    wait = settle_s if locked else max(settle_s, 1.0)
    if wait > 0:
        sleep(wait)
    now = read_claims(paths, item_id)
    if now.generation != gen or now.holder != worker:
        log.info("%s: stepped aside at generation %d (holder %s, top generation %d)", item_id, gen, now.holder, now.generation)
        return None
    return Lease(paths, item_id, gen, worker)


def write_retry(paths: RootPaths, item_id: str, worker: str, rerun: bool = False) -> None:
    """Forget the failures of an item so far: it becomes pending again.

    ``rerun``: the item was done and its result has been moved aside; its
    last holder has left it, so it is pending at once (an older fedspec sees
    a holder that moved on, and takes the item over after its grace).
    """
    claims = read_claims(paths, item_id)
    rerun = rerun or claims.ended == "rerun"  # a retry after a rerun, before a claim: the same file, the flag kept
    folder = item_folder(paths, item_id)
    make_folder(folder, paths.root)
    write_json(folder / f"retry.g{claims.generation:05d}.{worker}.json",
               {"item": item_id, "after_generation": claims.generation, "worker": worker, "wall_time": time.time(),
                **({"rerun": True} if rerun else {})})
