"""Classify every item of a root from its files (jug's ``update_status``); printing lives in the CLI.

Status is derived, never stored: done = a result CSV, failed = attempts used
up (or one failure that no attempt can mend), running = a live holder, pending = anything else.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from fedspec.checkpoint_file import read_header
from fedspec.errors import CheckpointError
from fedspec.queue.claims import ItemClaims, items_with_records, read_claims
from fedspec.queue.heartbeat import LeaseObserver, read_heartbeats
from fedspec.queue.store import QUEUE_FILE, RootPaths, conflicted_copies, placeholders
from fedspec.queue.workqueue import QueueItem, added_by_other_fedspec, load_queue, not_taken_here, other_settings

STATES = ("pending", "running", "done", "failed")
DEFAULT_TTL = 300.0  # for a heartbeat that does not say its lease TTL


@dataclass
class ItemStatus:
    id: str
    state: str
    round: int
    rounds: int
    holder: str | None
    attempts: int
    error: str | None
    generation: int
    accuracy: float | None = None
    heartbeat_age: float | None = None
    stale: bool = False
    task: str | None = None
    moved_on: bool = False  # running, but its holder's heartbeat says it stopped or works on another item


@dataclass
class WorkerStatus:
    name: str
    host: str | None
    device: str | None
    item: str | None
    round: int | None
    sec_per_round: float | None
    heartbeat_age: float | None
    state: str | None
    unavailable: dict[str, str] = field(default_factory=dict)  # task -> why this worker cannot load it
    lease_ttl: float | None = None
    round_progress: float | None = None  # share of the round in flight trained so far (at its last heartbeat)
    sec_per_round_estimate: float | None = None  # from the pace of the round in flight, until a round is done
    other_fedspec: str | None = None  # why it leaves items that another fedspec added to other machines
    fedspec: str | None = None  # its fedspec version (None: a heartbeat of a fedspec that did not say)
    threads: int | None = None  # its torch CPU threads
    cpus: int | None = None  # the CPUs its machine lets it use

    @property
    def live(self) -> bool:
        """Working or polling for work, with a heartbeat younger than its lease TTL (a killed worker's says running)."""
        ttl = DEFAULT_TTL if self.lease_ttl is None else self.lease_ttl
        return self.state in ("idle", "running") and self.heartbeat_age is not None and self.heartbeat_age <= ttl


@dataclass
class StatusReport:
    counts: dict[str, int]
    items: list[ItemStatus]
    workers: list[WorkerStatus]
    warnings: list[str] = field(default_factory=list)
    eta_seconds: float | None = None

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self.workers if w.live)

    @property
    def able_workers(self) -> int:
        """Live workers that run an unfinished item or can load the task of one (the ETA counts these)."""
        return len(_able(self.workers, [i for i in self.items if i.state in ("pending", "running")]))

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "items": [asdict(i) for i in self.items],
            "workers": [asdict(w) for w in self.workers],
            "warnings": self.warnings,
            "eta_seconds": self.eta_seconds,
            "live_workers": self.live_workers,
            "able_workers": self.able_workers,
        }


def _header(paths: RootPaths, item_id: str) -> dict[str, Any] | None:
    """The item's checkpoint header (without torch); None if there is none or it cannot be read."""
    try:
        return read_header(paths.checkpoint_folder(item_id))
    except CheckpointError:  # torn, foreign or not downloaded: the worker that loads it reports why
        return None


def _progress(meta: dict[str, Any] | None) -> tuple[int, float | None, list[float]]:
    """(rounds committed, latest accuracy, round seconds) from a checkpoint's header."""
    if meta is None:
        return 0, None, []
    rows = meta["rows"]
    acc = rows[-1].get("test_accuracy") if rows and isinstance(rows[-1], dict) else None
    secs = [float(r["round_seconds"]) for r in rows if isinstance(r, dict) and isinstance(r.get("round_seconds"), (int, float))]
    rnd = meta.get("round")
    return (rnd if isinstance(rnd, int) else 0), (float(acc) if isinstance(acc, (int, float)) else None), secs


