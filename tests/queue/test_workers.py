"""Several real worker processes on one folder: exactly once, crash recovery, fencing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import fedspec_cmd, make_tiny_sst2, read_rows, read_terminal
from tests.queue.helpers import (FAST, checkpoint_round, rounds_of, start_worker, status_json, wait_for, write_grid)


def test_three_workers_finish_a_grid_each_item_exactly_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    grid = write_grid(tmp_path / "g.toml", rounds=3, alphas="[0.1, 0.5, 1.0]", centralized=True)
    # Create the queue first so that all three start on the same list.
    subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", str(grid), "--max-items", "0"), check=True,
                   capture_output=True, timeout=120)
    procs = [start_worker(root, f"w{k}", log=tmp_path / f"w{k}.log") for k in range(3)]
    codes = [p.wait(timeout=300) for p in procs]
    assert codes == [0, 0, 0]
    report = status_json(root)
    assert report["counts"] == {"pending": 0, "running": 0, "done": 7, "failed": 0}
    for item in report["items"]:
        assert rounds_of(root / "paper_results" / f"{item['id']}.csv") == [1, 2, 3]
        assert item["generation"] == 1  # claimed once, never run twice
    ran = [line for k in range(3) for line in (tmp_path / f"w{k}.log").read_text().splitlines() if line.endswith(": done")]
    assert len(ran) == 7
    assert sum(1 for k in range(3) if ": done" in (tmp_path / f"w{k}.log").read_text()) >= 2  # work was shared


def test_a_second_worker_under_a_name_in_use_on_this_machine_is_refused(tmp_path: Path) -> None:
    """Two live workers of one --name each took the other's claims for their own leftovers: items changed hands without end."""
    root, home = tmp_path / "root", {"FEDSPEC_HOME": str(tmp_path / "home")}
    grid = write_grid(tmp_path / "g.toml", rounds=3, alphas="[0.1, 0.5, 1.0]")
    first = start_worker(root, "lab", grid=grid, log=tmp_path / "first.log", env=home)
    assert wait_for(lambda: (root / "paper_results").is_dir() or checkpoint_round(root, "fedavg_dirichlet_alpha0.1") > 0
                    or checkpoint_round(root, "fedspec_dirichlet_alpha0.1") > 0)
    second = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--name", "lab", *FAST), capture_output=True,
                            text=True, timeout=120, env={**os.environ, **home})
    assert second.returncode == 2
    assert "--name lab: another worker on this machine already runs under this name" in second.stdout + second.stderr
    assert first.wait(timeout=300) == 0
    log = (tmp_path / "first.log").read_text()
    assert "lease-lost" not in log and log.count(": done") == 6
    # Under another name, or in another root, the name is free.
    other = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path / "other"), "--grid", str(grid), "--name", "lab",
                                       "--max-items", "1", *FAST), capture_output=True, text=True, timeout=120,
                           env={**os.environ, **home})
    assert other.returncode == 0, other.stdout + other.stderr


def test_workers_of_one_name_on_two_machines_stop_one_of_them(tmp_path: Path) -> None:
    """A --name copied to a second machine: the worker that sees the other's heartbeats in its file stops, the other finishes."""
    root = tmp_path / "root"
    grid = write_grid(tmp_path / "g.toml", rounds=8, alphas="[0.1, 0.5, 1.0]")
    subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", str(grid), "--max-items", "0"), check=True,
                   capture_output=True, timeout=120)
    # Another FEDSPEC_HOME is another machine: the local lock of the name does not see the other.
    procs = [start_worker(root, "lab", log=tmp_path / f"m{k}.log", env={"FEDSPEC_HOME": str(tmp_path / f"home{k}")})
             for k in range(2)]
    codes = sorted(p.wait(timeout=300) for p in procs)
    logs = [(tmp_path / f"m{k}.log").read_text() for k in range(2)]
    assert codes == [0, 1], logs
    stopped = logs[[p.returncode for p in procs].index(1)]
    assert "another worker named 'lab' is running in this root" in stopped and "give each worker its own --name" in stopped
    report = status_json(root)
    assert report["counts"] == {"pending": 0, "running": 0, "done": 6, "failed": 0}  # nothing failed, nothing left behind
    for item in report["items"]:
        assert rounds_of(root / "paper_results" / f"{item['id']}.csv") == list(range(1, 9))
    assert sum(log.count("lease-lost") for log in logs) <= 4  # it stopped within a few heartbeats


