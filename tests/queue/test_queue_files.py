"""The queue's files, one at a time: bad input, conflicted copies, lock fallback, leases on a fake clock."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from fedspec.errors import LeaseLost, QueueError, RootError
from fedspec.queue import claims as claims_mod
from fedspec.queue.claims import read_claims, try_claim
from fedspec.queue.heartbeat import LeaseObserver
from fedspec.queue.status import classify
from fedspec.queue.store import RootPaths, conflicted_copies
from fedspec.queue.workqueue import QueueItem, add_items, load_queue, merge_conflicted_copies
from tests.conftest import fedspec_cmd

SPEC = {"task": "digits", "method": "fedavg", "rounds": 2}


def make_root(tmp_path: Path, ids=("a", "b")) -> RootPaths:
    paths = RootPaths(tmp_path)
    add_items(paths, [QueueItem(i, SPEC) for i in ids])
    return paths


def test_adding_a_grid_is_idempotent_and_refuses_changed_specs(tmp_path: Path) -> None:
    paths = make_root(tmp_path)
    assert add_items(paths, [QueueItem("a", SPEC), QueueItem("c", SPEC)]) == ["c"]
    assert [i.id for i in load_queue(paths)] == ["a", "b", "c"]
    before = paths.queue_file.read_bytes()
    with pytest.raises(QueueError) as err:
        add_items(paths, [QueueItem("a", {**SPEC, "rounds": 3, "task": "tweets-minilm"})], source="g2.toml")
    old_rounds, old_task = SPEC.get("rounds"), SPEC.get("task")
    assert str(err.value).startswith(f"g2.toml: item 'a' is already in the queue with a different spec "
                                     f"(task {old_task!r} -> 'tweets-minilm', rounds {old_rounds!r} -> 3); ")
    assert "own --root" in str(err.value)
    assert paths.queue_file.read_bytes() == before


@pytest.mark.parametrize("content", [b"", b"{\"format\": 1, \"items\": [", b"not json", b"{\"items\": 3}",
                                     b"{\"format\": 1, \"items\": [{\"id\": \"../x\", \"spec\": {}}]}",
                                     b"{\"format\": 1, \"items\": [{\"id\": \"aux\", \"spec\": {}}]}"])
def test_corrupt_queue_is_one_clear_error_and_left_alone(tmp_path: Path, content: bytes) -> None:
    paths = make_root(tmp_path)
    paths.queue_file.write_bytes(content)
    with pytest.raises(QueueError) as err:
        load_queue(paths)
    assert "\n" not in str(err.value) and str(paths.queue_file) in str(err.value)
    with pytest.raises(QueueError):
        add_items(paths, [QueueItem("z", SPEC)])
    assert paths.queue_file.read_bytes() == content


def test_folder_without_queue_is_not_a_fedspec_root(tmp_path: Path) -> None:
    with pytest.raises(RootError, match="not a fedspec root"):
        load_queue(RootPaths(tmp_path))


def test_only_a_folder_without_a_queue_folder_is_called_the_root_of_runs(tmp_path: Path) -> None:
    """A queue's root whose work_queue.json is gone is no run's root, whatever results it holds."""
    paths = RootPaths(tmp_path)
    paths.results.mkdir()
    paths.result_csv("a").write_text("round\n1\n")
    (paths.checkpoints / "a").mkdir(parents=True)
    with pytest.raises(RootError, match=r"only what `fedspec run` writes \(1 result, 1 checkpoint\)"):
        load_queue(paths)
    paths.claims.mkdir(parents=True)
    with pytest.raises(RootError, match="not a fedspec root"):
        load_queue(paths)


@pytest.mark.parametrize("copy_name", ["work_queue (Mac's conflicted copy 2026-01-02).json", "work_queue 2.json"])
def test_conflicted_copy_is_merged_as_union_and_reported(tmp_path: Path, copy_name: str) -> None:
    paths = make_root(tmp_path, ("a", "b"))
    other = {"format": 1, "items": [{"id": "a", "spec": SPEC}, {"id": "x", "spec": SPEC}]}
    (paths.work / copy_name).write_text(json.dumps(other))
    assert conflicted_copies(paths.work, "work_queue.json") == [paths.work / copy_name]
    report = merge_conflicted_copies(paths)
    assert len(report) == 1 and "merged (1 new item(s))" in report[0]
    assert [i.id for i in load_queue(paths)] == ["a", "b", "x"]
    assert conflicted_copies(paths.work, "work_queue.json") == []


def test_icloud_placeholder_is_reported_not_parsed(tmp_path: Path) -> None:
    paths = make_root(tmp_path)
    (paths.heartbeats / ".w1.json.icloud").write_bytes(b"bplist00 binary")
    report = classify(paths, load_queue(paths))
    assert any("iCloud placeholder" in w for w in report.warnings)
    deep = paths.claims / "a" / ".g00001.w1.claim.json.icloud"  # found however deep it lies
    deep.parent.mkdir(parents=True)
    deep.write_bytes(b"bplist00")
    said = [w for w in classify(paths, load_queue(paths)).warnings if "iCloud placeholder" in w]
    assert said == ["iCloud placeholder not downloaded: distributed_work/claims/a/.g00001.w1.claim.json.icloud",
                    "iCloud placeholder not downloaded: distributed_work/heartbeats/.w1.json.icloud"]
    # A worker's scan before each claim leaves the walk out (it is the costliest part of a claim) ...
    assert not any("iCloud" in w for w in classify(paths, load_queue(paths), scan_placeholders=False).warnings)
    # ... but its first scan walks, so a worker still says so at once.
    for item in ("a", "b"):
        paths.result_csv(item).parent.mkdir(exist_ok=True)
        paths.result_csv(item).write_text("round\n1\n")
    res = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path), "--name", "me"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "iCloud placeholder not downloaded: distributed_work/claims/a/" in res.stderr, res.stderr


def test_claim_without_a_working_lock_falls_back_to_settle_protocol(tmp_path: Path, monkeypatch) -> None:
    paths = make_root(tmp_path)

    def enotsup(self, *a, **k):
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr("filelock.FileLock.acquire", enotsup)
    slept: list[float] = []
    lease = try_claim(paths, "a", 0, "w1", settle_s=0.0, sleep=slept.append)
    assert lease is not None and lease.generation == 1
    assert slept == [1.0]  # without the lock a settle window is always waited


def test_lowest_name_wins_simultaneous_claims_and_the_loser_is_fenced(tmp_path: Path) -> None:
    paths = make_root(tmp_path)
    loser = try_claim(paths, "a", 0, "w9", settle_s=0.0)
    assert loser is not None
    # A peer whose lock did not exclude us claimed the same generation; it arrives late.
    claims_mod._record(paths, "a", 1, "w1", "claim", {})
    assert read_claims(paths, "a").holder == "w1"
    with pytest.raises(LeaseLost):
        loser.check("checkpoint")


def test_retry_of_a_done_item_changes_nothing_and_says_how_to_rerun_it(tmp_path: Path) -> None:
    paths = make_root(tmp_path, ("a", "b"))
    paths.results.mkdir(parents=True, exist_ok=True)
    paths.result_csv("a").write_text("round\n1\n")
    lease = try_claim(paths, "b", 0, "w1", settle_s=0.0)
    lease.fail("boom")
    res = subprocess.run(fedspec_cmd("retry", "a", "b", "--root", str(tmp_path), "--name", "me"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = res.stdout.replace("\n", "")
    assert f"a: done, nothing to put back (`fedspec retry --rerun a --root {tmp_path}` runs it again from round 1" in out
    assert "put back 1 item(s): b" in out
    assert not (paths.claims / "a").exists() or not list((paths.claims / "a").glob("retry.*"))
    assert list((paths.claims / "b").glob("retry.*"))


def test_retry_says_what_it_does_to_items_that_are_not_failed(tmp_path: Path) -> None:
    """Retry of a pending or running item said "put back 1 item(s)", as if it had been out of the queue."""
    paths = make_root(tmp_path, ("p", "q", "r", "f"))
    try_claim(paths, "q", 0, "w3", settle_s=0.0)
    try_claim(paths, "r", 0, "w1", settle_s=0.0).fail("boom")  # one failed attempt, then taken up again by w2
    try_claim(paths, "r", 1, "w2", settle_s=0.0)
    lease = try_claim(paths, "f", 0, "w1", settle_s=0.0)
    lease.fail("bad settings", final=True)
    res = subprocess.run(fedspec_cmd("retry", "p", "q", "r", "--root", str(tmp_path), "--name", "me"), capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["p: pending, with no failed attempt: nothing to put back",
                                       "q: running on w3, with no failed attempt: nothing to put back",
                                       "forgot the failed attempts of 1 running item(s), which go on: r"]
    assert not (paths.claims / "p").exists() and not list((paths.claims / "q").glob("retry.*"))
    assert len(list((paths.claims / "r").glob("retry.*"))) == 1
    st = {s.id: s for s in classify(paths, load_queue(paths), with_progress=False).items}
    assert (st["r"].state, st["r"].holder, st["r"].attempts) == ("running", "w2", 0)
    res = subprocess.run(fedspec_cmd("retry", "--failed", "--root", str(tmp_path)), capture_output=True, text=True)
    assert res.stdout.splitlines() == ["put back 1 item(s): f"]
    res = subprocess.run(fedspec_cmd("retry", "--failed", "--root", str(tmp_path)), capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.splitlines() == ["put back 0 item(s) (no item has failed)"]


def test_a_done_item_whose_csv_is_deleted_is_run_again_by_any_worker(tmp_path: Path) -> None:
    """The way `retry` gives to redo a done item: a worker of another name said "1 of 2 items are still running elsewhere"
    and left, because the claim of the worker that had finished it still stood."""
    from fedspec.queue.worker import Worker, WorkerEvents, WorkerSettings

    paths = make_root(tmp_path, ("a", "b"))

    def job(item, guard, progress, on_step) -> str:
        ran.append(item.id)
        paths.results.mkdir(exist_ok=True)
        paths.result_csv(item.id).write_text("round\n1\n")
        return "done"

    ran: list[str] = []
    settings = WorkerSettings(heartbeat=0.2, poll=0.1)
    assert Worker(paths, "w1", job, settings).run() == 0 and ran == ["a", "b"]
    paths.result_csv("a").unlink()
    st = {s.id: s for s in classify(paths, load_queue(paths)).items}["a"]
    assert (st.state, st.holder, st.moved_on) == ("running", "w1", True)
    warnings: list[str] = []
    started = time.monotonic()
    assert Worker(paths, "w2", job, settings, WorkerEvents(on_warning=warnings.append)).run() == 0
    assert ran == ["a", "b", "a"] and time.monotonic() - started < 10
    assert warnings == ["a: its holder w1 has moved on with no result for it; taking it over after 0.4s (a sync folder may "
                        "still be delivering that result)"]


def test_retry_of_an_id_not_in_the_queue_names_the_queue_and_the_nearest_id(tmp_path: Path) -> None:
    paths = make_root(tmp_path, ("fedavg_dirichlet_alpha0.5", "centralized"))
    for typed, hint in (("fedavg_dirichlet_alpha05", "; did you mean 'fedavg_dirichlet_alpha0.5'?"),
                        ("centralised", "; did you mean 'centralized'?"), ("zzz", "")):
        res = subprocess.run(fedspec_cmd("retry", typed, "--root", str(tmp_path)), capture_output=True, text=True)
        assert res.returncode == 2 and "Traceback" not in res.stderr
        assert " ".join(res.stderr.split()) == f"error: {paths.queue_file}: no item {typed!r}{hint}"
    assert not paths.claims.exists() or not list(paths.claims.glob("*/retry.*"))  # nothing written


def test_lease_is_stale_only_after_ttl_on_the_observers_clock(tmp_path: Path) -> None:
    now = [100.0]
    obs = LeaseObserver(ttl=30, clock=lambda: now[0])
    obs.observe({"w1": {"counter": 5}})
    now[0] += 29
    obs.observe({"w1": {"counter": 5}})
    assert not obs.is_stale("w1")
    now[0] += 1
    assert obs.is_stale("w1")
    obs.observe({"w1": {"counter": 6}})  # it woke up
    assert not obs.is_stale("w1")


def test_a_move_aside_that_fails_halfway_puts_back_what_it_moved(tmp_path: Path) -> None:
    """`retry --rerun` moves the checkpoint, then the CSV: a CSV that cannot move leaves the item done, as it was."""
    from fedspec.cli.retry import move_aside
    from fedspec.errors import ConfigError

    paths = make_root(tmp_path, ("a",))
    paths.checkpoint_folder("a").mkdir(parents=True)
    (paths.checkpoint_folder("a") / "checkpoint.safetensors").write_bytes(b"ckpt")
    paths.results.mkdir(parents=True, exist_ok=True)
    paths.result_csv("a").write_text("round\n1\n")
    aside = tmp_path / "replaced" / "t"
    (aside / "paper_results").mkdir(parents=True)
    (aside / "paper_results" / "a.csv").write_text("an earlier one")
    with pytest.raises(ConfigError, match="a.csv: already there; nothing moved"):
        move_aside(paths, "a", aside)
    assert (paths.checkpoint_folder("a") / "checkpoint.safetensors").read_bytes() == b"ckpt"
    assert paths.result_csv("a").read_text() == "round\n1\n" and not (aside / "checkpoints_distributed" / "a").exists()
    assert (aside / "paper_results" / "a.csv").read_text() == "an earlier one"
    assert move_aside(paths, "a", tmp_path / "replaced" / "u") is True and not paths.result_csv("a").exists()
    assert move_aside(paths, "a", tmp_path / "replaced" / "v") is False  # nothing left to move


def test_failed_attempts_make_an_item_failed_and_retry_puts_it_back(tmp_path: Path) -> None:
    paths = make_root(tmp_path, ("a",))
    for gen in range(3):
        lease = try_claim(paths, "a", gen, "w1", settle_s=0.0)
        lease.fail(f"boom {gen}")
    (st,) = classify(paths, load_queue(paths)).items
    assert st.state == "failed" and st.attempts == 3 and st.error == "boom 2"
    res = subprocess.run(fedspec_cmd("retry", "--failed", "--root", str(tmp_path), "--name", "me"), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (st,) = classify(paths, load_queue(paths)).items
    assert st.state == "pending" and st.attempts == 0


def beat(paths: RootPaths, name: str, age: float, **fields) -> None:
    """A worker's heartbeat file as a worker writes it, last written ``age`` seconds ago."""
    paths.heartbeats.mkdir(parents=True, exist_ok=True)
    path = paths.heartbeats / f"{name}.json"
    path.write_text(json.dumps({"worker": name, "host": name, "state": "idle", "lease_ttl": 600.0, "counter": 1, **fields}))
    os.utime(path, (time.time() - age, time.time() - age))


