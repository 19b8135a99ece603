"""`fedspec status` in a narrow terminal: long item ids and worker names wrap, none loses its end to an ellipsis."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from fedspec.cli.status import render
from fedspec.queue.status import ItemStatus, StatusReport, WorkerStatus

IDS = ["fedspec_dirichlet_alpha0.1_seed43", "fedspec_dirichlet_alpha0.5_seed43", "fedavg_iid_seed44", "centralized"]


def report() -> StatusReport:
    items = [
        ItemStatus(IDS[0], "running", 12, 50, "macbook-pro-of-a-researcher", 1, "RuntimeError: [a] b", 3, 0.8123, 14.0, stale=True),
        ItemStatus(IDS[1], "failed", 3, 50, None, 3, "CheckpointError: torn or foreign checkpoint (no fedspec header)", 5),
        ItemStatus(IDS[2], "done", 50, 50, "gtx1660-laptop", 1, None, 1, 0.9312),
        ItemStatus(IDS[3], "pending", 7, 50, "released-by-laptop", 0, None, 2),  # handed back at round 7
    ]
    workers = [WorkerStatus("macbook-pro-of-a-researcher", "macbook-pro.local", "mps", IDS[0], 12, 3.25, 14.0, "running",
                            round_progress=0.45)]
    return StatusReport(counts={"pending": 1, "running": 1, "done": 1, "failed": 1}, items=items, workers=workers)


def first_column(text: str, header: str) -> list[str]:
    """The first column's cells of the table headed ``header``, wrapped lines joined into one per row."""
    rows: list[str] = []
    state = "seek"
    for line in text.splitlines():
        if state == "seek" and "┃" in line and line.split("┃")[0].strip() == header:
            state = "header"
        elif state == "header" and line.startswith("━"):
            state = "body"
        elif state == "body":
            if "┃" in line or "│" not in line:  # the next table, or a line after the table
                break
            cells = [c.strip() for c in line.split("│")]
            if cells[2]:  # a new row starts where the third column (never wrapped, never empty) has content
                rows.append(cells[0])
            else:
                rows[-1] += cells[0]
    return rows


@pytest.mark.parametrize("width", [80, 100, 160])
def test_status_table_keeps_whole_item_ids_at_any_width(width: int) -> None:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(render(report()))
    text = buf.getvalue()
    assert "…" not in text, text
    assert first_column(text, "item") == IDS, text
    assert first_column(text, "worker") == ["macbook-pro-of-a-researcher"], text
    assert "(stale)" in text and "12/50" in text
    assert "12+45%" in text  # 12 rounds committed, 45 % of the 13th trained
    assert f"{IDS[1]}: last error: CheckpointError: torn or foreign" in text.replace("\n", " ")
    assert "RuntimeError: [a] b" in text  # markup characters in an error are shown, not interpreted
    assert "released" not in text  # nobody holds a pending item, whoever handed it back


def test_status_watch_into_a_log_prints_a_report_every_interval(tmp_path) -> None:
    """`fedspec status --watch 600 >> status.log`: before, the live view wrote nothing there until Ctrl-C."""
    import signal
    import subprocess
    import threading
    import time

    from fedspec.queue.store import RootPaths
    from fedspec.queue.workqueue import QueueItem, add_items
    from tests.conftest import fedspec_cmd

    add_items(RootPaths(tmp_path), [QueueItem("a", {"task": "digits", "method": "fedavg", "rounds": 2})])
    proc = subprocess.Popen(fedspec_cmd("status", "--root", str(tmp_path), "--watch", "0.3"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()
    deadline = time.monotonic() + 60
    try:
        while sum(line.startswith("1 item: 1 pending") for line in lines) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        running = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        proc.kill()
    assert running and sum(line.startswith("1 item: 1 pending") for line in lines) >= 3, lines
    assert lines[0].startswith("— 20") and code == 0 and "Traceback" not in proc.stderr.read()


def test_status_watch_goes_on_through_a_folder_that_drops(tmp_path) -> None:
    """An unmounted share ended `status --watch` with an error; a watcher left running for hours should see it come back."""
    import signal
    import subprocess
    import threading
    import time

    from fedspec.queue.store import RootPaths
    from fedspec.queue.workqueue import QueueItem, add_items
    from tests.conftest import fedspec_cmd

    root, away = tmp_path / "share", tmp_path / "away"
    add_items(RootPaths(root), [QueueItem("a", {"task": "digits", "method": "fedavg", "rounds": 2})])
    proc = subprocess.Popen(fedspec_cmd("status", "--root", str(root), "--watch", "0.2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True).start()

    def wait_for(predicate) -> bool:
        deadline = time.monotonic() + 60
        while not predicate() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        return predicate()

    reports = lambda: sum(line.startswith("1 item: 1 pending") for line in lines)  # noqa: E731
    gone = lambda: [line for line in lines if "cannot read the folder" in line]  # noqa: E731
    try:
        assert wait_for(lambda: reports() >= 1), lines
        root.rename(away)  # as an unmount looks to a process
        assert wait_for(lambda: len(gone()) >= 1), lines
        before = reports()
        away.rename(root)
        assert wait_for(lambda: reports() > before), lines
        running = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        proc.kill()
    assert running and code == 0 and "Traceback" not in proc.stderr.read()
    assert gone()[0].rstrip("\n").endswith(f"cannot read the folder: {root} is gone (unmounted or disconnected?); trying again every "
                              "0.2s (Ctrl-C to quit)"), gone()


def test_status_into_a_pipe_keeps_each_row_on_one_line(tmp_path) -> None:
    """`fedspec status > status.txt`: rich wrapped the tables at 80 columns there, splitting item ids over two lines."""
    import json
    import os
    import subprocess

    from fedspec.queue.store import RootPaths
    from fedspec.queue.workqueue import QueueItem, add_items
    from tests.conftest import fedspec_cmd

    paths = RootPaths(tmp_path)
    item = "fedspec_dirichlet_alpha0.5_seed43"
    add_items(paths, [QueueItem(item, {"task": "digits", "method": "fedspec", "rounds": 20})])
    paths.heartbeats.mkdir(parents=True, exist_ok=True)
    (paths.heartbeats / "macbook-pro-of-a-researcher.json").write_text(json.dumps(
        {"worker": "macbook-pro-of-a-researcher", "host": "macbook-pro", "state": "running", "item": item, "round": 3,
         "rounds": 20, "device": "mps", "lease_ttl": 600.0, "counter": 1, "sec_per_round": 1.5}))
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    res = subprocess.run(fedspec_cmd("status", "--root", str(tmp_path)), capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if "│" in line]
    assert len(rows) == 2, res.stdout  # one item, one worker: one line each
    assert all(item in row for row in rows) and "macbook-pro-of-a-researcher" in rows[1], res.stdout