def classify(
    paths: RootPaths,
    items: list[QueueItem],
    observer: LeaseObserver | None = None,
    worker: str | None = None,
    now: float | None = None,
    with_progress: bool = True,
    grace: float = 0.0,
    scan_placeholders: bool = True,
) -> StatusReport:
    """Derive the state of every item.

    Parameters
    ----------
    observer
        Decides staleness of holders from heartbeat counters on this process's
        clock.  Without one (``fedspec status``) a holder counts as stale when
        its heartbeat file is older than its lease TTL, as a display hint only.
    worker
        The asking worker: its own leftover claims (from before a crash or a
        restart under the same name) count as stale at once.
    grace
        A holder whose heartbeat says it has moved on (another item, or
        stopped) without a record for this item counts as stale only after
        that has been seen for ``grace`` seconds: on a sync folder the
        heartbeat may arrive before the result that explains it.
    scan_placeholders
        Walk the whole root for iCloud placeholders (every folder of every
        item: ~10 ms for 400 items on a 2-core machine).  A worker scans
        before every claim and walks only now and then.
    """
    now = time.time() if now is None else now
    beats = read_heartbeats(paths)
    if observer is not None:
        observer.observe(beats)
    ages: dict[str, float] = {}
    for name in beats:
        try:
            ages[name] = max(0.0, now - (paths.heartbeats / f"{name}.json").stat().st_mtime)
        except OSError:
            pass
    result_files = {p.stem for p in paths.results.glob("*.csv")} if paths.results.exists() else set()
    with_records = items_with_records(paths)
    statuses: list[ItemStatus] = []
    warnings: list[str] = []
    all_secs: list[float] = []
    for item in items:
        if item.id in result_files and not with_progress:
            # A worker (no progress wanted) skips the claims of finished items: with hundreds of
            # items the scan that precedes every claim would otherwise list every item's folder.
            statuses.append(ItemStatus(item.id, "done", item.rounds, item.rounds, None, 0, None, 0, task=item.spec.get("task")))
            continue
        claims = read_claims(paths, item.id) if item.id in with_records else ItemClaims()
        if claims.foreign:
            warnings.append(f"{item.id}: foreign file(s) in its claims folder ignored: {', '.join(claims.foreign[:3])}")
        header = _header(paths, item.id) if with_progress else None
        rnd, acc, secs = _progress(header)
        all_secs.extend(secs)
        st = ItemStatus(item.id, "pending", rnd, item.rounds, claims.holder, claims.attempts, claims.last_error,
                        claims.generation, acc, task=item.spec.get("task"))
        if item.id in result_files:
            st.state, st.round = "done", item.rounds
            changes = _other_settings(header, item)
            if changes:  # a `fedspec run` of its name before fedspec refused that: its CSV counts as this item's
                warnings.append(f"{item.id}: done by a run of other settings ({changes}); move {paths.result_csv(item.id)} "
                                f"and {paths.checkpoint_folder(item.id)} away, and a worker runs it with the queue's")
        elif claims.holder is not None and claims.ended is None:
            beat = beats.get(claims.holder, {})
            st.heartbeat_age = ages.get(claims.holder)
            moved_on = beat.get("item") not in (None, item.id) or beat.get("state") == "stopped"
            if observer is not None:
                # Moved on without a record: killed between claim and start, or its result is still in flight.
                waited = observer.held_for(f"moved-on:{item.id}:{claims.generation}", moved_on)
                st.stale = (claims.holder == worker or observer.is_stale(claims.holder)
                            or (moved_on and waited >= grace))
            elif moved_on:  # `fedspec status`: a worker acts on these leases itself and says so; a reader is told here
                st.stale = True
                doing = "stopped" if beat.get("state") == "stopped" else f"works on {beat.get('item')}"
                warnings.append(f"{item.id}: its holder {claims.holder} has moved on ({doing}) with no result or record "
                                "for it (its CSV deleted, or one still syncing); a worker takes it over")
            else:
                ttl = float(beat.get("lease_ttl", DEFAULT_TTL))
                st.stale = st.heartbeat_age is None or st.heartbeat_age > ttl
                if st.stale:
                    warnings.append(f"{item.id}: lease of {claims.holder} looks stale (heartbeat silent); a worker will reclaim it")
            st.state, st.moved_on = "running", moved_on
        elif claims.attempts >= item.max_attempts or claims.final:
            st.state = "failed"
        statuses.append(st)
    counts = {s: sum(1 for i in statuses if i.state == s) for s in STATES}
    workers = [
        # A heartbeat is another machine's file: a field of the wrong type (an older fedspec, a hand edit) reads as missing.
        WorkerStatus(name, _text(b.get("host")), _text(b.get("device")), _text(b.get("item")),
                     b.get("round") if isinstance(b.get("round"), int) and not isinstance(b.get("round"), bool) else None,
                     _number(b.get("sec_per_round")), ages.get(name), _text(b.get("state")),
                     {str(k): str(v) for k, v in b["unavailable"].items()} if isinstance(b.get("unavailable"), dict) else {},
                     _number(b.get("lease_ttl")), _number(b.get("round_progress")), _number(b.get("sec_per_round_estimate")),
                     _other_fedspec(b.get("other_fedspec")), _text(b.get("fedspec")), _count(b.get("threads")), _count(b.get("cpus")))
        for name, b in sorted(beats.items())
    ]
    if with_progress:  # for `fedspec status`; a worker has said so itself
        warnings += _worker_warnings(workers, statuses) + crowded_hosts(workers)
        unfinished = {i.id for i in statuses if i.state in ("pending", "running")}
        found = not_taken_here(item for item in items if item.id in unfinished)
        if found:
            warnings.append(f"{added_by_other_fedspec(found)}; only machines that run that fedspec can run them "
                            "(update fedspec here)")
    for copy in conflicted_copies(paths.work, QUEUE_FILE):
        warnings.append(f"conflicted copy of the queue: {copy.name} (a worker merges it)")
    for ph in placeholders(paths.root) if scan_placeholders else []:
        warnings.append(f"iCloud placeholder not downloaded: {ph.relative_to(paths.root)}")
    return StatusReport(counts, statuses, workers, warnings, _eta(statuses, workers, all_secs) if with_progress else None)