def test_a_worker_with_nothing_left_says_what_comes_next(tmp_path: Path) -> None:
    """Failed items and peers' items are named with the command to use; a finished queue points to the figures."""
    paths = RootPaths(tmp_path)
    spec = {**SPEC, "rounds": 1, "clients": 2, "min_client_size": 5}
    add_items(paths, [QueueItem("a", spec), QueueItem("b", spec, max_attempts=0), QueueItem("c", spec)])  # b: attempts used up
    try_claim(paths, "c", 0, "peer", settle_s=0.0)
    beat(paths, "peer", 0, state="running", item="c")  # a live peer holds c
    res = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path), "--name", "me", "--settle", "0"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "worker me: 1 done" in res.stdout, res.stderr
    said = " ".join(res.stderr.split())
    assert (f"1 of 3 items failed: `fedspec status --root {tmp_path}` says why, "
            f"`fedspec retry --failed --root {tmp_path}` puts them back") in said
    assert (f"1 of 3 items are still running elsewhere: `fedspec status --root {tmp_path}` follows them "
            "(a worker started with --wait stays to take over any that stall)") in said
    assert "the queue is done" not in said

    for item in ("b", "c"):
        paths.result_csv(item).write_text("round\n1\n")
    res = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path), "--name", "me", "--settle", "0"),
                         capture_output=True, text=True, timeout=120)
    said = " ".join(res.stderr.split())
    assert res.returncode == 0 and f"the queue is done (3 of 3 items): `fedspec plots --root {tmp_path}` draws the figures" in said
    assert "failed" not in said and "elsewhere" not in said


