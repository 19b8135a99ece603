"""A sync-folder simulator: replica folders kept in step the way Dropbox or iCloud Drive do it.

Each replica is scanned every ``tick`` seconds.  A changed or deleted file
becomes one event per other replica, delivered after a random delay
(0…``max_delay`` s): late and out of order.  Versions carry their history,
so an older version arriving after a newer one is dropped, and a version made
concurrently with the target's own change does not overwrite it: it is
written as a *conflicted copy* with Dropbox naming
(``name (replica1's conflicted copy 2026-01-02).json``) or iCloud naming
(``name 2.json``).  Optionally a file is now and then replaced by an iCloud
placeholder (``.name.icloud``) for a while.

Hidden names (atomic-write temporaries, placeholders) and ``*.lock`` files are
not synced: iCloud skips such temporaries too, and a lock file only ever locks
the local inode.

As a process: ``python -m fedspec.testing.syncsim --max-delay 2 A B`` (SIGTERM stops it
and prints its counters).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import itertools
import json
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(order=True)
class Event:
    due: float
    order: int
    target: int = field(compare=False)
    origin: int = field(compare=False)
    path: str = field(compare=False)
    content: bytes | None = field(compare=False)  # None: deleted
    seq: int = field(compare=False)
    lineage: frozenset = field(compare=False)


@dataclass
class Version:
    digest: str | None
    seq: int
    lineage: frozenset


def _digest(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.sync")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SyncSim:
    """Keeps ``replicas`` in step with delays, reordering and conflicted copies."""

    def __init__(self, replicas: list[Path], max_delay: float, seed: int = 0, naming: str = "dropbox",
                 placeholder_rate: float = 0.0, placeholder_s: float = 2.0) -> None:
        self.replicas = [Path(r) for r in replicas]
        self.max_delay, self.naming = max_delay, naming
        self.rng = random.Random(seed)
        self.placeholder_rate, self.placeholder_s = placeholder_rate, placeholder_s
        self.known: list[dict[str, Version]] = [{} for _ in self.replicas]
        self.queue: list[Event] = []
        self.order = itertools.count()
        self.seqs = itertools.count(1)
        self.evicted: list[tuple[float, Path, bytes]] = []
        self.stats = {"changes": 0, "applied": 0, "stale": 0, "conflicts": 0, "placeholders": 0}

    @staticmethod
    def synced(rel: str) -> bool:
        return not any(p.startswith(".") for p in rel.split("/")) and not rel.endswith(".lock")

    def _scan(self, k: int) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        root = self.replicas[k]
        for path in root.rglob("*"):
            rel = path.relative_to(root).as_posix()
            if self.synced(rel) and path.is_file():
                data = _read(path)
                if data is not None:
                    out[rel] = data
        return out

    def step(self, now: float | None = None) -> None:
        """Scan every replica for local changes, deliver due events, restore evicted files."""
        now = time.monotonic() if now is None else now
        for k in range(len(self.replicas)):
            files = self._scan(k)
            known = self.known[k]
            for rel in set(files) | {r for r, v in known.items() if v.digest is not None}:
                data = files.get(rel)
                old = known.get(rel, Version(None, 0, frozenset()))
                if _digest(data) == old.digest:
                    continue
                seq = next(self.seqs)
                known[rel] = Version(_digest(data), seq, old.lineage | {seq})
                self.stats["changes"] += 1
                for target in range(len(self.replicas)):
                    if target != k:
                        due = now + self.rng.uniform(0, self.max_delay)
                        heapq.heappush(self.queue, Event(due, next(self.order), target, k, rel, data, seq, known[rel].lineage))
        while self.queue and self.queue[0].due <= now:
            self._deliver(heapq.heappop(self.queue))
        self._placeholders(now)

    def _deliver(self, ev: Event) -> None:
        known = self.known[ev.target]
        path = self.replicas[ev.target] / ev.path
        mine = known.get(ev.path, Version(None, 0, frozenset()))
        if ev.seq in mine.lineage:
            self.stats["stale"] += 1  # older than (or equal to) what is there
            return
        on_disk = _digest(_read(path))
        unscanned_local_change = on_disk != mine.digest and not (mine.digest is None and on_disk is None)
        if (mine.seq == 0 or mine.seq in ev.lineage) and not unscanned_local_change:
            if ev.content is None:
                path.unlink(missing_ok=True)
            else:
                _write(path, ev.content)
            known[ev.path] = Version(_digest(ev.content), ev.seq, ev.lineage)
            self.stats["applied"] += 1
            return
        # Concurrent change: keep the local file, add the incoming one beside it.
        known[ev.path] = Version(mine.digest, mine.seq, mine.lineage | ev.lineage)
        if ev.content is not None and _digest(ev.content) != on_disk:
            copy = self._conflict_name(path, ev.origin, ev.target)
            _write(copy, ev.content)
            self.stats["conflicts"] += 1

    def _conflict_name(self, path: Path, origin: int, target: int) -> Path:
        icloud = self.naming == "icloud" or (self.naming == "mixed" and target % 2 == 1)
        if icloud:
            for n in itertools.count(2):
                candidate = path.with_name(f"{path.stem} {n}{path.suffix}")
                if not candidate.exists():
                    return candidate
        return path.with_name(f"{path.stem} (replica{origin}'s conflicted copy {time.strftime('%Y-%m-%d')}){path.suffix}")

    def _placeholders(self, now: float) -> None:
        for due, path, data in [e for e in self.evicted if e[0] <= now]:
            self.evicted.remove((due, path, data))
            path.with_name(f".{path.name}.icloud").unlink(missing_ok=True)
            if not path.exists():
                _write(path, data)
        if self.placeholder_rate <= 0 or self.rng.random() >= self.placeholder_rate:
            return
        k = self.rng.randrange(len(self.replicas))
        candidates = [p for p in self.replicas[k].rglob("*.json") if self.synced(p.relative_to(self.replicas[k]).as_posix())]
        if not candidates:
            return
        path = self.rng.choice(sorted(candidates))
        data = _read(path)
        if data is None:
            return
        # iCloud evicts the content and leaves a hidden stub; the syncer must not see that as a delete.
        path.with_name(f".{path.name}.icloud").write_bytes(b"bplist00")
        path.unlink(missing_ok=True)
        rel = path.relative_to(self.replicas[k]).as_posix()
        self.known[k][rel] = Version(None, self.known[k].get(rel, Version(None, 0, frozenset())).seq,
                                     self.known[k].get(rel, Version(None, 0, frozenset())).lineage)
        self.evicted.append((now + self.placeholder_s, path, data))
        self.stats["placeholders"] += 1

    def pending(self) -> int:
        return len(self.queue)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("replicas", nargs="+", type=Path)
    parser.add_argument("--max-delay", type=float, default=2.0)
    parser.add_argument("--tick", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--naming", choices=["dropbox", "icloud", "mixed"], default="dropbox")
    parser.add_argument("--placeholder-rate", type=float, default=0.0, help="chance per tick to evict a file")
    parser.add_argument("--stats", type=Path, help="write the counters here as JSON when stopped")
    args = parser.parse_args(argv)
    sim = SyncSim(args.replicas, args.max_delay, args.seed, args.naming, args.placeholder_rate)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda s, f: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda s, f: stop.update(now=True))
    while not stop["now"]:
        sim.step()
        time.sleep(args.tick)
    # Drain: deliver what is in flight so the replicas converge.
    end = time.monotonic() + args.max_delay + 1
    while time.monotonic() < end:
        sim.step()
        time.sleep(args.tick)
    text = json.dumps(sim.stats)
    if args.stats:
        args.stats.write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