def _worker_warnings(workers: list[WorkerStatus], items: list[ItemStatus]) -> list[str]:
    """What the heartbeats say holds pending items back (a task a worker cannot load, another fedspec's settings), and
    live workers of different fedspec versions: the CSV of an item resumed on another version may differ."""
    waiting = {i.task for i in items if i.state == "pending"}
    lines = []
    for w in workers:
        lines += [f"{w.name} cannot load {task}, so its pending items wait for another machine ({reason})"
                  for task, reason in w.unavailable.items() if task in waiting]
        if w.other_fedspec and w.live and waiting:
            lines.append(f"{w.name} {w.other_fedspec}")
    versions: dict[str, list[str]] = {}
    for w in workers:
        if w.live and w.fedspec:
            versions.setdefault(w.fedspec, []).append(w.name)
    if len(versions) > 1:
        on = "; ".join(f"{version} on {', '.join(names)}" for version, names in sorted(versions.items()))
        lines.append(f"the live workers run different fedspec versions ({on}): an item resumed on another version "
                     "may give another CSV than an uninterrupted run; update them to one version")
    return lines


def _other_settings(header: dict[str, Any] | None, item: QueueItem) -> str | None:
    if header is None:
        return None
    try:
        return other_settings(header, item)
    except ValidationError:  # a hand-edited spec: the worker that runs it says what is wrong
        return None


def _other_fedspec(value: Any) -> str | None:
    """A heartbeat's ``other_fedspec`` in words: ``(fedspec 0.1.0) leaves 3 item(s) …``; None where it has none."""
    if not isinstance(value, dict) or not isinstance(value.get("items"), int):
        return None
    return (f"(fedspec {_text(value.get('fedspec')) or '?'}) leaves {value['items']} item(s) added by another fedspec to "
            f"other machines, as it does not take their settings ({_text(value.get('why')) or '?'})")