def test_eta_counts_only_live_workers_each_at_its_own_speed(tmp_path: Path) -> None:
    paths = make_root(tmp_path, ("a", "b", "c"))  # 3 pending items of 2 rounds: 6 rounds left
    beat(paths, "mac", 5, state="running", sec_per_round=1.0)
    beat(paths, "gtx", 5, sec_per_round=0.5)  # idle between items
    beat(paths, "old", 5, state="stopped", sec_per_round=0.1)  # exited: does no more work
    report = classify(paths, load_queue(paths))
    assert report.live_workers == 2 and report.eta_seconds == pytest.approx(6 / (1 / 1.0 + 1 / 0.5))
    beat(paths, "mac", 700, state="running", sec_per_round=1.0)  # killed: its last beat still says running
    report = classify(paths, load_queue(paths))
    assert report.live_workers == 1 and report.eta_seconds == pytest.approx(6 / 2)
    lines = render_text(report).splitlines()
    marked = [lines[k - 1].split()[0] for k, line in enumerate(lines) if "(silent)" in line]  # the cell wraps after "running"
    assert marked == ["mac"], lines
    (paths.results).mkdir(parents=True, exist_ok=True)
    for done in ("a", "b"):
        (paths.results / f"{done}.csv").write_text("round\n1\n2\n")
    beat(paths, "mac", 5, state="running", sec_per_round=1.0)
    report = classify(paths, load_queue(paths))  # one item left: a second worker does not halve its time
    assert report.eta_seconds == pytest.approx(2 * 0.5)
    beat(paths, "gtx", 5, state="running", item="c", sec_per_round=0.5, round_progress=0.5)
    report = classify(paths, load_queue(paths))  # half of c's first round is trained already
    assert report.eta_seconds == pytest.approx(1.5 * 0.5)
    beat(paths, "mac", 5, state="stopped")
    beat(paths, "gtx", 5, state="running", item="c", round_progress=0.25, sec_per_round_estimate=4.0)  # no round done yet
    report = classify(paths, load_queue(paths))  # c's first round is under way at 4 s a round
    assert report.eta_seconds == pytest.approx(1.75 * 4.0) and "~4.00" in render_text(report)
    beat(paths, "gtx", 5, state="stopped")
    report = classify(paths, load_queue(paths))
    assert report.live_workers == 0 and report.eta_seconds is None
    assert "ETA - (no worker running: start `fedspec worker`)" in render_text(report)


def test_eta_leaves_out_a_live_worker_that_cannot_load_what_is_left(tmp_path: Path) -> None:
    """A laptop without the text extra, waiting with --wait after its digits items at 0.05 s a round, was counted
    at that speed: the ETA of the SST-2 items left (a minute a round on the Mac) came out in seconds."""
    paths = RootPaths(tmp_path)
    sst2 = {**SPEC, "task": "sst2-bert"}
    add_items(paths, [QueueItem("s1", sst2), QueueItem("s2", sst2)])  # 4 rounds left
    beat(paths, "mac", 5, state="running", sec_per_round=60.0)
    beat(paths, "win", 5, sec_per_round=0.05, unavailable={"sst2-bert": "No module named 'transformers'"})
    report = classify(paths, load_queue(paths))
    assert report.live_workers == 2 and report.able_workers == 1 and report.eta_seconds == pytest.approx(4 * 60.0)
    assert {k: report.to_json()[k] for k in ("live_workers", "able_workers")} == {"live_workers": 2, "able_workers": 1}  # --json
    beat(paths, "mac", 5, state="stopped")
    report = classify(paths, load_queue(paths))
    assert report.eta_seconds is None and "ETA - (no live worker can load what is left: see the warnings)" in render_text(report)
    assert ("win cannot load sst2-bert, so its pending items wait for another machine (No module named 'transformers')"
            in report.warnings)
    add_items(paths, [QueueItem("d", SPEC)])  # a digits item too: the laptop counts again
    report = classify(paths, load_queue(paths))
    assert report.able_workers == 1 and report.eta_seconds == pytest.approx(6 * 0.05)


