"""Two replica folders kept in step by a syncer process with delays and conflicted copies,
one worker on each: every item completes, each CSV holds every round once, results are right."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path


from fedspec.testing.syncsim import SyncSim
from tests.conftest import fedspec_cmd, read_rows
from tests.queue.helpers import rounds_of, start_worker, status_json, wait_for, write_grid


def test_syncsim_delivers_late_drops_stale_and_makes_conflicted_copies(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    sim = SyncSim([a, b], max_delay=0.0)
    (a / "x.json").write_text("1")
    sim.step(now=0)
    assert (b / "x.json").read_text() == "1"
    # Both sides change x before hearing of each other: b keeps its own, gets a's as a conflicted copy.
    (a / "x.json").write_text("from a")
    (b / "x.json").write_text("from b")
    sim.step(now=1)
    copies = sorted(p.name for p in b.iterdir() if "conflicted copy" in p.name)
    assert (b / "x.json").read_text() == "from b" and len(copies) == 1
    # Out of order: a newer version arriving first is not overwritten by an older one.
    slow = SyncSim([a, b], max_delay=0.0)
    slow.step(now=0)
    (a / "y.json").write_text("v1")
    slow.step(now=1)
    (a / "y.json").write_text("v2")
    slow.step(now=2)
    assert (b / "y.json").read_text() == "v2"
    assert slow.stats["stale"] == 0 and slow.stats["applied"] >= 2


def test_two_replicas_with_a_delayed_syncer_complete_every_item_once(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / "g.toml", rounds=4, alphas="[0.1, 0.5]", centralized=False)
    ref = tmp_path / "ref"
    assert start_worker(ref, "ref", grid=grid).wait(timeout=300) == 0

    a, b = tmp_path / "replica_a", tmp_path / "replica_b"
    b.mkdir()
    created = subprocess.run(fedspec_cmd("worker", "--root", str(a), "--grid", str(grid), "--max-items", "0"),
                             capture_output=True, timeout=120)
    assert created.returncode == 0
    stats = tmp_path / "sync.json"
    syncer = subprocess.Popen([sys.executable, "-m", "fedspec.testing.syncsim", "--max-delay", "1.0", "--seed", "3",
                               "--stats", str(stats), str(a), str(b)])
    assert wait_for(lambda: (b / "distributed_work" / "work_queue.json").exists(), timeout=30)
    # Settle > the syncer's worst delay; a TTL well above it.  Both workers --wait until all is done.
    common = ["--wait", "--settle", "2.5", "--lease-ttl", "12", "--heartbeat", "0.5"]
    wa = start_worker(a, "wa", *common, log=tmp_path / "a.log")
    wb = start_worker(b, "wb", *common, log=tmp_path / "b.log")
    assert wa.wait(timeout=400) == 0 and wb.wait(timeout=400) == 0
    syncer.send_signal(signal.SIGTERM)
    assert syncer.wait(timeout=60) == 0
    sync_stats = json.loads(stats.read_text())
    assert sync_stats["changes"] > 0 and sync_stats["applied"] > 0

    items = [i["id"] for i in status_json(ref)["items"]]
    for replica in (a, b):
        report = status_json(replica)
        assert report["counts"]["done"] == len(items) == 4, report
        for item in items:
            csv_path = replica / "paper_results" / f"{item}.csv"
            assert rounds_of(csv_path) == [1, 2, 3, 4]
            assert read_rows(csv_path) == read_rows(ref / "paper_results" / f"{item}.csv")
    logs = [(tmp_path / f"{x}.log").read_text() for x in ("a", "b")]
    runs = [log.count(": done") for log in logs]
    assert sum(runs) == 4 and min(runs) > 0  # each item executed once, and both replicas did work
    assert not any(": duplicate" in log for log in logs)
