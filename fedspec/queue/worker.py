"""The worker loop: claim an item, run the injected job with the fence, repeat.

The job is any callable ``job(item, guard, progress, on_step)``; the CLI
passes one that trains with :func:`fedspec.fl.loop.run_experiment`.
``guard(kind)`` is the fence (called before every checkpoint and result
commit) and ``progress(row)`` is called after each committed round, which is
also where a requested stop (Ctrl-C, SIGTERM) takes effect: at a safe point.
``on_step(round, done, total)`` reports how far the round in flight is
(examples trained of the round's examples); it goes into the next heartbeat.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
import traceback
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from fedspec import __version__
from fedspec.errors import (ConfigError, FedspecError, FolderUnreachable, LeaseLost, NameInUse, NotSyncedYet, QueueError,
                            RootError, StorageError, TaskError, describe_os_error, folder_failure)
from fedspec.queue.claims import Lease, try_claim
from fedspec.queue.heartbeat import Heartbeat, LeaseObserver
from fedspec.queue.status import StatusReport, classify, crowded_hosts
from fedspec.queue.store import RootPaths
from fedspec.queue.workqueue import QueueItem, added_by_other_fedspec, load_queue, merge_conflicted_copies, not_taken_here

log = logging.getLogger(__name__)

Job = Callable[[QueueItem, Callable[[str], None], Callable[[dict[str, Any]], None], Callable[[int, int, int], None]], Any]


def claim_order(statuses: list, name: str) -> list:
    """Items in queue order, rotated by a stable per-worker offset.

    Workers that scan at the same moment then go for different items instead
    of all colliding on the first pending one.
    """
    if not statuses:
        return statuses
    offset = zlib.crc32(name.encode()) % len(statuses)
    return statuses[offset:] + statuses[:offset]


LEFT_TO_OTHERS = "left to other machines"  # the outcome of an item whose task this machine cannot load
PLACEHOLDER_SCAN_S = 60.0  # how often a worker walks the root for iCloud placeholders (its warnings are said once anyway)


class StopRequested(Exception):
    """Raised at a safe point after Ctrl-C / SIGTERM."""


@dataclass
class WorkerSettings:
    lease_ttl: float = 600.0  # safe for sync folders: a sync can take minutes
    heartbeat: float = 30.0
    settle: float = 0.0
    poll: float = 10.0
    wait: bool = False
    max_items: int | None = None
    retry_unavailable: float = 600.0  # a task this machine could not load is tried again after this (a Wi-Fi drop passes)


@dataclass
class WorkerEvents:
    """Hooks for the CLI to show what happens (all optional)."""

    on_settle: Callable[[str, int, float], None] | None = None  # (item, generation, seconds): a claim written, not yet trusted
    on_claim: Callable[[QueueItem, Lease], None] | None = None
    on_round: Callable[[QueueItem, dict[str, Any]], None] | None = None
    on_step: Callable[[QueueItem, int, int, int], None] | None = None  # (item, round, examples trained, of the round's)
    on_item_end: Callable[[QueueItem, str, str | None], None] | None = None
    on_idle: Callable[[StatusReport], None] | None = None
    on_warning: Callable[[str], None] | None = None


class Worker:
    """One worker process on one root."""

    def __init__(self, paths: RootPaths, name: str, job: Job, settings: WorkerSettings,
                 events: WorkerEvents | None = None, info: dict[str, Any] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.paths, self.name, self.job, self.settings = paths, name, job, settings
        self.events = events or WorkerEvents()
        self.observer = LeaseObserver(settings.lease_ttl, clock)
        self.heartbeat = Heartbeat(paths, name, settings.heartbeat, {"lease_ttl": settings.lease_ttl, **(info or {})})
        self.stop_signal: int | None = None
        self.outcomes: Counter[str] = Counter()  # done, failed, released, … per item run
        self.final: StatusReport | None = None  # the queue as this worker last saw it, once nothing is left for it
        self._warned: set[str] = set()
        self._queue_errors = 0
        self._next_placeholder_scan = 0.0
        self._not_synced: dict[str, float] = {}  # item -> monotonic time before which it is skipped
        self.unavailable: dict[str, str] = {}  # task -> why this machine cannot load it: its items are left to peers
        self._unavailable_until: dict[str, float] = {}  # task -> monotonic time before which it is not tried again
        self._unreachable_since: float | None = None  # monotonic time the shared folder dropped (--wait waits for it)
        self.other_fedspec: dict[str, str] = {}  # item -> why this fedspec does not take the settings it was added with
        self._looked_at: set[str] = set()  # items whose settings _sort_out_other_fedspecs has looked at

    # -- signals -------------------------------------------------------------
    def request_stop(self, signum: int) -> None:
        if self.stop_signal is not None:
            raise KeyboardInterrupt  # second Ctrl-C: stop now (the last checkpoint is kept)
        self.stop_signal = signum
        log.warning("stop requested: handing the item back after the round in flight, or before the first if training "
                    "has not begun (again to stop now)")

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.signal(sig, lambda s, f: self.request_stop(s))
        return old

    # -- main loop -------------------------------------------------------------
    def run(self) -> int:
        """Work until nothing is claimable (or, with ``wait``, until all items end); returns the exit code."""
        old = self._install_signals()
        self.heartbeat.start()
        try:
            return self._loop()
        finally:
            self.heartbeat.stop("stopped")
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _warn(self, line: str) -> None:
        """Say ``line`` once per run."""
        if line not in self._warned:
            self._warned.add(line)
            self._tell(line)

    def _tell(self, line: str) -> None:
        """A warning for the user: through the CLI's hook where there is one (not twice, as a log line too)."""
        if self.events.on_warning:
            self.events.on_warning(line)
        else:
            log.warning(line)

    def _placeholder_scan_due(self) -> bool:
        """True at the first scan of the queue and then once a minute: walking the whole root before every claim cost more than the claim."""
        now = time.monotonic()
        if now < self._next_placeholder_scan:
            return False
        self._next_placeholder_scan = now + PLACEHOLDER_SCAN_S
        return True

    def _exit_code(self) -> int:
        return 130 if self.stop_signal == signal.SIGINT else 143

    def _loop(self) -> int:
        while True:
            if self.heartbeat.namesake is not None:
                raise NameInUse(self.heartbeat.namesake)
            if self.stop_signal is not None:
                return self._exit_code()
            if self.settings.max_items is not None and sum(self.outcomes.values()) >= self.settings.max_items:
                return 0
            try:
                ended = self._step()
            except FolderUnreachable as err:  # an item's, handed back
                if not self.settings.wait:
                    raise
                self._wait_for_folder(err)
                continue
            except OSError as err:  # the queue's own reads and claims, not an item's
                if not self._machine_error(err):
                    raise
                stop = self._storage_error(err)
                if not (self.settings.wait and isinstance(stop, FolderUnreachable)):
                    raise stop from err
                self._wait_for_folder(stop)
                continue
            if ended:
                return 0

    def _step(self) -> bool:
        """Read the queue, claim and run one item, or wait a poll; True when there is nothing more to do."""
        try:
            for line in merge_conflicted_copies(self.paths):
                self._warn(line)
            items = load_queue(self.paths)
        except (QueueError, RootError) as err:
            os.stat(self.paths.work)  # the folder itself gone (a share dropped or unmounted): an OSError, which _loop handles
            if isinstance(err, RootError):
                raise
            # A sync client may be rewriting or evicting the queue: wait for it, up to a limit.
            self._queue_errors += 1
            if self._queue_errors > 30:
                raise
            self._warn(f"{err} (retrying)")
            self._sleep(min(self.settings.poll, 2.0))
            return False
        self._queue_errors = 0
        if self._unreachable_since is not None:
            self._tell(f"the shared folder is reachable again (after {time.monotonic() - self._unreachable_since:.0f}s)")
            self._unreachable_since = None
        grace = max(self.settings.settle, 2 * self.settings.heartbeat)
        report = classify(self.paths, items, self.observer, self.name, with_progress=False, grace=grace,
                          scan_placeholders=self._placeholder_scan_due())
        for line in report.warnings + crowded_hosts(report.workers, self.name):  # on this machine
            self._warn(line)
        self._sort_out_other_fedspecs(items, report)
        if self._claim_and_run(items, report):
            return False
        pending_here = sum(1 for st in report.items if st.state == "pending" and self._may_run(st))
        # Held by a worker that has moved on: this worker takes them over once the grace has passed, --wait or not.
        orphans = [st for st in report.items if st.state == "running" and st.moved_on and self._may_run(st)]
        if not (self.settings.wait or orphans) or pending_here + report.counts["running"] == 0:
            self.final = report
            return True
        for st in orphans:
            self._warn(f"{st.id}: its holder {st.holder} has moved on with no result for it; taking it over after "
                       f"{grace:g}s (a sync folder may still be delivering that result)")
        if self.events.on_idle:
            self.events.on_idle(report)
        self._sleep(self.settings.poll)
        return False

    def _wait_for_folder(self, err: FolderUnreachable) -> None:
        """With --wait, a dropped share is waited for (a laptop's Wi-Fi comes back), polling; said once per outage."""
        if self._unreachable_since is None:
            self._unreachable_since = time.monotonic()
            fate = f"; {err.fate}" if err.fate else ""
            self._tell(f"{err.cause}{fate}; waiting for the shared folder (every {self.settings.poll:g}s, Ctrl-C to stop)")
        self._sleep(self.settings.poll)

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self.stop_signal is None and time.monotonic() < end:
            time.sleep(min(0.2, max(0.0, end - time.monotonic())))

    def _settle(self, item_id: str, generation: int, seconds: float) -> None:
        """The wait between writing a claim and trusting it, for peers' claims to sync (a minute on a sync folder)."""
        if self.events.on_settle:
            self.events.on_settle(item_id, generation, seconds)
        self._sleep(seconds)

    def _may_run(self, st) -> bool:
        """False for an item left to other machines: its task does not load here, or its settings are another fedspec's."""
        return st.task not in self.unavailable and st.id not in self.other_fedspec

    def _sort_out_other_fedspecs(self, items: list[QueueItem], report: StatusReport) -> None:
        """Leave to other machines the unfinished items that another fedspec added with settings this one does not take.

        Failing them here would fail a grid item by item on the one machine
        not updated yet.  Each item is looked at once; an item of this
        fedspec's own settings that does not validate (a hand-edited queue)
        still fails when it runs.
        """
        unfinished = {st.id for st in report.items if st.state in ("pending", "running")}
        fresh = [item for item in items if item.id in unfinished and item.id not in self._looked_at]
        self._looked_at.update(item.id for item in fresh)
        found = not_taken_here(fresh)
        if not found:
            return
        self.other_fedspec.update((item.id, problem) for item, problem in found)
        self._warn(f"{added_by_other_fedspec(found)}; left to machines that run it (update fedspec here to run them)")
        self.heartbeat.update(other_fedspec={"items": len(self.other_fedspec), "why": found[0][1], "fedspec": __version__})

    def _claim_and_run(self, items: list[QueueItem], report: StatusReport) -> bool:
        by_id = {i.id: i for i in items}
        for st in claim_order(report.items, self.name):
            claimable = st.state == "pending" or (st.state == "running" and st.stale)
            now = time.monotonic()
            if (not claimable or st.id in self.other_fedspec or self._unavailable_until.get(st.task, 0.0) > now
                    or self._not_synced.get(st.id, 0.0) > now):
                continue
            if st.state == "running" and st.holder == self.name:
                log.info("%s: taking it up again (this worker could not hand it back)", st.id)
            elif st.state == "running" and st.moved_on:
                log.info("%s: taking it over from %s, which has moved on", st.id, st.holder)
            elif st.state == "running":
                log.warning("%s: reclaiming from %s (heartbeat silent for the lease TTL)", st.id, st.holder)
            lease = try_claim(self.paths, st.id, st.generation, self.name, self.settings.settle,
                              functools.partial(self._settle, st.id, st.generation + 1))
            if lease is None:
                continue
            self._run_item(by_id[st.id], lease)
            return True
        return False

    def _run_item(self, item: QueueItem, lease: Lease) -> None:
        task = item.spec.get("task")
        self.heartbeat.update(state="running", item=item.id, generation=lease.generation, round=None,
                              round_progress=None, rounds=item.rounds)
        if self.events.on_claim:
            self.events.on_claim(item, lease)
        started = time.monotonic()
        rounds_done = 0
        first_step: dict[str, Any] = {}  # round, monotonic time and examples at the first step of the round in flight

        def progress(row: dict[str, Any]) -> None:
            nonlocal rounds_done
            rounds_done += 1
            per_round = (time.monotonic() - started) / rounds_done
            self.heartbeat.update(round=row.get("round"), round_progress=None, sec_per_round=round(per_round, 3),
                                  sec_per_round_estimate=None,
                                  device=row.get("device"), accuracy=row.get("test_accuracy"))
            if self.events.on_round:
                self.events.on_round(item, row)
            if self.stop_signal is not None or self.heartbeat.namesake is not None:
                raise StopRequested

        def within_round(rnd: int, done: int, total: int) -> None:
            now = time.monotonic()
            if first_step.get("round") != rnd:
                first_step.update(round=rnd, t=now, done=done)
            t0, done0 = first_step["t"], first_step["done"]
            # Before any round is done (a BERT round takes minutes), the round's pace so far says how long one takes.
            estimate = (now - t0) * total / (done - done0) if done > done0 and total > 0 else None
            self.heartbeat.note(round_progress=round(done / total, 3) if total > 0 else None,
                                sec_per_round_estimate=None if estimate is None else round(estimate, 3))
            if self.events.on_step:
                self.events.on_step(item, rnd, done, total)

        outcome, error = "done", None
        stop: StorageError | None = None
        try:
            if self.job(item, lease.check, progress, within_round) == "duplicate":
                outcome = "duplicate"  # a peer's result was there first; ours was discarded
        except LeaseLost as err:
            outcome, error = "lease-lost", str(err)
            log.warning("%s", err)
        except NotSyncedYet as err:
            lease.release()  # not the item's fault: hand it back and look again later
            outcome, error = "waiting-for-sync", str(err)
            self._not_synced[item.id] = time.monotonic() + max(self.settings.poll, 2.0)
        except TaskError as err:
            lease.release()  # nor is a task this machine cannot load: other machines may
            outcome, error = LEFT_TO_OTHERS, str(err)
            self.unavailable[task] = error
            self._unavailable_until[task] = time.monotonic() + self.settings.retry_unavailable
            self.heartbeat.update(unavailable=dict(self.unavailable))
        except (StopRequested, KeyboardInterrupt):
            lease.release()
            outcome = "released"
            if self.stop_signal is None and self.heartbeat.namesake is None:
                self.stop_signal = signal.SIGINT
        except FedspecError as err:
            outcome, error = "failed", str(err)
            # Invalid settings of the item's own (a hand-edited spec) are the same on every attempt: it fails now.
            lease.fail(error, final=isinstance(err, ConfigError))
        except OSError as err:
            if not self._machine_error(err):
                outcome, error = self._crashed(item, lease, err)
            else:  # a full disk or a dropped share fails every item alike: hand this one back, then stop (or wait)
                error = describe_os_error(err)
                if self._release_if_possible(lease):
                    outcome, fate = "released", f"{item.id} was handed back (no attempt counted)"
                else:  # a peer takes it over once it sees this worker stopped; this worker, once the folder is back
                    outcome, fate = "interrupted", f"{item.id} could not be handed back yet (no attempt counted)"
                stop = self._storage_error(err, fate)
        except Exception as err:  # noqa: BLE001 - an item's crash is recorded, the worker goes on
            outcome, error = self._crashed(item, lease, err)
        finally:
            self.heartbeat.update(state="idle", item=None, generation=None, round=None, round_progress=None)
        if outcome == "done" and self.unavailable.pop(task, None) is not None:
            self.heartbeat.update(unavailable=dict(self.unavailable))  # it loads now: no longer left to others
        self.outcomes[outcome] += 1
        if self.events.on_item_end:
            self.events.on_item_end(item, outcome, error)
        if stop is not None:
            raise stop

    @staticmethod
    def _crashed(item: QueueItem, lease: Lease, err: Exception) -> tuple[str, str]:
        """An unexpected error in the item's run: a failed attempt, its traceback logged (call it where ``err`` is handled)."""
        error = f"{type(err).__name__}: {err}"
        log.error("%s failed:\n%s", item.id, traceback.format_exc())
        lease.fail(error)
        return "failed", error

    @staticmethod
    def _release_if_possible(lease: Lease) -> bool:
        try:
            lease.release()
            return True
        except OSError as err:  # the same full disk or share
            log.info("%s: could not hand the item back: %s", lease.item_id, describe_os_error(err))
            return False

    def _machine_error(self, err: OSError) -> bool:
        """True when ``err`` is this machine's file system's (full, unreachable, gone), not an item's."""
        return folder_failure(err, self.paths.root).advice is not None

    def _storage_error(self, err: OSError, fate: str = "") -> StorageError:
        """The one line for a full disk or a dropped share; a dropped share is a FolderUnreachable, which --wait waits out."""
        failure = folder_failure(err, self.paths.root)
        line = f"{failure.cause}{'; ' + fate if fate else ''}: {failure.advice or 'reconnect the folder'}, then start the worker again"
        if failure.unreachable:
            return FolderUnreachable(f"{line} (with --wait it waits for the folder instead)", failure.cause, fate)
        return StorageError(line)