def test_status_says_when_the_live_workers_run_different_fedspec_versions(tmp_path: Path) -> None:
    """An item resumed on another version may give another CSV than an uninterrupted run (the run warns when it
    resumes); status says so while the machines run, before any item moves between them."""
    from fedspec import __version__

    paths = make_root(tmp_path, ("a",))
    beat(paths, "win", 0, fedspec=__version__)
    beat(paths, "mac", 0, fedspec="9.0.0")
    beat(paths, "box", 0, fedspec=__version__)
    beat(paths, "gone", 5000, fedspec="0.0.1")  # silent past its lease: not counted
    beat(paths, "older", 0)  # a fedspec whose heartbeat does not say
    assert (f"the live workers run different fedspec versions ({__version__} on box, win; 9.0.0 on mac): an item resumed "
            "on another version may give another CSV than an uninterrupted run; update them to one version"
            ) in classify(paths, load_queue(paths)).warnings
    beat(paths, "mac", 0, fedspec=__version__)
    assert not any("fedspec versions" in line for line in classify(paths, load_queue(paths)).warnings)


def test_status_warns_where_the_workers_of_one_machine_run_more_torch_threads_than_it_has_cpus(tmp_path: Path) -> None:
    """Two workers at torch's default threads on a 2-core machine took 2 to 6 times as long for experiments/quick.toml
    as one worker alone (6.3 s against 11.8-39.7 s), and nothing said why."""
    from fedspec.queue.status import crowded_hosts

    paths = make_root(tmp_path, ("a",))
    cpu = {"host": "vm", "device": "cpu", "cpus": 2}
    beat(paths, "w1", 0, state="running", threads=2, **cpu)
    beat(paths, "w2", 0, state="running", threads=2, **cpu)
    beat(paths, "gpu", 0, state="running", threads=2, **{**cpu, "device": "cuda"})  # trains on its GPU
    beat(paths, "waiting", 0, state="idle", threads=2, **cpu)  # polling with --wait: no threads busy
    beat(paths, "gone", 5000, state="running", threads=2, **cpu)  # silent past its lease
    beat(paths, "mac", 0, state="running", threads=8, host="mac", device="cpu", cpus=8)  # alone on its machine
    line = ("workers w1, w2 share vm: 2 + 2 torch threads on its 2 CPUs slow each of them down several times over; "
            "restart them with --threads 1 (CPUs / workers)")
    assert [w for w in classify(paths, load_queue(paths)).warnings if "torch threads" in w] == [line]
    workers = classify(paths, load_queue(paths)).workers
    assert crowded_hosts(workers, "mac") == []  # a worker hears of its own machine only
    assert crowded_hosts(workers, "waiting") == [line.replace("w1, w2", "w1, w2, waiting").replace("2 + 2", "2 + 2 + 2")]
    beat(paths, "w1", 0, state="running", threads=1, **cpu)
    beat(paths, "w2", 0, state="running", threads=1, **cpu)
    assert not any("torch threads" in w for w in classify(paths, load_queue(paths)).warnings)
    beat(paths, "mac", 0, state="running", threads=5000, host="mac", device="cpu", cpus=8)  # one worker, --threads 5000
    assert [w for w in classify(paths, load_queue(paths)).warnings if "torch threads" in w] == [
        "worker mac on mac: 5000 torch threads on its 8 CPUs slow it down several times over; restart it with --threads 8 or less"]


def test_a_worker_warns_when_it_joins_a_worker_of_its_machine_with_too_many_threads(tmp_path: Path) -> None:
    """The warning comes where the second worker is started, and its heartbeat says its threads for status."""
    import socket

    from fedspec.fl.device import cpu_threads

    paths = make_root(tmp_path, ("a",))
    cpus = cpu_threads()["cpus"]
    beat(paths, "peer", 0, state="running", host=socket.gethostname(), device="cpu", threads=cpus, cpus=cpus)
    res = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path), "--name", "me", "--settle", "0", "--device", "cpu"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    said = " ".join(res.stderr.split())
    assert re.search(rf"warning: workers me, peer share {re.escape(socket.gethostname())}: \d+ \+ {cpus} torch threads on its "
                     rf"{cpus} CPUs slow each of them down several times over; restart them with --threads {max(1, cpus // 2)} ",
                     said), said
    mine = json.loads((paths.heartbeats / "me.json").read_text())
    assert mine["threads"] >= 1 and mine["cpus"] == cpus


def test_a_queue_with_nothing_left_to_run_shows_no_eta(tmp_path: Path) -> None:
    """Every item done or failed: the head said "ETA 0s" (nearly done, with a failed item too), and a done item's
    column of failed attempts, headed "tries", read "tries 0"."""
    paths = make_root(tmp_path, ("a", "b"))
    paths.results.mkdir(parents=True, exist_ok=True)
    paths.result_csv("a").write_text("round\n1\n2\n")
    beat(paths, "mac", 5, state="idle", sec_per_round=1.0)
    head, header = render_text(classify(paths, load_queue(paths))).splitlines()[:2]
    assert "ETA " in head and "nothing left" not in head  # b is still pending
    lease = try_claim(paths, "b", 0, "w1", settle_s=0.0)
    lease.fail("boom", final=True)
    text = render_text(classify(paths, load_queue(paths)))
    head, header = text.splitlines()[:2]
    assert head.endswith("1 done, 1 failed   nothing left to run: `fedspec retry --failed` puts the failed back"), head
    assert "ETA" not in text and header.split()[-1] == "fails" and "fails: failed" in text  # the caption wraps with the table
    paths.result_csv("b").write_text("round\n1\n2\n")  # a peer's late result
    head = render_text(classify(paths, load_queue(paths))).splitlines()[0]
    assert head.endswith("2 done, 0 failed   nothing left to run"), head


def render_text(report) -> str:
    from rich.console import Console

    from fedspec.cli.status import render

    console = Console(width=160, color_system=None, record=True, file=io.StringIO())
    console.print(render(report))
    return console.export_text()


