"""Command-line mistakes: one line on stderr, exit 2, no traceback, nothing written to the root."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, fedspec_cmd

GRID = str(REPO / "experiments" / "quick.toml")


@pytest.mark.parametrize(
    "args, expected",
    [  # typer's wording of a range error changes between versions: the option's name is what must be there
        (["worker", "--grid", GRID, "--poll", "-5", "--wait"], "'--poll'"),
        (["worker", "--grid", GRID, "--poll", "0", "--wait"], "'--poll'"),
        (["worker", "--grid", GRID, "--settle", "-3"], "'--settle'"),
        (["worker", "--grid", GRID, "--max-items", "-1"], "'--max-items'"),
        (["worker", "--grid", GRID, "--threads", "-2"], "'--threads'"),
        (["worker", "--grid", GRID, "--heartbeat", "400"], "--lease-ttl (600.0) must be positive and at least twice --heartbeat (400.0)"),
        (["worker", "--grid", GRID, "--lease-ttl", "nan"], "--lease-ttl (nan) must be positive"),
        (["worker", "--grid", GRID, "--bogus"], "No such option: --bogus"),
        (["status", "--watch", "-1"], "'--watch'"),
        (["status", "extra"], "unexpected extra argument"),
        (["run", "--rounds", "abc"], "'--rounds'"),
        # fedspec's own checks of run's settings name the option as typed, not the spec's field
        (["run", "--task", "mnist"], "error: --task: got 'mnist', allowed: 'digits', 'tweets-minilm' or 'sst2-bert'"),
        (["run", "--client-fraction", "2"], "error: --client-fraction: Input should be less than or equal to 1 (got 2.0)"),
        (["run", "--rank", "8", "--max-rank", "4"], "error: max_rank (4) must be >= rank (8)"),
    ],
)
def test_bad_option_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], expected: str) -> None:
    res = subprocess.run(fedspec_cmd(*args, "--root", str(tmp_path)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], res.stderr
    assert list(tmp_path.iterdir()) == []  # the grid was not added: the queue does not exist


def test_no_command_prints_the_help() -> None:
    res = subprocess.run(fedspec_cmd(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Usage: fedspec" in res.stdout + res.stderr and "worker" in res.stdout + res.stderr
    assert "error:" not in res.stderr and "Traceback" not in res.stderr


def test_help_of_a_command_exits_0() -> None:
    res = subprocess.run(fedspec_cmd("worker", "--help"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--poll" in res.stdout and "--lease-ttl" in res.stdout and res.stderr == ""


def test_version_is_printed() -> None:
    from fedspec import __version__

    res = subprocess.run(fedspec_cmd("--version"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"fedspec {__version__}" and res.stderr == ""


def test_a_path_with_brackets_is_printed_whole(tmp_path: Path) -> None:
    """Rich reads `[work]` as a style tag: `Dropbox [work]` lost its bracket in every message that named the folder."""
    root = tmp_path / "Dropbox [work]" / "fedspec"
    root.mkdir(parents=True)
    res = subprocess.run(fedspec_cmd("status", "--root", str(root)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith(f"error: {root}: not a fedspec root"), res.stderr
    res = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", GRID, "--max-items", "0"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"queue {root / 'distributed_work' / 'work_queue.json'}: 7 new item(s)" in res.stdout
    res = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--max-items", "1", "--settle", "0"),  # "Dropbox" in the path: 60 s
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"root {root} (lease TTL" in res.stderr.replace("\n", "")


def test_a_workers_lines_in_a_log_are_whole_however_long(tmp_path: Path) -> None:
    """Into a log, rich cut lines at 80 columns, paths included: grep and copy-paste of a path failed."""
    root = tmp_path / ("a-long-folder-name-as-cloud-drives-make-them" * 2) / "fedspec"
    root.parent.mkdir()
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nmethods = ["fedavg"]\nalphas = [0.5]\ncentralized = false\n'
                    '[experiment]\nclients = 3\nrounds = 1\nmin_client_size = 5\n')
    res = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", str(grid), "--name", "w"), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert any(line.startswith(f"worker w on cpu, root {root} (lease TTL") for line in res.stderr.splitlines()), res.stderr
    assert "claim written" not in res.stderr  # no settle window on a local folder: nothing to say before the claim


def test_a_log_in_a_code_page_without_the_roots_letters_gets_them_escaped(tmp_path: Path) -> None:
    """Windows writes a redirected stdout in its ANSI code page (cp1252 …): a root under a folder named in Chinese
    stopped the worker with a UnicodeEncodeError traceback at its first line."""
    import os

    root = tmp_path / "漢字" / "fedspec"
    root.parent.mkdir()
    res = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", GRID, "--max-items", "0"), capture_output=True,
                         env={**os.environ, "PYTHONIOENCODING": "cp1252"}, timeout=120)
    assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr.decode("cp1252")
    queue = str(root / "distributed_work" / "work_queue.json").replace("漢字", "\\u6f22\\u5b57")
    assert f"queue {queue}: 7 new item(s)".encode("cp1252") in res.stdout, res.stdout


def test_a_settle_window_is_said_before_it_is_waited_out(tmp_path: Path) -> None:
    """On a sync folder a claim waits a minute before it is trusted; the worker printed nothing meanwhile, and looked hung."""
    grid = tmp_path / "g.toml"
    grid.write_text('[grid]\nmethods = ["fedavg"]\nalphas = [0.5]\ncentralized = false\n'
                    '[experiment]\nclients = 3\nrounds = 1\nmin_client_size = 5\n')
    res = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path / "root"), "--grid", str(grid), "--name", "w", "--settle", "5"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    said = lines.index("fedavg_dirichlet_alpha0.5: claim written (generation 1); trusting it in 5s, "
                       "once a peer's claim of it would have synced (--settle)")
    assert lines[said + 1] == "fedavg_dirichlet_alpha0.5: claimed (generation 1) by w on cpu"


def test_joining_a_queue_at_a_missing_root_creates_nothing(tmp_path: Path) -> None:
    """Without --grid the worker joins a queue, so a missing root is a share not mounted yet: it made an empty folder there."""
    mount_point = tmp_path / "mnt"
    mount_point.mkdir()
    root = mount_point / "share" / "fedspec"
    for extra in ([], ["--wait"]):
        res = subprocess.run(fedspec_cmd("worker", "--root", str(root), *extra), capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stderr
        assert res.stderr.strip().splitlines() == [
            f"error: {root}: no such folder (is the shared folder mounted?); to start a new queue there, pass --grid FILE"]
        assert list(mount_point.iterdir()) == []


@pytest.mark.parametrize("command", [["worker", "--grid", GRID], ["run", "--rounds", "1"]])
def test_a_root_whose_parent_is_missing_is_refused_not_made(tmp_path: Path, command: list[str]) -> None:
    """A mistyped --root or a share that is not there (~/Dropbox where it syncs elsewhere) became a private folder tree
    that no other machine saw, and the grid was trained into it unnoticed; the root itself is still created."""
    root = tmp_path / "Dropbox" / "fedspec"
    res = subprocess.run(fedspec_cmd(*command, "--root", str(root)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        f"error: {root}: parent folder {root.parent} does not exist (a typo, or a shared folder not mounted?); "
        "create it first to start a root there"]
    assert list(tmp_path.iterdir()) == []
    root.parent.write_text("keep me")  # a file where the parent folder should be: said so, not "does not exist"
    res = subprocess.run(fedspec_cmd(*command, "--root", str(root)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [f"error: {root}: {root.parent} is a file, not a folder"]
    assert root.parent.read_text() == "keep me"
    root.parent.unlink()
    root.parent.mkdir()
    res = subprocess.run(fedspec_cmd(*command, "--root", str(root), "--max-items" if command[0] == "worker" else "--clients",
                                     "0" if command[0] == "worker" else "2"), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (root / ("distributed_work" if command[0] == "worker" else "paper_results")).is_dir()


def test_adding_a_grid_only_starts_no_worker(tmp_path: Path) -> None:
    """`--max-items 0` left a heartbeat behind: `fedspec status` listed a "stopped" worker that never ran anything."""
    res = subprocess.run(fedspec_cmd("worker", "--root", str(tmp_path), "--grid", GRID, "--max-items", "0"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert res.stdout.startswith(f"queue {tmp_path / 'distributed_work' / 'work_queue.json'}: 7 new item(s)")
    heartbeats = tmp_path / "distributed_work" / "heartbeats"
    assert not heartbeats.exists() or list(heartbeats.iterdir()) == []


def test_seeds_are_added_to_a_root_by_listing_them_all(tmp_path: Path) -> None:
    """A grid names its items `_seed42` only with several seeds: quick.toml again with seeds 42 and 43 named
    quick's seed-42 experiments anew, and each ran twice and counted twice among the seeds of the figures."""
    queue = tmp_path / "distributed_work" / "work_queue.json"
    text = Path(GRID).read_text()
    assert "seeds = [42]" in text
    (tmp_path / "s43.toml").write_text(text.replace("seeds = [42]", "seeds = [43]"))
    (tmp_path / "both.toml").write_text(text.replace("seeds = [42]", "seeds = [42, 43]"))

    def add(grid: str, root: Path = tmp_path) -> subprocess.CompletedProcess:
        return subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", grid, "--max-items", "0"),
                              capture_output=True, text=True, timeout=120)

    assert add(GRID).returncode == 0
    before = queue.read_bytes()
    alone = add(str(tmp_path / "s43.toml"))
    assert alone.returncode == 2 and alone.stderr.splitlines() == [
        f"error: {tmp_path / 's43.toml'}: item 'fedavg_dirichlet_alpha0.1' is already in the queue with a different spec "
        "(seed 42 -> 43); to add seeds to this root, list them all in one grid (seeds = [42, 43]): the items already "
        "there keep their names and results"]
    assert queue.read_bytes() == before
    both = add(str(tmp_path / "both.toml"))
    assert both.returncode == 0, both.stderr
    assert both.stdout.split(": ", 1)[1] == (
        f"7 new item(s) from {tmp_path / 'both.toml'}, 7 already there (7 of them under another name, e.g. "
        "fedavg_dirichlet_alpha0.1_seed42 as fedavg_dirichlet_alpha0.1)\n")
    ids = [i["id"] for i in json.loads(queue.read_text())["items"]]
    assert len(ids) == 14 and not any(i.endswith("_seed42") for i in ids) and sum(i.endswith("_seed43") for i in ids) == 7
    again = add(GRID)
    assert again.returncode == 0 and " 0 new item(s)" in again.stdout and len(json.loads(queue.read_text())["items"]) == 14
    # The other order: quick.toml after the two-seed grid names nothing new.
    other = tmp_path / "other"
    assert add(str(tmp_path / "both.toml"), other).returncode == 0
    late = add(GRID, other)
    assert late.returncode == 0 and late.stdout.endswith(
        "0 new item(s) from " + GRID + ", 7 already there (7 of them under another name, e.g. fedavg_dirichlet_alpha0.1 as "
        "fedavg_dirichlet_alpha0.1_seed42)\n")


