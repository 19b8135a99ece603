"""Targets 6 and 7: claim latency under contention, status speed, and two workers against one.

claims:  8 processes claim items from one queue on a local folder until none is
         left; each claim's latency is the time from starting to look for an
         item to holding its lease.  Every item must be held by exactly one
         process (zero double claims).
status:  ``fedspec status --json`` on a root of 500 items (a subprocess, imports included).
scaling: ``fedspec worker`` on experiments/quick.toml, one worker against two on
         the same machine (each of the two with --threads 1, the one with the default),
         3 pairs in alternating order, median ratio.

    python bench/queue_bench.py [--items 400] [--procs 8] [--skip-scaling] [--scaling-repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._util import percentile, table  # noqa: E402
from fedspec.fl.checkpoint import Checkpoint, save_checkpoint  # noqa: E402
from fedspec.queue.claims import try_claim  # noqa: E402
from fedspec.queue.heartbeat import LeaseObserver  # noqa: E402
from fedspec.queue.status import classify  # noqa: E402
from fedspec.queue.store import RootPaths  # noqa: E402
from fedspec.queue.worker import PLACEHOLDER_SCAN_S, claim_order  # noqa: E402
from fedspec.queue.workqueue import QueueItem, add_items, load_queue  # noqa: E402


def child(root: Path, name: str, out: Path) -> None:
    paths = RootPaths(root)
    items = load_queue(paths)
    observer = LeaseObserver(ttl=3600)
    won, lat = [], []
    next_walk = 0.0
    while True:
        t0 = time.perf_counter()
        walk = t0 >= next_walk  # the root is walked for iCloud placeholders once a minute, as the worker does
        next_walk = t0 + PLACEHOLDER_SCAN_S if walk else next_walk
        report = classify(paths, items, observer, name, with_progress=False, scan_placeholders=walk)
        pending = [s for s in report.items if s.state == "pending"]
        if not pending:
            break
        for st in claim_order(pending, name):  # as the worker does
            lease = try_claim(paths, st.id, st.generation, name, settle_s=0.0)
            if lease is not None:
                lat.append(time.perf_counter() - t0)
                won.append(st.id)
                paths.result_csv(st.id).write_text("round\n1\n")  # mark done, as a finished item would
                break
    out.write_text(json.dumps({"won": won, "latency": lat}))


def bench_claims(n_items: int, procs: int) -> tuple[list[tuple], bool]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = RootPaths(root)
        add_items(paths, [QueueItem(f"item{i:04d}", {"rounds": 1}) for i in range(n_items)])
        outs = [root / f"out{k}.json" for k in range(procs)]
        children = [subprocess.Popen([sys.executable, __file__, "--child", str(root), f"w{k}", str(outs[k])]) for k in range(procs)]
        for c in children:
            c.wait()
        results = [json.loads(o.read_text()) for o in outs]
        wins = [i for r in results for i in r["won"]]
        lat = [x for r in results for x in r["latency"]]
        doubles = len(wins) - len(set(wins))
        holders = {i: [s for s in (root / "distributed_work" / "claims" / i).iterdir()] for i in set(wins)}
        p50, p99 = percentile(lat, 0.5), percentile(lat, 0.99)
        ok = p50 <= 0.05 and p99 <= 0.5 and doubles == 0 and len(set(wins)) == n_items
        rows = [
            (f"claim latency p50 ({procs} procs, {n_items} items)", f"{1e3 * p50:.1f} ms", "<= 50 ms", "met" if p50 <= 0.05 else "MISSED"),
            ("claim latency p99", f"{1e3 * p99:.1f} ms", "<= 500 ms", "met" if p99 <= 0.5 else "MISSED"),
            ("items claimed / double claims", f"{len(set(wins))} / {doubles}", f"{n_items} / 0",
             "met" if doubles == 0 and len(set(wins)) == n_items else "MISSED"),
            ("claim files per item (max)", str(max(len(v) for v in holders.values())), "-", ""),
        ]
        return rows, ok


def bench_status(n_items: int = 500) -> tuple[list[tuple], bool]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = RootPaths(Path(tmp))
        add_items(paths, [QueueItem(f"item{i:04d}", {"task": "digits", "rounds": 20}) for i in range(n_items)])
        import torch

        state = {"fc1.lora_A.weight": torch.zeros(8, 64), "fc1.lora_B.weight": torch.zeros(128, 8), "head.weight": torch.zeros(10, 128)}
        for i in range(0, n_items, 2):  # half of them with a 10-round checkpoint
            rows = [{"round": r, "test_accuracy": 0.5, "round_seconds": 0.1} for r in range(1, 11)]
            save_checkpoint(paths.checkpoints / f"item{i:04d}", f"item{i:04d}", "h",
                            Checkpoint(round=10, state=state, aggregator={"rank": 8}, batch_size=16, rows=rows))
        cmd = [sys.executable, "-m", "fedspec.cli.main", "status", "--root", tmp, "--json"]
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
        best = min(times)
        return [(f"fedspec status --json, {n_items} items (best of 3)", f"{best:.2f} s", "< 1 s", "met" if best < 1 else "MISSED")], best < 1


def bench_scaling(repeats: int = 3) -> tuple[list[tuple], bool]:
    """One worker against two, ``repeats`` pairs run back to back in alternating order; the median ratio is judged.

    A single pair swung from 0.48 to 0.80 on this (shared, 2-core) machine with
    the code unchanged, so one pair says little.  Each run's output is read as
    it comes, so the time before the first claim (starting Python and
    importing torch, which a second worker cannot save) is reported apart from
    the time spent on items.
    """
    grid = REPO / "experiments" / "quick.toml"
    fedspec = [sys.executable, "-m", "fedspec.cli.main"]
    setups = {"one": [["--name", "solo"]], "two": [["--name", "w1", "--threads", "1"], ["--name", "w2", "--threads", "1"]]}
    runs: list[dict[str, tuple[float, float]]] = []  # per pair: label -> (wall, seconds before the first claim)
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            run = {}
            for label in ("one", "two") if rep % 2 == 0 else ("two", "one"):
                root = str(Path(tmp) / f"{label}{rep}")
                subprocess.run([*fedspec, "worker", "--root", root, "--grid", str(grid), "--max-items", "0"], check=True, capture_output=True)
                t0 = time.perf_counter()
                procs = [subprocess.Popen([*fedspec, "worker", "--root", root, *w], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, env={**os.environ, "PYTHONUNBUFFERED": "1", "FEDSPEC_HOME": tmp}) for w in setups[label]]
                first_claim: list[float] = []
                outputs = ["" for _ in procs]

                def read(k: int, p: subprocess.Popen) -> None:
                    for line in p.stdout:
                        if not first_claim and ": claimed " in line:
                            first_claim.append(time.perf_counter() - t0)
                        outputs[k] += line

                readers = [threading.Thread(target=read, args=(k, p)) for k, p in enumerate(procs)]
                for r in readers:
                    r.start()
                for p, r in zip(procs, readers):
                    p.wait()
                    r.join()
                run[label] = (time.perf_counter() - t0, first_claim[0] if first_claim else 0.0)
                for w, p, out in zip(setups[label], procs, outputs):
                    if p.returncode != 0:
                        raise SystemExit(f"worker {w[1]} exited with {p.returncode}:\n{out[-4000:]}")
            runs.append(run)
    ratios = sorted(r["two"][0] / r["one"][0] for r in runs)
    after = sorted((r["two"][0] - r["two"][1]) / (r["one"][0] - r["one"][1]) for r in runs)
    starts = [r[label][1] for r in runs for label in ("one", "two")]
    median = ratios[len(ratios) // 2]
    shown = ", ".join(f"{r['two'][0]:.1f}/{r['one'][0]:.1f} s" for r in runs)
    return [(f"quick.toml: two workers / one worker (median of {repeats} pairs)", f"{median:.2f} ({shown}; range {ratios[0]:.2f}-{ratios[-1]:.2f})",
             "<= 0.60", "met" if median <= 0.6 else "MISSED"),
            ("  context: seconds before the first claim (Python + imports)", f"{min(starts):.2f}-{max(starts):.2f} s", "", ""),
            ("  context: the same ratio from the first claim on", f"{after[len(after) // 2]:.2f} (range {after[0]:.2f}-{after[-1]:.2f})", "", "")], median <= 0.6


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--procs", type=int, default=8)
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--scaling-repeats", type=positive_int, default=3, help="pairs of one-worker and two-worker runs (median judged)")
    args = parser.parse_args()
    rows, ok = bench_claims(args.items, args.procs)
    r2, ok2 = bench_status()
    rows += r2
    ok &= ok2
    if not args.skip_scaling:
        r3, ok3 = bench_scaling(args.scaling_repeats)
        rows += r3
        ok &= ok3
    print(table(rows, ("figure", "measured", "target", "")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