def test_foreign_file_in_claims_is_reported_and_ignored(tmp_path: Path) -> None:
    paths = make_root(tmp_path, ("a",))
    (paths.claims / "a").mkdir(parents=True)
    (paths.claims / "a" / "notes.txt").write_text("hello")
    report = classify(paths, load_queue(paths))
    assert report.items[0].state == "pending" and any("foreign" in w for w in report.warnings)


def test_a_file_given_as_root_is_one_line_for_every_command(tmp_path: Path) -> None:
    root = tmp_path / "notes.txt"
    root.write_text("not a root")
    for cmd in (["worker"], ["status"], ["retry", "--failed"], ["plots"]):
        res = subprocess.run(fedspec_cmd(*cmd, "--root", str(root)), capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip() == f"error: {root}: --root must be a folder, not a file", (cmd, res.stderr)
    assert root.read_text() == "not a root"


@pytest.mark.parametrize("setup, expected", [
    ("empty", "work_queue.json: empty"),
    ("garbage", "not valid JSON"),
    ("none", "not a fedspec root"),
])
def test_worker_and_status_on_bad_roots_print_one_line(tmp_path: Path, setup: str, expected: str) -> None:
    if setup != "none":
        (tmp_path / "distributed_work").mkdir()
        (tmp_path / "distributed_work" / "work_queue.json").write_bytes(b"" if setup == "empty" else b"\x00{{")
    for cmd in (["worker"], ["status"]):
        res = subprocess.run(fedspec_cmd(*cmd, "--root", str(tmp_path)), capture_output=True, text=True, timeout=60)
        assert res.returncode != 0 and "Traceback" not in res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and expected in errors[0], res.stderr


def test_truncated_checkpoint_fails_the_attempt_with_a_clear_reason(tmp_path: Path) -> None:
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nmethods=["fedavg"]\ncentralized=false\n[experiment]\nclients=3\nrounds=2\nmin_client_size=5\n')
    root = tmp_path / "root"
    ckpt = root / "checkpoints_distributed" / "fedavg_dirichlet_alpha0.5"
    ckpt.mkdir(parents=True)
    (ckpt / "checkpoint.safetensors").write_bytes(b'\x20\x00\x00\x00\x00\x00\x00\x00{"__metadata__": {"fedspec": "{')
    res = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", str(grid), "--name", "w1", "--lease-ttl", "4",
                                     "--heartbeat", "1"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "Traceback" not in res.stderr
    report = json.loads(subprocess.run(fedspec_cmd("status", "--root", str(root), "--json"), capture_output=True, text=True).stdout)
    (st,) = report["items"]
    assert st["state"] == "failed" and st["attempts"] == 3 and "torn or foreign checkpoint" in st["error"]
    assert (ckpt / "checkpoint.safetensors").read_bytes().endswith(b'"fedspec": "{')  # nothing overwritten


def test_hand_edited_item_spec_fails_the_item_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "distributed_work").mkdir()
    queue = {"format": 1, "items": [{"id": "x", "spec": {"method": "fedprox", "rounds": 1}}]}
    (tmp_path / "distributed_work" / "work_queue.json").write_text(json.dumps(queue))
    res = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path), "--name", "w"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "Traceback" not in res.stderr
    (st,) = classify(RootPaths(tmp_path), load_queue(RootPaths(tmp_path))).items
    assert st.state == "failed" and "\n" not in st.error
    assert "item x: method: got 'fedprox'" in st.error
    # Settings that no attempt can mend fail the item at its first attempt: it was run (and failed) three times.
    assert st.attempts == 1 and res.stderr.count("x: claimed") == 1 and "worker w: 1 failed" in res.stdout
    # `retry` puts it back; a fixed spec then runs.
    queue["items"][0]["spec"]["method"] = "fedavg"
    (tmp_path / "distributed_work" / "work_queue.json").write_text(json.dumps(queue))
    assert subprocess.run(fedspec_cmd("retry", "x", "--root", str(tmp_path)), capture_output=True, timeout=60).returncode == 0
    (st,) = classify(RootPaths(tmp_path), load_queue(RootPaths(tmp_path))).items
    assert st.state == "pending" and st.attempts == 0


def test_items_another_fedspec_added_with_settings_this_one_lacks_are_left_to_it_not_failed(tmp_path: Path) -> None:
    """Machines of a grid update at different times.  A worker whose fedspec lacked a newer one's setting failed
    every item that fedspec added at its first claim: a whole grid failed in seconds on one machine not updated."""
    from fedspec import __version__
    from fedspec.config import origin

    newer = {"fedspec": "9.0.0", "settings": "0123456789ab"}
    spec = {"method": "fedavg", "rounds": 1, "clients": 4, "min_client_size": 5, "max_train_samples": 200}
    queue = {"format": 1, "items": [
        {"id": "new1", "spec": {**spec, "weight_decay": 0.01}, "added_by": newer},
        {"id": "new2", "spec": {**spec, "task": "cifar10"}, "added_by": newer},
        {"id": "plain", "spec": spec, "added_by": newer},  # settings this fedspec takes: it runs them
        {"id": "edited", "spec": {**spec, "weight_decay": 0.01}, "added_by": origin()},  # its own settings, hand-edited
    ]}
    (tmp_path / "distributed_work").mkdir()
    (tmp_path / "distributed_work" / "work_queue.json").write_text(json.dumps(queue))
    res = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path), "--name", "w"), capture_output=True, text=True, timeout=120)
    said = res.stdout + res.stderr
    assert res.returncode == 0 and "Traceback" not in said
    assert said.count(f"new1: weight_decay: unknown key (and 1 more item(s)): added by fedspec 9.0.0, whose settings this "
                      f"fedspec {__version__} does not take; left to machines that run it (update fedspec here to run them)") == 1
    assert "new1: claimed" not in said and "new2: claimed" not in said
    assert "2 item(s) added by another fedspec are left to the machines that run it" in said
    states = {st.id: (st.state, st.attempts) for st in classify(RootPaths(tmp_path), load_queue(RootPaths(tmp_path))).items}
    assert states == {"new1": ("pending", 0), "new2": ("pending", 0), "plain": ("done", 0), "edited": ("failed", 1)}
    beat = json.loads((tmp_path / "distributed_work" / "heartbeats" / "w.json").read_text())
    assert beat["other_fedspec"] == {"items": 2, "why": "new1: weight_decay: unknown key", "fedspec": __version__}
    assert beat["fedspec"] == __version__
    status = subprocess.run(fedspec_cmd("status", "--root", str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert (f"new1: weight_decay: unknown key (and 1 more item(s)): added by fedspec 9.0.0, whose settings this fedspec "
            f"{__version__} does not take; only machines that run that fedspec can run them") in " ".join(status.stdout.split())
    # Nothing left that this machine can run: it says so in its exit code, as for a task it cannot load.
    again = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path), "--name", "w"), capture_output=True, text=True, timeout=120)
    assert again.returncode == 1 and "worker w: no item run" in again.stdout