def test_a_grid_whose_clients_the_data_cannot_supply_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    """Such a grid was queued and each item failed three times; the grid, once corrected, was refused because its
    items' names were queued with other settings, so the root had to be abandoned."""
    root = tmp_path / "root"
    crowded = tmp_path / "crowded.toml"
    crowded.write_text(Path(GRID).read_text().replace("clients = 5", "clients = 200"))
    res = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", str(crowded)), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and res.stderr.splitlines() == [
        f"error: {crowded}: item 'fedavg_dirichlet_alpha0.1': min_client_size: 200 clients × 10 samples exceeds the "
        "1294 training samples; lower clients or min_client_size"], res.stderr
    assert not root.exists()
    fixed = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", GRID, "--max-items", "0"),
                           capture_output=True, text=True, timeout=120)
    assert fixed.returncode == 0 and "7 new item(s)" in fixed.stdout, fixed.stderr


def test_a_run_whose_clients_the_data_cannot_supply_makes_no_root(tmp_path: Path) -> None:
    """The root was made, and "1 rounds to train" printed, before the split failed inside the engine."""
    root = tmp_path / "root"
    res = subprocess.run(fedspec_cmd("run", "--clients", "400", "--rounds", "1", "--root", str(root)), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == "" and res.stderr.splitlines() == [
        "error: fedspec run: item 'fedspec_dirichlet_alpha0.5': min_client_size: 400 clients × 10 samples exceeds the "
        "1294 training samples; lower clients or min_client_size"], res.stdout + res.stderr
    assert not root.exists()


@pytest.mark.parametrize("command", [["status"], ["status", "--watch", "1"], ["retry", "--failed"], ["plots"]])
def test_a_missing_root_is_named_as_missing_and_a_relative_one_in_full(tmp_path: Path, command: list[str]) -> None:
    """`status` in a folder that is not there said "not a fedspec root … create the queue", and `plots` "no results
    yet"; `--root .` was named "." in the error, which says nothing when the shell is elsewhere than thought."""
    gone = tmp_path / "Dropbox" / "fedspec"
    res = subprocess.run(fedspec_cmd(*command, "--root", str(gone)), capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.splitlines() == [f"error: {gone}: no such folder (a typo, or a shared folder not mounted?)"]
    assert not gone.parent.exists()
    if command[0] != "plots":
        res = subprocess.run(fedspec_cmd(*command, "--root", "."), capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert res.returncode == 2 and res.stderr.startswith(f"error: {tmp_path}: not a fedspec root"), res.stderr


@pytest.mark.parametrize("name", ["a b", ""])
def test_a_worker_name_that_is_refused_adds_no_grid(tmp_path: Path, name: str) -> None:
    """The name was checked after the grid was queued: the command failed, yet the root and its queue were made.
    An empty --name (an unset variable in a script: --name "$NAME") was taken for no --name: the machine's default."""
    root = tmp_path / "root"
    res = subprocess.run(fedspec_cmd("worker", "--root", str(root), "--grid", GRID, "--name", name), capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == "" and f"--name: {name!r} is not a valid worker name" in res.stderr, res.stderr
    assert not root.exists()