def crowded_hosts(workers: list[WorkerStatus], me: str | None = None) -> list[str]:
    """A line for each machine (or only worker ``me``'s) whose CPU workers train with more torch threads than it has CPUs,
    one worker with too high a --threads or several at their default.

    Two workers at torch's default (a thread per core) on a 2-core machine
    took 2 to 6 times as long for a grid as one worker alone: their threads
    wait for each other's cores.  Counted: the live workers running an item,
    and ``me``, about to claim one (an idle worker polling with --wait does
    not compete).
    """
    mine = next((w for w in workers if w.name == me), None)
    if me is not None and mine is None:
        return []
    on: dict[str, list[WorkerStatus]] = {}
    for w in workers:
        if (w.live and (w.state == "running" or w is mine) and w.device == "cpu" and w.host and w.threads and w.cpus
                and (mine is None or w.host == mine.host)):
            on.setdefault(w.host, []).append(w)
    lines = []
    for host, crowd in sorted(on.items()):
        cpus = max(w.cpus for w in crowd)
        if sum(w.threads for w in crowd) <= cpus:
            continue
        if len(crowd) == 1:  # --threads above the CPUs: a 1-round digits item took 210 s at 5000 threads on 2 CPUs
            lines.append(f"worker {crowd[0].name} on {host}: {crowd[0].threads} torch threads on its {cpus} CPUs slow it "
                         f"down several times over; restart it with --threads {cpus} or less")
        else:
            lines.append(f"workers {', '.join(w.name for w in crowd)} share {host}: {' + '.join(str(w.threads) for w in crowd)} "
                         f"torch threads on its {cpus} CPUs slow each of them down several times over; restart them "
                         f"with --threads {max(1, cpus // len(crowd))} (CPUs / workers)")
    return lines


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _able(workers: list[WorkerStatus], unfinished: list[ItemStatus]) -> list[WorkerStatus]:
    """The live workers that run an unfinished item, or can load the task of one."""
    ids, tasks = {i.id for i in unfinished}, {i.task for i in unfinished}
    return [w for w in workers if w.live and (w.item in ids or not tasks <= w.unavailable.keys())]


def _eta(items: list[ItemStatus], workers: list[WorkerStatus], secs: list[float]) -> float | None:
    """Seconds until every unfinished item is done: the rounds left over the live workers' speeds.

    Each live worker counts at its own last seconds per round (an M2 and a
    GTX laptop differ); before it has finished a round, at the pace of the
    round in flight (training only: evaluation comes after), or else at the
    mean over the rounds so far; no more workers count than items are left.
    The share of the rounds in flight already trained is taken off.  A live
    worker that cannot load the task of any item left (no text extra, no
    network) does not count: its speed on another task's items made the ETA
    of an SST-2 grid seconds.  None when no live worker is left to do the
    work (their heartbeats say stopped, or went silent), or a live worker's
    speed is not known yet.
    """
    unfinished = [i for i in items if i.state in ("pending", "running")]
    ids = {i.id for i in unfinished}
    in_flight = sum(w.round_progress or 0.0 for w in workers if w.live and w.item in ids)
    remaining = max(0.0, sum(max(0, i.rounds - i.round) for i in unfinished) - in_flight)
    if remaining == 0:
        return 0.0
    mean = sum(secs) / len(secs) if secs else None
    per_round = [w.sec_per_round or w.sec_per_round_estimate or mean for w in _able(workers, unfinished)]
    if not per_round or None in per_round:
        return None
    fastest = sorted(max(s, 1e-3) for s in per_round)[: len(unfinished)]
    return remaining / sum(1 / s for s in fastest)


def collect(paths: RootPaths) -> StatusReport:
    """``fedspec status``: load the queue and classify it."""
    return classify(paths, load_queue(paths))