def test_a_later_fedspec_adds_the_same_grid_to_an_earlier_ones_queue(tmp_path: Path) -> None:
    """A grid added by a fedspec with a setting the queue's items leave out was refused as "a different spec
    (parallel_clients None -> 'auto')": give this grid its own --root.  A setting left out is at its default."""
    from fedspec.config import make_spec, origin
    from fedspec.queue.workqueue import same_spec_elsewhere

    paths = RootPaths(tmp_path)
    today = make_spec(**SPEC).model_dump(mode="json")
    earlier = {k: v for k, v in today.items() if k != "parallel_clients"}
    add_items(paths, [QueueItem("a", earlier)])
    assert add_items(paths, [QueueItem("a", today, added_by=origin())]) == []
    assert load_queue(paths)[0].spec == earlier and load_queue(paths)[0].added_by is None  # kept as the first adder wrote it
    with pytest.raises(QueueError, match=r"item 'a' is already in the queue with a different spec \(parallel_clients 'auto' -> 'off'\)"):
        add_items(paths, [QueueItem("a", {**today, "parallel_clients": "off"})])
    assert same_spec_elsewhere(load_queue(paths), [QueueItem("b", today)]) == {"b": "a"}
    add_items(paths, [QueueItem("c", {**SPEC, "seed": 7}, added_by=origin())])
    assert load_queue(paths)[1].added_by == origin()


def test_an_earlier_fedspec_adds_the_same_grid_to_a_later_ones_queue(tmp_path: Path) -> None:
    """Every machine runs `fedspec worker --grid …` (README).  One not updated yet took the items a later fedspec had
    queued, with a setting it does not know, for "a different spec (weight_decay 0.0 -> None)": its own --root."""
    from fedspec.config import make_spec, origin

    paths = RootPaths(tmp_path)
    today = make_spec(**SPEC).model_dump(mode="json")
    later = {"fedspec": "9.0.0", "settings": "0123456789ab"}
    add_items(paths, [QueueItem("a", {**today, "weight_decay": 0.0}, added_by=later)])
    assert add_items(paths, [QueueItem("a", today, added_by=origin())]) == []
    assert load_queue(paths)[0].spec == {**today, "weight_decay": 0.0} and load_queue(paths)[0].added_by == later
    with pytest.raises(QueueError, match=r"different spec \(rounds 2 -> 3\)"):  # a difference it can see still counts
        add_items(paths, [QueueItem("a", {**today, "rounds": 3})])
    # This fedspec's own item with a key it does not know is a hand edit: a difference.
    add_items(paths, [QueueItem("b", {**today, "seed": 1, "weight_decay": 0.0}, added_by=origin())])
    with pytest.raises(QueueError, match=r"different spec \(weight_decay 0.0 -> None\)"):
        add_items(paths, [QueueItem("b", {**today, "seed": 1})])


def test_a_task_that_would_not_load_is_tried_again_later_while_waiting(tmp_path: Path) -> None:
    """A Wi-Fi drop while loading a task must not idle a waiting worker for the rest of the grid."""
    from fedspec.errors import TaskError
    from fedspec.queue.heartbeat import Heartbeat
    from fedspec.queue.worker import Worker, WorkerSettings

    paths = make_root(tmp_path, ("a", "b"))
    assert try_claim(paths, "b", 0, "peer", settle_s=0.0) is not None  # a live peer runs b: the worker waits
    Heartbeat(paths, "peer", 30.0).beat()
    calls: list[float] = []

    def job(item, guard, progress, on_step) -> str:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise TaskError("digits: no network")
        for done in ("a", "b"):  # a runs now; the peer finishes b meanwhile
            paths.results.mkdir(parents=True, exist_ok=True)
            (paths.results / f"{done}.csv").write_text("round\n1\n")
        return "done"

    w = Worker(paths, "w1", job, WorkerSettings(wait=True, poll=0.1, retry_unavailable=0.5))
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(w.run()))
    runner.start()
    runner.join(timeout=30)
    if runner.is_alive():  # still skipping a: stop it, then fail
        w.request_stop(signal.SIGTERM)
        runner.join()
    assert codes == [0], f"the worker never tried the task again ({len(calls)} call(s))"
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.5  # handed back, then tried again after the interval
    assert dict(w.outcomes) == {"left to other machines": 1, "done": 1}
    assert w.unavailable == {}  # it loads now, and the heartbeat no longer says otherwise
    assert json.loads((paths.heartbeats / "w1.json").read_text()).get("unavailable") == {}
    (st_a, st_b) = classify(paths, load_queue(paths)).items
    assert st_a.state == "done" and st_a.attempts == 0


def test_a_worker_publishes_how_far_its_round_is_and_the_pace_before_any_round_is_done(tmp_path: Path) -> None:
    """A BERT round takes minutes: status shows the share trained and an ETA from the first round's pace."""
    from fedspec.queue.worker import Worker, WorkerSettings

    paths = make_root(tmp_path, ("a",))
    seen: list[dict] = []

    def job(item, guard, progress, on_step) -> str:
        on_step(1, 10, 100)  # the first step of round 1: no pace yet
        time.sleep(0.3)
        on_step(1, 40, 100)  # 30 % of the round in 0.3 s: about 1 s a round
        w.heartbeat.beat()  # what the next periodic beat writes
        seen.append(json.loads((paths.heartbeats / "w1.json").read_text()))
        seen.append(asdict(classify(paths, load_queue(paths)).workers[0]))
        progress({"round": 1, "device": "cpu", "test_accuracy": 0.5})  # the round is done: its real pace replaces the estimate
        seen.append(json.loads((paths.heartbeats / "w1.json").read_text()))
        return "done"

    w = Worker(paths, "w1", job, WorkerSettings(max_items=1))
    assert w.run() == 0
    beat, status, after = seen
    assert beat["round_progress"] == 0.4 and beat.get("sec_per_round") is None
    assert 0.9 <= beat["sec_per_round_estimate"] <= 1.5
    assert status["round_progress"] == 0.4 and status["sec_per_round_estimate"] == beat["sec_per_round_estimate"]
    assert after["round_progress"] is None and after["sec_per_round_estimate"] is None and after["sec_per_round"] > 0


def test_a_heartbeat_with_fields_of_the_wrong_type_reads_as_missing_them(tmp_path: Path) -> None:
    """Another machine's file (an older fedspec, a hand edit) must not crash `fedspec status`."""
    paths = make_root(tmp_path, ("a",))
    beat(paths, "odd", 5, state="running", item=["a"], round="three", host=5, sec_per_round="fast", round_progress=[0.5])
    report = classify(paths, load_queue(paths))
    (w,) = report.workers
    assert (w.item, w.round, w.host, w.sec_per_round, w.round_progress) == (None, None, None, None, None)
    assert "odd" in render_text(report)


