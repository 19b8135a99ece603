"""`fedspec run` as a user sees it: clear one-line errors, no traceback, nothing overwritten."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import fedspec_cmd, read_terminal


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(fedspec_cmd(*args), capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--method", "fedprox"], "method: got 'fedprox', allowed"),
        (["--task", "mnist"], "task: got 'mnist'"),
        (["--clients", "0"], "clients: Input should be greater than or equal to 1"),
        (["--rank", "8", "--max-rank", "4"], "max_rank (4) must be >= rank (8)"),
        (["--device", "cuda"], "device: 'cuda' was requested but CUDA is not available"),
        (["--name", "../escape"], "is not a valid item id"),
        (["--name", ""], "--name: '' is not a valid item id"),  # was taken for no --name: the default name
        (["--clients", "500"], "min_client_size: 500 clients"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], expected: str) -> None:
    import torch

    if args == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run_cli("run", "--rounds", "1", "--root", str(tmp_path), *args)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert not list((tmp_path / "paper_results").glob("*.csv")) if (tmp_path / "paper_results").exists() else True


def test_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("keep me")
    res = run_cli("run", "--root", str(f))
    assert res.returncode != 0 and "must be a folder" in res.stderr and "Traceback" not in res.stderr
    assert f.read_text() == "keep me"


def test_run_then_rerun_is_done_and_other_spec_is_refused(tmp_path: Path) -> None:
    args = ["run", "--rounds", "2", "--clients", "3", "--max-train-samples", "300", "--root", str(tmp_path)]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    csv = tmp_path / "paper_results" / "fedspec_dirichlet_alpha0.5.csv"
    assert "final accuracy" in first.stdout and csv.exists()
    before = csv.read_bytes()
    again = run_cli(*args)
    assert again.returncode == 0 and "already done" in again.stdout
    other = run_cli(*args[:-2], "--rounds", "3", "--root", str(tmp_path))
    assert other.returncode != 0 and "different spec" in other.stderr and "Traceback" not in other.stderr
    assert "different spec (rounds 2 -> 3)" in other.stderr  # which option changed, not two hashes
    assert csv.read_bytes() == before
    # `status` there said "not a fedspec root", of the folder a run had just filled.
    status = run_cli("status", "--root", str(tmp_path))
    assert status.returncode == 2 and status.stderr.splitlines() == [
        f"error: {tmp_path}: no queue here (no distributed_work/work_queue.json), only what `fedspec run` writes "
        "(1 result, 1 checkpoint): `fedspec plots` draws them, a run shows its own progress, and "
        "`fedspec worker --grid FILE` makes a queue here"]


def test_help_explains_every_option() -> None:
    res = run_cli("run", "--help")
    assert res.returncode == 0
    for opt in ("--task", "--method", "--alpha", "--clients", "--rounds", "--seed", "--root", "--device", "--max-rank"):
        assert opt in res.stdout


@pytest.mark.parametrize("sig, code, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_stop_signal_says_which_round_is_checkpointed(tmp_path: Path, sig: str, code: int, word: str) -> None:
    import re
    import signal
    import time

    from fedspec.checkpoint_file import read_header

    args = ["run", "--rounds", "5000", "--clients", "3", "--max-train-samples", "300", "--root", str(tmp_path)]
    proc = subprocess.Popen(fedspec_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "checkpoints_distributed" / "fedspec_dirichlet_alpha0.5"
    deadline = time.monotonic() + 120
    while not (folder / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    try:
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()  # never leave a 5000-round run behind when the test fails
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    said = re.search(rf"{word}; round (\d+) of 5000 is checkpointed, run the same command to resume", stdout.replace("\n", " "))
    assert said, stdout
    assert int(said.group(1)) == read_header(folder)["round"] >= 1
    assert not (tmp_path / "paper_results" / "fedspec_dirichlet_alpha0.5.csv").exists()


def test_a_root_that_vanishes_mid_run_says_which_round_is_checkpointed_and_how_to_resume(tmp_path: Path) -> None:
    """An unmounted share stopped `fedspec run` with a bare `…/share: No such file or directory`."""
    import re
    import time

    from fedspec.checkpoint_file import read_header

    root, away = tmp_path / "share", tmp_path / "away"
    args = ["run", "--rounds", "5000", "--clients", "3", "--max-train-samples", "300", "--root", str(root)]
    proc = subprocess.Popen(fedspec_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    item = "fedspec_dirichlet_alpha0.5"
    deadline = time.monotonic() + 120
    while not (root / "checkpoints_distributed" / item / "checkpoint.safetensors").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    try:
        root.rename(away)  # as an unmount looks to a process
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    # The file named is whichever the run was writing when the folder went: the root itself or one under it.
    said = re.fullmatch(rf"error: {re.escape(str(root))}(/\S+)?: No such file or directory \({re.escape(str(root))} is gone\); "
                        rf"{item} stopped with round (\d+) of 5000 checkpointed: reconnect the folder, then run the same "
                        r"command to resume", last)
    assert said, stderr
    assert int(said.group(2)) == read_header(away / "checkpoints_distributed" / item)["round"] >= 1
    assert not root.exists()  # nothing recreated in the share's place


def test_the_advice_to_run_a_done_item_again_runs_it_from_round_1(tmp_path: Path) -> None:
    import re
    import shutil

    args = ["run", "--rounds", "2", "--clients", "3", "--max-train-samples", "300", "--root", str(tmp_path)]
    assert run_cli(*args).returncode == 0
    again = run_cli(*args)
    advice = re.search(r"to run it again from round 1, delete it and (\S+)\)", again.stdout.replace("\n", ""))
    assert again.returncode == 0 and advice, again.stdout
    (tmp_path / "paper_results" / "fedspec_dirichlet_alpha0.5.csv").unlink()
    shutil.rmtree(advice.group(1))
    third = run_cli(*args)
    assert third.returncode == 0 and "2 rounds on cpu;" in third.stdout and "resumed" not in third.stdout, third.stdout


def test_a_run_piped_to_a_log_says_each_round_as_it_ends_and_a_terminal_gets_a_bar(tmp_path: Path) -> None:
    """`nohup fedspec run > run.log`: before, a live bar that only a terminal draws left the log empty until the end."""
    import os
    import pty
    import signal
    import threading
    import time

    args = ["run", "--rounds", "5000", "--clients", "3", "--max-train-samples", "300", "--root", str(tmp_path / "piped")]
    proc = subprocess.Popen(fedspec_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 90
    try:
        while not any(" round 3/5000  acc " in line for line in lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        running = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        proc.kill()
    assert running and lines[0] == "fedspec_dirichlet_alpha0.5: 5000 rounds to train\n", lines[:5]
    assert lines[1].startswith("  fedspec_dirichlet_alpha0.5 round 1/5000  acc 0.") and lines[1].endswith("s\n"), lines[:5]
    assert "━" not in "".join(lines)

    primary, secondary = pty.openpty()  # a terminal, as a researcher runs it by hand
    args[-1] = str(tmp_path / "tty")
    proc = subprocess.Popen(fedspec_cmd(*args[:2], "3", *args[3:]), stdin=secondary, stdout=secondary, stderr=secondary,
                            env={**os.environ, "COLUMNS": "120"})
    os.close(secondary)
    chunks: list[bytes] = []
    read_terminal(primary, chunks)
    os.close(primary)
    assert proc.wait(timeout=60) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "━" in screen and "3/3" in screen and " round 1/3 " not in screen, screen[-1000:]


def test_a_run_and_a_grid_under_one_name_must_agree_on_settings(tmp_path: Path) -> None:
    """`fedspec run`'s default names are a grid's item names: a worker counts an item whose CSV exists as done."""
    grid = str(Path(__file__).resolve().parents[2] / "experiments" / "quick.toml")
    ran = run_cli("run", "--method", "fedavg", "--rounds", "2", "--clients", "3", "--root", str(tmp_path))
    assert ran.returncode == 0, ran.stderr
    added = run_cli("worker", "--grid", grid, "--max-items", "0", "--root", str(tmp_path))
    assert added.returncode == 2 and "Traceback" not in added.stderr
    assert added.stderr.splitlines() == [
        f"error: {grid}: item 'fedavg_dirichlet_alpha0.5' already has a checkpoint and result of other settings "
        f"(clients 3 -> 5, rounds 2 -> 10) in {tmp_path}, e.g. from `fedspec run`; a worker would take that for this grid's "
        "result: move checkpoints_distributed/fedavg_dirichlet_alpha0.5 and paper_results/fedavg_dirichlet_alpha0.5.csv "
        "away, or give this grid its own --root"]
    assert not (tmp_path / "distributed_work" / "work_queue.json").exists()

    # The other way round: the grid first, then a run of other settings under one of its items' names.
    (tmp_path / "paper_results").rename(tmp_path / "runs")
    (tmp_path / "checkpoints_distributed").rename(tmp_path / "runs_checkpoints")
    assert run_cli("worker", "--grid", grid, "--max-items", "0", "--root", str(tmp_path)).returncode == 0
    again = run_cli("run", "--method", "fedavg", "--rounds", "2", "--clients", "3", "--root", str(tmp_path))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.splitlines() == [
        f"error: {tmp_path}/distributed_work/work_queue.json: item 'fedavg_dirichlet_alpha0.5' is queued with other "
        "settings (clients 5 -> 3, rounds 10 -> 2), and a worker would take this run's result for that item's: pass another "
        "--name, or another --root"]
    assert not list((tmp_path / "paper_results").iterdir()) and not list((tmp_path / "checkpoints_distributed").iterdir())
    # Under another name, or with the item's own settings, it runs.
    other = run_cli("run", "--method", "fedavg", "--rounds", "2", "--clients", "3", "--name", "trial", "--root", str(tmp_path))
    assert other.returncode == 0, other.stderr
    own = run_cli("run", "--method", "fedavg", "--rounds", "10", "--clients", "5", "--root", str(tmp_path))
    assert own.returncode == 0 and (tmp_path / "paper_results" / "fedavg_dirichlet_alpha0.5.csv").exists(), own.stderr


def test_names_that_differ_in_case_only_are_refused_as_macos_and_windows_take_them_for_one(tmp_path: Path) -> None:
    """On a Mac's or a Windows root `Trial.csv` and `trial.csv` are one file: a run or a grid item under the other
    name would resume, or count as done, from another experiment's files; on Linux a sync client renames one."""
    grid = str(Path(__file__).resolve().parents[2] / "experiments" / "quick.toml")
    small = ["--rounds", "2", "--clients", "3", "--root", str(tmp_path)]
    assert run_cli("run", "--method", "fedavg", "--name", "FEDAVG_dirichlet_alpha0.5", *small).returncode == 0
    held = "paper_results/FEDAVG_dirichlet_alpha0.5.csv and checkpoints_distributed/FEDAVG_dirichlet_alpha0.5"

    again = run_cli("run", "--method", "fedavg", "--name", "fedavg_dirichlet_alpha0.5", *small)
    assert again.returncode == 2 and again.stderr.splitlines() == [
        f"error: --name 'fedavg_dirichlet_alpha0.5': {tmp_path} holds {held}, which macOS and Windows take for this "
        "name's (they differ in case only): pass --name FEDAVG_dirichlet_alpha0.5 to go on with them, or another name"]
    added = run_cli("worker", "--grid", grid, "--max-items", "0", "--root", str(tmp_path))
    assert added.returncode == 2 and added.stderr.splitlines() == [
        f"error: {grid}: item 'fedavg_dirichlet_alpha0.5': {tmp_path} holds {held}, which macOS and Windows take for this "
        "item's (they differ in case only), e.g. from `fedspec run --name`: move them away, or give this grid its own --root"]
    assert sorted(p.name for p in (tmp_path / "paper_results").iterdir()) == ["FEDAVG_dirichlet_alpha0.5.csv"]
    assert not (tmp_path / "distributed_work" / "work_queue.json").exists()

    # The grid first: a run under one of its items' names in another case.
    queued = tmp_path / "queued"
    assert run_cli("worker", "--grid", grid, "--max-items", "0", "--root", str(queued)).returncode == 0
    twin = run_cli("run", "--method", "fedavg", "--name", "FedAvg_dirichlet_alpha0.5", "--rounds", "2", "--root", str(queued))
    assert twin.returncode == 2 and twin.stderr.splitlines() == [
        "error: --name 'FedAvg_dirichlet_alpha0.5': queued item 'fedavg_dirichlet_alpha0.5' differs from it in case only, "
        "which macOS and Windows do not tell apart: pass --name fedavg_dirichlet_alpha0.5 (with that item's settings), "
        "or another name"]
    assert not list((queued / "paper_results").iterdir()) and not list((queued / "checkpoints_distributed").iterdir())