def test_a_machine_that_cannot_load_the_task_leaves_its_items_to_others(tmp_path: Path) -> None:
    """No data (or network, or package) for a task here is not the items' fault: no failed attempt is counted."""
    root = tmp_path / "root"
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\ntask = "sst2-bert"\nmethods = ["fedavg", "fedspec"]\nalphas = [0.5]\ncentralized = false\n'
                    '[experiment]\nclients = 3\nrounds = 2\nmin_client_size = 5\nrank = 2\nmax_rank = 4\n')
    model_dir, data_dir = make_tiny_sst2(tmp_path)
    (tmp_path / "empty").mkdir()
    offline = {"FEDSPEC_SST2_MODEL": str(model_dir), "FEDSPEC_SST2_DATA": str(tmp_path / "empty")}
    p = start_worker(root, "offline", grid=grid, log=tmp_path / "offline.log", env=offline)
    assert p.wait(timeout=120) == 1  # it could run nothing
    log = " ".join((tmp_path / "offline.log").read_text().split())  # rich wraps long lines
    assert log.count("claimed") == 1 and log.count("loading task sst2-bert") == 1  # learnt from the first item
    assert "cannot load sst2-bert (why: above); its items are left to other machines" in log and "no train.jsonl" in log
    report = status_json(root)
    assert report["counts"] == {"pending": 2, "running": 0, "done": 0, "failed": 0}
    assert all(item["attempts"] == 0 for item in report["items"])
    assert any(w.startswith("offline cannot load sst2-bert") for w in report["warnings"])

    # The tokenizer loads but the weights are missing: the model fails only when the run builds it.
    no_weights = tmp_path / "no-weights"
    shutil.copytree(model_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    p = start_worker(root, "noweights", log=tmp_path / "noweights.log",
                     env={"FEDSPEC_SST2_MODEL": str(no_weights), "FEDSPEC_SST2_DATA": str(data_dir)})
    assert p.wait(timeout=120) == 1
    assert "model" in (tmp_path / "noweights.log").read_text() and "could not be loaded" in (tmp_path / "noweights.log").read_text()
    assert all(item["attempts"] == 0 for item in status_json(root)["items"])

    online = {"FEDSPEC_SST2_MODEL": str(model_dir), "FEDSPEC_SST2_DATA": str(data_dir)}
    p = start_worker(root, "online", log=tmp_path / "online.log", env=online)
    assert p.wait(timeout=300) == 0
    log = (tmp_path / "online.log").read_text()
    assert log.count(": done") == 2 and log.count("loading task sst2-bert") == 1  # one load for both items
    report = status_json(root)
    assert report["counts"]["done"] == 2 and report["warnings"] == []


ITEM = "fedspec_dirichlet_alpha0.5"
ROUNDS = 40


@pytest.fixture(scope="module")
def long_grid(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """A one-item grid long enough to interrupt, and its uninterrupted reference rows."""
    folder = tmp_path_factory.mktemp("long")
    grid = write_grid(folder / "g.toml", rounds=ROUNDS, methods='["fedspec"]')
    p = start_worker(folder / "ref", "ref", grid=grid)
    assert p.wait(timeout=300) == 0
    return grid, read_rows(folder / "ref" / "paper_results" / f"{ITEM}.csv")


def test_kill_9_mid_item_peer_reclaims_after_ttl_and_resumes(tmp_path: Path, long_grid) -> None:
    item, (grid, expected) = ITEM, long_grid
    root = tmp_path / "root"
    victim = start_worker(root, "a-victim", grid=grid)
    assert wait_for(lambda: checkpoint_round(root, item) >= 3)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = checkpoint_round(root, item)
    assert killed_at < ROUNDS
    t_kill = time.time()
    peer = start_worker(root, "b-peer", "--wait", log=tmp_path / "peer.log")
    assert peer.wait(timeout=300) == 0
    log = (tmp_path / "peer.log").read_text()
    assert "claimed (generation 2)" in log
    assert f"{item}: resuming after round {killed_at}/{ROUNDS} from its checkpoint" in log
    rows = read_rows(root / "paper_results" / f"{item}.csv")
    assert [int(r["round"]) for r in rows] == list(range(1, ROUNDS + 1))  # no round repeated or lost
    assert rows == expected  # resumed from the checkpoint: identical to an uninterrupted run
    assert time.time() - t_kill >= 2  # it did wait for the lease TTL


def test_sigstopped_holder_is_fenced_after_a_peer_reclaims(tmp_path: Path, long_grid) -> None:
    item, (grid, expected) = ITEM, long_grid
    root = tmp_path / "root"
    sleeper = start_worker(root, "a-sleeper", grid=grid, log=tmp_path / "sleeper.log")
    assert wait_for(lambda: checkpoint_round(root, item) >= 3)
    sleeper.send_signal(signal.SIGSTOP)
    stopped_at = checkpoint_round(root, item)
    peer = start_worker(root, "b-peer", "--wait", log=tmp_path / "peer.log")
    assert wait_for(lambda: checkpoint_round(root, item) > stopped_at + 2, timeout=120)  # the peer has taken over
    sleeper.send_signal(signal.SIGCONT)
    assert sleeper.wait(timeout=120) == 0
    assert peer.wait(timeout=300) == 0
    assert "lease-lost" in (tmp_path / "sleeper.log").read_text()
    rows = read_rows(root / "paper_results" / f"{item}.csv")
    assert rows == expected and [int(r["round"]) for r in rows] == list(range(1, 41))


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_releases_the_item_for_a_peer_without_waiting(tmp_path: Path, long_grid, sig, code) -> None:
    item, (grid, _) = ITEM, long_grid
    root = tmp_path / "root"
    first = start_worker(root, "a-first", "--lease-ttl", "600", "--heartbeat", "1", grid=grid, log=tmp_path / "first.log")
    assert wait_for(lambda: checkpoint_round(root, item) >= 2)
    first.send_signal(sig)
    assert first.wait(timeout=60) == code
    assert (tmp_path / "first.log").read_text().splitlines()[-1] == f"worker a-first: 1 released; stopped (exit {code})"
    report = status_json(root)
    (st,) = report["items"]
    assert st["state"] == "pending" and st["attempts"] == 0
    t0 = time.time()
    peer = start_worker(root, "b-peer", "--lease-ttl", "600", "--heartbeat", "1")
    assert peer.wait(timeout=300) == 0
    assert time.time() - t0 < 120  # far less than the 600 s TTL
    assert rounds_of(root / "paper_results" / f"{item}.csv") == list(range(1, 41))


def test_a_stop_while_the_task_loads_hands_the_item_back_before_any_round(tmp_path: Path) -> None:
    """Ctrl-C while SST-2 loads (minutes for the real one): the worker waited for the load and then a whole round."""
    model_dir, data_dir = make_tiny_sst2(tmp_path)
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\ntask = "sst2-bert"\nmethods = ["fedavg"]\nalphas = [0.5]\ncentralized = false\n'
                    "[experiment]\nclients = 3\nrounds = 2\nmin_client_size = 5\nrank = 2\nmax_rank = 4\n")
    root = tmp_path / "root"
    env = {**os.environ, "FEDSPEC_SST2_MODEL": str(model_dir), "FEDSPEC_SST2_DATA": str(data_dir), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(fedspec_cmd("worker", "--root", str(root), "--grid", str(grid), "--name", "w"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        assert wait_for(lambda: any(line.startswith("loading task sst2-bert") for line in lines), timeout=120), lines
        proc.send_signal(signal.SIGINT)  # the tiny task takes seconds to load (transformers, datasets, peft)
        assert proc.wait(timeout=120) == 130
    finally:
        proc.kill()
    reader.join(timeout=10)
    assert not any(" round 1/2 " in line for line in lines), lines
    assert lines[-1].rstrip() == "worker w: 1 released; stopped (exit 130)", lines
    assert not (root / "checkpoints_distributed" / "fedavg_dirichlet_alpha0.5" / "checkpoint.safetensors").exists()
    (st,) = status_json(root)["items"]
    assert st["state"] == "pending" and st["attempts"] == 0


def test_a_round_in_flight_shows_its_progress_on_the_terminal_and_in_status(tmp_path: Path) -> None:
    """A text round takes minutes: the worker's terminal shows a bar for it, and its heartbeat the share trained."""
    import os
    import pty

    grid = tmp_path / "g.toml"  # clients one by one, 10 epochs: rounds of a few seconds, reported step by step
    grid.write_text('[grid]\nmethods = ["fedavg"]\nalphas = [0.5]\n[experiment]\nclients = 4\nrounds = 2\n'
                    'min_client_size = 5\nlocal_epochs = 10\nparallel_clients = "off"\n')
    root = tmp_path / "root"
    primary, secondary = pty.openpty()  # a terminal, as a researcher runs it (pipes and log files get no bar)
    proc = subprocess.Popen(fedspec_cmd("worker", "--root", str(root), "--grid", str(grid), "--name", "tty", "--lease-ttl", "2",
                                        "--heartbeat", "0.2"), stdin=secondary, stdout=secondary, stderr=secondary,
                            env={**os.environ, "COLUMNS": "120"})
    os.close(secondary)
    shares: list[float] = []

    def mid_round() -> bool:
        for w in status_json(root).get("workers", []) if (root / "distributed_work").exists() else []:
            if w["round_progress"] is not None:
                shares.append(w["round_progress"])
        return any(0 < s < 1 for s in shares)

    chunks: list[bytes] = []
    reader = threading.Thread(target=read_terminal, args=(primary, chunks), daemon=True)
    reader.start()
    try:
        assert wait_for(mid_round, timeout=60, step=0.1), shares
        assert proc.wait(timeout=60) == 0
        reader.join(timeout=10)
    finally:
        proc.kill()
        os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert "fedavg_dirichlet_alpha0.5 round 1/2" in screen and "left in the round" in screen, screen[-2000:]
    assert "fedavg_dirichlet_alpha0.5 round 2/2  acc" in screen  # the round's line still comes


@pytest.mark.skipif(not hasattr(os, "fork"), reason="RLIMIT_FSIZE needs a POSIX system")
def test_a_disk_that_refuses_the_checkpoint_hands_the_item_back_and_stops_the_worker(tmp_path: Path) -> None:
    """A full disk is the machine's fault: before, the worker failed every item of the grid in turn, attempt after attempt.

    The worker runs with a 4 kB limit on the size of a file it writes: its claim
    and heartbeat records fit, a checkpoint does not (as on a nearly full disk).
    """
    import resource

    root = tmp_path / "root"
    grid = write_grid(tmp_path / "g.toml", rounds=2, alphas="[0.5, 1.0]", methods='["fedavg"]')
    subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", str(grid), "--max-items", "0"), check=True,
                   capture_output=True, timeout=120)

    def small_files_only() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    full = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--name", "full", *FAST), capture_output=True, text=True,
                          timeout=120, preexec_fn=small_files_only)
    assert full.returncode == 1, full.stdout + full.stderr
    assert "Traceback" not in full.stdout + full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "checkpoint.safetensors: File too large" in last and "handed back" in last, last
    assert full.stderr.count(": claimed ") == 1  # it stopped after the first item
    report = status_json(root)
    assert report["counts"] == {"pending": 2, "running": 0, "done": 0, "failed": 0}
    assert [item["attempts"] for item in report["items"]] == [0, 0]

    fine = start_worker(root, "fine")
    assert fine.wait(timeout=120) == 0
    assert status_json(root)["counts"]["done"] == 2


def test_a_shared_folder_that_goes_away_stops_a_worker_or_is_waited_for_with_wait(tmp_path: Path) -> None:
    """A share that unmounts mid-item (macOS does that to a dropped SMB share): no phantom root, no failed attempt.

    The root is renamed away while a real worker trains, as an unmount looks
    to it.  Without --wait the worker stops with one line and does not
    recreate the root's folders on the local disk; with --wait it waits for
    the folder and, once back, takes its item up again from the checkpoint.
    """
    root, away = tmp_path / "share", tmp_path / "away"
    grid = write_grid(tmp_path / "g.toml", rounds=60, methods='["fedavg"]')
    first = start_worker(root, "w1", grid=grid, log=tmp_path / "w1.log")
    assert wait_for(lambda: "round 2/60" in (tmp_path / "w1.log").read_text(), timeout=120)
    root.rename(away)
    assert first.wait(timeout=120) == 1
    log = (tmp_path / "w1.log").read_text()
    last = " ".join(log.split("error: ")[-1].split())  # rich wraps the line
    assert f"({root} is gone)" in last and "could not be handed back yet (no attempt counted)" in last, log
    assert last.endswith("reconnect the folder, then start the worker again (with --wait it waits for the folder instead)")
    assert "Traceback" not in log
    assert not root.exists()  # before, heartbeats and claims recreated it, empty, on the local disk

    away.rename(root)
    second = start_worker(root, "w2", "--wait", log=tmp_path / "w2.log")
    assert wait_for(lambda: "round 20/60" in (tmp_path / "w2.log").read_text(), timeout=120)
    root.rename(away)
    assert wait_for(lambda: "waiting for the shared folder" in (tmp_path / "w2.log").read_text(), timeout=60)
    time.sleep(1.0)
    assert second.poll() is None  # still waiting
    assert not root.exists()
    away.rename(root)
    assert second.wait(timeout=180) == 0
    log = " ".join((tmp_path / "w2.log").read_text().split())
    assert log.count("waiting for the shared folder") == 1 and "the shared folder is reachable again" in log, log
    assert log.count("resuming after round") == 2  # w1's checkpoint, then its own
    assert "Traceback" not in log
    report = status_json(root)
    assert report["counts"] == {"pending": 0, "running": 0, "done": 1, "failed": 0}
    assert [item["attempts"] for item in report["items"]] == [0]
    assert rounds_of(root / "paper_results" / "fedavg_dirichlet_alpha0.5.csv") == list(range(1, 61))


def test_rerun_moves_a_done_result_aside_and_a_worker_runs_the_item_again_from_round_1(tmp_path: Path) -> None:
    """`retry` of a done item only said which two paths to delete by hand; the item then read "running (stale)", its
    holder moved on, until a worker's grace ran out.  `--rerun` keeps the result aside and makes the item pending."""
    root, item = tmp_path / "root", "fedavg_dirichlet_alpha0.5"
    grid = write_grid(tmp_path / "g.toml", rounds=2, methods='["fedavg"]')
    first = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--name", "a", *FAST, "--grid", str(grid)),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    csv, ckpt = root / "paper_results" / f"{item}.csv", root / "checkpoints_distributed" / item / "checkpoint.safetensors"
    result, checkpoint = csv.read_bytes(), ckpt.read_bytes()

    res = subprocess.run(fedspec_cmd("retry", item, "--rerun", "--root", str(root), "--name", "me"), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    (aside,) = (root / "replaced").iterdir()
    assert f"moved the results and checkpoints of {item} to {aside}" in res.stdout.replace("\n", "")
    assert (aside / "paper_results" / f"{item}.csv").read_bytes() == result and not csv.exists()
    assert (aside / "checkpoints_distributed" / item / "checkpoint.safetensors").read_bytes() == checkpoint
    assert not ckpt.exists()
    report = status_json(root)
    assert report["counts"]["pending"] == 1 and not report["warnings"], report  # not "running", its holder gone

    again = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--name", "b", *FAST), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and f"{item}: claimed (generation 2) by b" in again.stderr, again.stderr
    assert "resuming" not in again.stderr and rounds_of(csv) == [1, 2]
    timing = slice(None, -2)  # round_seconds, device: the rest of a row is the same, bit for bit
    assert [r.split(",")[timing] for r in csv.read_text().splitlines()] == \
        [r.split(",")[timing] for r in result.decode().splitlines()]

    csv.unlink()  # the old way, by hand: the checkpoint left behind would end the item at once, from its last round
    res = subprocess.run(fedspec_cmd("retry", item, "--rerun", "--root", str(root), "--name", "me"), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and not ckpt.exists() and len(list((root / "replaced").iterdir())) == 2, res.stdout
    assert status_json(root)["counts"]["pending"] == 1