@pytest.mark.parametrize("code, words, release_fails", [
    (errno.ENOSPC, "{strerror} (disk full); {item} was handed back (no attempt counted): free space", False),
    (errno.ENOSPC, "{strerror} (disk full); {item} could not be handed back yet (no attempt counted): free space", True),
    (errno.ENOTCONN, "{strerror} (shared folder disconnected); {item} was handed back (no attempt counted): reconnect the folder",
     False),
], ids=["disk-full", "disk-full-release-also-refused", "share-dropped"])
def test_a_full_disk_stops_the_worker_without_counting_an_attempt(tmp_path: Path, monkeypatch, code: int, words: str,
                                                                  release_fails: bool) -> None:
    """A full disk or a dropped share is the machine's problem; any other OSError of an item is still a failed attempt."""
    from fedspec.errors import StorageError
    from fedspec.queue.worker import Worker, WorkerSettings

    paths = make_root(tmp_path, ("a", "b", "c"))
    record = claims_mod._record

    def refusing(paths_, item_id, generation, worker, kind, data):
        if release_fails and kind == "released":
            raise OSError(code, os.strerror(code), "released.json")
        return record(paths_, item_id, generation, worker, kind, data)

    monkeypatch.setattr(claims_mod, "_record", refusing)
    ran: list[str] = []

    def job(item, guard, progress, on_step) -> str:
        ran.append(item.id)
        if len(ran) == 1:
            raise OSError(errno.EINVAL, "Invalid argument")  # not the machine's: the item's failure, as before
        raise OSError(code, os.strerror(code), str(tmp_path / "checkpoint.safetensors"))

    w = Worker(paths, "w1", job, WorkerSettings())
    with pytest.raises(StorageError) as caught:
        w.run()
    assert len(ran) == 2  # stopped at the full disk or dropped share, the third item untouched
    assert str(caught.value).startswith(f"{tmp_path / 'checkpoint.safetensors'}: {words.format(strerror=os.strerror(code), item=ran[1])}"), caught.value
    assert dict(w.outcomes) == {"failed": 1, "interrupted" if release_fails else "released": 1}
    items = classify(paths, load_queue(paths)).items
    assert [st.attempts for st in items] == [1 if st.id == ran[0] else 0 for st in items]  # the EINVAL's only
    held = [st for st in items if st.state != "pending"]
    if release_fails:  # not handed back: its holder's heartbeat says stopped, so a peer takes it over soon
        assert [(st.id, st.state, st.stale) for st in held] == [(ran[1], "running", True)]
    else:
        assert held == [] and read_claims(paths, ran[1]).ended == "released"


def test_with_wait_a_dropped_share_is_waited_for_and_the_item_taken_up_again(tmp_path: Path, monkeypatch) -> None:
    """A laptop's SMB share drops (ENOTCONN) mid-item and during the polls after it: --wait waits, said once, then goes on."""
    from fedspec.queue import worker as worker_mod
    from fedspec.queue.worker import Worker, WorkerEvents, WorkerSettings

    paths = make_root(tmp_path, ("a",))
    down = {"until": 0.0}
    merge = worker_mod.merge_conflicted_copies

    def reads(paths_):  # the first read of each poll, as the share answers it
        if time.monotonic() < down["until"]:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN), str(paths_.work))
        return merge(paths_)

    monkeypatch.setattr(worker_mod, "merge_conflicted_copies", reads)
    ran: list[str] = []

    def job(item, guard, progress, on_step) -> str:
        ran.append(item.id)
        if len(ran) == 1:
            down["until"] = time.monotonic() + 1.0  # down for a second
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN), str(tmp_path / "checkpoint.safetensors"))
        paths.results.mkdir(parents=True, exist_ok=True)
        (paths.results / "a.csv").write_text("round\n1\n")
        return "done"

    said: list[str] = []
    w = Worker(paths, "w1", job, WorkerSettings(wait=True, poll=0.1), WorkerEvents(on_warning=said.append))
    started = time.monotonic()
    assert w.run() == 0
    assert time.monotonic() - started >= 1.0
    assert ran == ["a", "a"] and dict(w.outcomes) == {"released": 1, "done": 1}
    strerror = os.strerror(errno.ENOTCONN)
    assert said[0] == (f"{tmp_path / 'checkpoint.safetensors'}: {strerror} (shared folder disconnected); a was handed back "
                       "(no attempt counted); waiting for the shared folder (every 0.1s, Ctrl-C to stop)")
    back = re.fullmatch(r"the shared folder is reachable again \(after (\d+)s\)", said[-1])
    assert len(said) == 2 and back is not None and int(back.group(1)) >= 1, said
    (st,) = classify(paths, load_queue(paths)).items
    assert st.state == "done" and st.attempts == 0

    # Without --wait the same drop of the queue's own reads stops the worker with the one line.
    from fedspec.errors import FolderUnreachable

    down["until"] = time.monotonic() + 60
    with pytest.raises(FolderUnreachable) as caught:
        Worker(paths, "w2", job, WorkerSettings()).run()
    assert str(caught.value) == (f"{paths.work}: {strerror} (shared folder disconnected): reconnect the folder, then start "
                                 "the worker again (with --wait it waits for the folder instead)")


def test_with_wait_a_queue_file_that_times_out_is_waited_for_past_the_retry_limit(tmp_path: Path, monkeypatch) -> None:
    """A share whose folder still answers stat but whose queue file read times out: --wait waits, without a limit.

    read_json turned the ETIMEDOUT into "unreadable", so the worker counted it
    as a torn queue file and stopped after 30 retries, --wait or not.
    """
    from fedspec.errors import FolderUnreachable
    from fedspec.queue.worker import Worker, WorkerEvents, WorkerSettings

    paths = make_root(tmp_path, ("a",))
    down: dict = {"until": None}
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self == paths.queue_file:
            if down["until"] is None:  # down for 2 s from the worker's first read, however slow its start
                down["until"] = time.monotonic() + 2.0  # 40 polls of 0.05 s: past the 30 retries of a torn queue file
            if time.monotonic() < down["until"]:
                raise OSError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT), str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)

    def job(item, guard, progress, on_step) -> str:
        paths.results.mkdir(parents=True, exist_ok=True)
        (paths.results / "a.csv").write_text("round\n1\n")
        return "done"

    said: list[str] = []
    w = Worker(paths, "w1", job, WorkerSettings(wait=True, poll=0.05), WorkerEvents(on_warning=said.append))
    assert w.run() == 0 and dict(w.outcomes) == {"done": 1}
    strerror = os.strerror(errno.ETIMEDOUT)
    assert said[0] == (f"{paths.queue_file}: {strerror} (file server not answering); waiting for the shared folder "
                       "(every 0.05s, Ctrl-C to stop)")
    assert len(said) == 2 and said[1].startswith("the shared folder is reachable again"), said

    (paths.results / "a.csv").unlink()  # pending again, for a worker without --wait
    down["until"] = time.monotonic() + 60
    with pytest.raises(FolderUnreachable) as caught:
        Worker(paths, "w2", job, WorkerSettings()).run()
    assert str(caught.value) == (f"{paths.queue_file}: {strerror} (file server not answering): reconnect the folder, then "
                                 "start the worker again (with --wait it waits for the folder instead)")


