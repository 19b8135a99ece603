"""Worker heartbeats and lease staleness measured on the observer's own clock.

Each worker owns ``distributed_work/heartbeats/<worker>.json`` and rewrites it
every ``interval`` seconds with an increasing ``counter``.  A peer calls the
lease stale when the counter it reads has not changed for ``ttl`` seconds of
*its own* monotonic clock: two machines' wall clocks are never compared, and
a SIGSTOPped or sleeping laptop stops its counter with everything else.

Each process also writes a random ``instance``: a file that holds another
instance's beats with two different counters between this worker's beats
means a live namesake on another machine (see :class:`Heartbeat`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from typing import Any, Callable

from fedspec import __version__
from fedspec.atomic import make_folder, write_json
from fedspec.queue.store import RootPaths, read_json

log = logging.getLogger(__name__)


class Heartbeat:
    """Background thread that publishes this worker's counter and what it is doing.

    Before each beat it reads its file back.  Another instance's beat there
    is a crashed predecessor's, or one a sync client delivers late, when seen
    with one counter; seen with two, that instance is alive: ``namesake``
    then says so, and this heartbeat stops writing (the file is left to it).
    """

    def __init__(self, paths: RootPaths, worker: str, interval: float, info: dict[str, Any] | None = None) -> None:
        self.paths, self.worker, self.interval = paths, worker, interval
        self.counter = 0
        self.instance = secrets.token_hex(8)
        self.fields: dict[str, Any] = {"worker": worker, "host": socket.gethostname(), "pid": os.getpid(),
                                       "fedspec": __version__, "started": time.time(), "state": "idle",
                                       "instance": self.instance, **(info or {})}
        self.namesake: str | None = None  # set once another live worker is seen writing this file
        self._others: dict[str, Any] = {}  # instance -> the counter first seen from it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._failing = False  # the last write failed
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{worker}", daemon=True)

    @property
    def path(self):
        return self.paths.heartbeats / f"{self.worker}.json"

    def update(self, **fields: Any) -> None:
        """Change what the next beat says (item, generation, round, ...); beats at once."""
        self.note(**fields)
        self.beat()

    def note(self, **fields: Any) -> None:
        """Change what the next periodic beat says without writing now (values that change every step)."""
        with self._lock:
            self.fields.update(fields)

    def beat(self) -> None:
        with self._lock:
            if self.namesake is not None or self._namesake_seen():
                return
            self.counter += 1
            data = {**self.fields, "counter": self.counter, "wall_time": time.time()}
        try:
            make_folder(self.paths.heartbeats, self.paths.root)
            write_json(self.path, data)
        except OSError as err:  # a full disk or a flaky share must not kill training
            if not self._failing:  # said once per outage, not every beat of a night-long one
                log.warning("heartbeat not written: %s", err)
            self._failing = True
            return
        if self._failing:
            self._failing = False
            log.info("heartbeat written again")

    def _namesake_seen(self) -> bool:
        data, problem = read_json(self.path)
        other = data.get("instance") if problem is None and isinstance(data, dict) else None
        if other is None or other == self.instance:
            return False
        first = self._others.setdefault(other, data.get("counter"))
        if first == data.get("counter"):
            return False
        self.namesake = (f"another worker named {self.worker!r} is running in this root (on {data.get('host')}, "
                         f"pid {data.get('pid')}); each would take the other's items over as its own: give each "
                         "worker its own --name, or leave --name out (the default is unique per machine)")
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def start(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def stop(self, final_state: str = "stopped") -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)
        self.update(state=final_state, item=None, generation=None, round=None)


def read_heartbeats(paths: RootPaths) -> dict[str, dict[str, Any]]:
    """Every worker's last heartbeat that parses (torn or foreign files are skipped)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        files = list(paths.heartbeats.glob("*.json"))
    except OSError:
        return out
    for f in files:
        if f.name.startswith("."):
            continue
        data, problem = read_json(f)
        if problem is None and isinstance(data, dict) and data.get("worker") == f.stem:
            out[f.stem] = data
    return out


class LeaseObserver:
    """Remembers when each worker's counter last changed, on this process's monotonic clock."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self._seen: dict[str, tuple[Any, float]] = {}
        self._since: dict[str, float] = {}

    def observe(self, beats: dict[str, dict[str, Any]]) -> None:
        now = self.clock()
        for worker in set(beats) | set(self._seen):
            counter = beats.get(worker, {}).get("counter")
            last = self._seen.get(worker)
            if last is None or last[0] != counter:
                self._seen[worker] = (counter, now)

    def silent_for(self, worker: str) -> float:
        """Seconds since this observer saw ``worker``'s counter change (0 when first seen now)."""
        now = self.clock()
        if worker not in self._seen:
            self._seen[worker] = (None, now)
        return now - self._seen[worker][1]

    def is_stale(self, worker: str) -> bool:
        return self.silent_for(worker) >= self.ttl

    def held_for(self, key: str, condition: bool) -> float:
        """Seconds ``condition`` has been true at every call for ``key`` (0 on the first call or when false)."""
        now = self.clock()
        if not condition:
            self._since.pop(key, None)
            return 0.0
        return now - self._since.setdefault(key, now)
