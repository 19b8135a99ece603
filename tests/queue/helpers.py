"""Real worker processes on a real folder, for the queue's tests."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from pathlib import Path

from fedspec.checkpoint_file import read_header
from fedspec.errors import CheckpointError
from tests.conftest import fedspec_cmd

# Short leases for quick takeovers; one torch thread each, as the README advises for several workers
# on one machine (cores / workers): the tests run two or three at a time on a couple of cores.
FAST = ["--lease-ttl", "2", "--heartbeat", "0.4", "--settle", "0", "--poll", "0.3", "--threads", "1"]


def write_grid(path: Path, rounds: int, alphas: str = "[0.5]", methods: str = '["fedavg", "fedspec"]',
               centralized: bool = False, clients: int = 10) -> Path:
    path.write_text(
        f'[grid]\nmethods = {methods}\nalphas = {alphas}\ncentralized = {str(centralized).lower()}\n'
        f'[experiment]\nclients = {clients}\nrounds = {rounds}\nmin_client_size = 5\n'
    )
    return path


def start_worker(root: Path, name: str, *extra: str, grid: Path | None = None, log: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    args = ["worker", "--root", str(root), "--name", name, *FAST, *extra]
    if grid is not None:
        args += ["--grid", str(grid)]
    out = open(log, "w") if log else subprocess.DEVNULL
    return subprocess.Popen(fedspec_cmd(*args), stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})


def checkpoint_round(root: Path, item: str) -> int:
    try:
        meta = read_header(root / "checkpoints_distributed" / item)
    except CheckpointError:
        return 0
    return meta["round"] if meta else 0


def wait_for(predicate, timeout: float = 120.0, step: float = 0.02) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(step)
    return False


def rounds_of(csv_path: Path) -> list[int]:
    with open(csv_path, newline="") as fh:
        return [int(r["round"]) for r in csv.DictReader(fh)]


def status_json(root: Path) -> dict:
    res = subprocess.run(fedspec_cmd("status", "--root", str(root), "--json"), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)