@pytest.mark.parametrize("bad, why", [("../x", "letters, digits, '.', '_', '-'; no '..'"), ("aux", "a device name on Windows"),
                                      ("alpha0.", "Windows drops a name's final '.'")])
def test_a_hand_edited_unsafe_item_id_is_refused_saying_why(tmp_path: Path, bad: str, why: str) -> None:
    paths = RootPaths(tmp_path)
    add_items(paths, [QueueItem("a", SPEC)])
    data = json.loads(paths.queue_file.read_text())
    data["items"][0]["id"] = bad
    paths.queue_file.write_text(json.dumps(data))
    with pytest.raises(QueueError) as err:
        load_queue(paths)
    assert str(err.value) == f"{paths.queue_file}: items[0]: id {bad!r} is not a safe file name ({why})"


def test_a_grid_over_leftovers_of_other_settings_is_refused(tmp_path: Path) -> None:
    """`fedspec run` leaves a checkpoint and CSV under a name a grid's item gets too; a worker would count that CSV as done."""
    import torch

    from fedspec.config import ExperimentSpec
    from fedspec.fl.checkpoint import Checkpoint, save_checkpoint
    from fedspec.results import write_results

    paths = RootPaths(tmp_path)
    ran = ExperimentSpec.model_validate({**SPEC, "rounds": 3, "clients": 5})  # what `fedspec run` trained
    rows = [{"round": r, "test_accuracy": 0.5} for r in (1, 2, 3)]
    save_checkpoint(paths.checkpoint_folder("a"), "a", ran.spec_hash(), Checkpoint(3, {"w": torch.zeros(2)}, {}, 16, rows),
                    ran.hashed_fields())
    write_results(paths.result_csv("a"), rows)
    with pytest.raises(QueueError) as err:
        add_items(paths, [QueueItem("a", SPEC), QueueItem("b", SPEC)], source="g.toml")
    assert str(err.value) == (
        f"g.toml: item 'a' already has a checkpoint and result of other settings (clients 5 -> 10, rounds 3 -> 2) in "
        f"{tmp_path}, e.g. from `fedspec run`; a worker would take that for this grid's result: move "
        f"checkpoints_distributed{os.sep}a and paper_results{os.sep}a.csv away, or give this grid its own --root")
    assert not paths.queue_file.exists()

    # A CSV without its checkpoint is judged by its number of rounds.
    paths.checkpoint_folder("a").rename(tmp_path / "moved")
    with pytest.raises(QueueError, match=r"item 'a' already has a result of 3 round\(s\) \(the grid's item has 2\)"):
        add_items(paths, [QueueItem("a", SPEC)], source="g.toml")
    write_results(paths.result_csv("a"), rows[:2])
    assert add_items(paths, [QueueItem("a", SPEC)]) == ["a"]

    # The same settings (a grid added again after its queue file was lost) and an unreadable checkpoint are let through;
    # an item already in the queue is not looked at again.
    same = ExperimentSpec.model_validate(SPEC)
    save_checkpoint(paths.checkpoint_folder("b"), "b", same.spec_hash(), Checkpoint(2, {"w": torch.zeros(2)}, {}, 16, rows[:2]),
                    same.hashed_fields())
    write_results(paths.result_csv("b"), rows[:2])
    paths.checkpoint_folder("c").mkdir()
    (paths.checkpoint_folder("c") / "checkpoint.safetensors").write_bytes(b"torn")
    assert add_items(paths, [QueueItem(i, SPEC) for i in "abc"]) == ["b", "c"]
    write_results(paths.result_csv("a"), rows)
    assert add_items(paths, [QueueItem("a", SPEC)]) == []


def test_status_names_an_item_done_by_a_run_of_other_settings(tmp_path: Path) -> None:
    """A root from before grids and runs were checked against each other (or a run whose first round came after the
    grid): the run's CSV counts as the item's result; status says so instead of showing it done like any other."""
    import torch

    from fedspec.config import ExperimentSpec
    from fedspec.fl.checkpoint import Checkpoint, save_checkpoint
    from fedspec.results import write_results

    paths = make_root(tmp_path, ids=("a", "b"))
    rows = [{"round": r, "test_accuracy": 0.5} for r in (1, 2, 3)]
    for item, spec in (("a", {**SPEC, "rounds": 3, "clients": 5}), ("b", SPEC)):
        made = ExperimentSpec.model_validate(spec)
        save_checkpoint(paths.checkpoint_folder(item), item, made.spec_hash(),
                        Checkpoint(3, {"w": torch.zeros(2)}, {}, 16, rows[: made.rounds]), made.hashed_fields())
        write_results(paths.result_csv(item), rows[: made.rounds])
    report = classify(paths, load_queue(paths))
    assert [s.state for s in report.items] == ["done", "done"]
    assert report.warnings == [
        f"a: done by a run of other settings (clients 5 -> 10, rounds 3 -> 2); move {paths.result_csv('a')} and "
        f"{paths.checkpoint_folder('a')} away, and a worker runs it with the queue's"]


def test_files_in_other_case_names_every_twin_and_never_an_items_own_files(tmp_path: Path) -> None:
    paths = RootPaths(tmp_path)
    paths.make()
    for name in ("trial.csv", "Trial.csv", "exact.csv", "stra\u00dfe.csv"):  # Linux holds case twins side by side
        (paths.results / name).write_text("round\n")
    (paths.checkpoints / "TRIAL").mkdir()
    (paths.checkpoints / "exact").mkdir()
    assert paths.files_in_other_case(["trial", "Trial", "exact", "strasse", "absent"]) == {
        "trial": ["paper_results/Trial.csv", "checkpoints_distributed/TRIAL"],
        "Trial": ["paper_results/trial.csv", "checkpoints_distributed/TRIAL"],
    }  # 'straße' is not 'strasse' to a file system, though casefold() says so
    assert RootPaths(tmp_path / "none").files_in_other_case(["trial"]) == {}
