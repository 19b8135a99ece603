"""Targets 1, 5, 8: where a round's time goes, what the checkpoint costs, whether memory grows.

Runs the engine in-process with timers around local training steps and the
checkpoint commit, and records RSS and open file handles after every round.

  overhead:   round time / time inside clients' local training      (target <= 1.10)
  checkpoint: checkpoint time / round time                          (target <= 5 %)
  memory:     RSS after the last round / RSS after round 10          (target within 5 %)

    python bench/engine.py --task digits --rounds 200
    python bench/engine.py --task tweets-minilm --rounds 200 --max-train-samples 64 --clients 2
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._util import percentile, rss_mb, table  # noqa: E402
from fedspec.config import make_spec  # noqa: E402
from fedspec.fl import client as client_mod  # noqa: E402
from fedspec.fl import loop as loop_mod  # noqa: E402


def open_fds() -> int:
    try:
        return len(os.listdir(f"/proc/{os.getpid()}/fd"))
    except OSError:
        return -1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="digits")
    parser.add_argument("--method", default="fedavg")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--parallel-clients", default="auto", choices=["auto", "on", "off"])
    args = parser.parse_args()

    timers = {"train": 0.0, "checkpoint": 0.0}

    def timed(fn, key: str):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timers[key] += time.perf_counter() - t0

        return wrapper

    from fedspec.fl import batched as batched_mod

    client_mod.train_local = timed(client_mod.train_local, "train")
    batched_mod.train_clients_batched = timed(batched_mod.train_clients_batched, "train")
    loop_mod.CheckpointWriter.commit = timed(loop_mod.CheckpointWriter.commit, "checkpoint")
    spec = make_spec(task=args.task, method=args.method, rounds=args.rounds, clients=args.clients, alpha=0.5,
                     batch_size=args.batch_size, max_train_samples=args.max_train_samples, min_client_size=5,
                     parallel_clients=args.parallel_clients)
    samples: dict[int, tuple[float, int]] = {}
    per_round: list[tuple[float, float, float]] = []
    last = {"train": 0.0, "checkpoint": 0.0, "t": 0.0}

    def on_round(row: dict) -> None:
        now = time.perf_counter()
        per_round.append((now - last["t"], timers["train"] - last["train"], timers["checkpoint"] - last["checkpoint"]))
        samples[row["round"]] = (rss_mb(), open_fds())
        # The next round starts after this sampling: reading /proc (~30-80 us) is the benchmark's cost, not fedspec's.
        last.update(train=timers["train"], checkpoint=timers["checkpoint"], t=time.perf_counter())

    def on_start(done: int, total: int) -> None:
        last["t"] = time.perf_counter()

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        loop_mod.run_experiment(spec, "bench", Path(root), on_round=on_round, on_start=on_start)
    wall = time.perf_counter() - t0
    steady = per_round[1:] or per_round  # round 1 pays one-off warm-up
    round_t = sum(r[0] for r in steady)
    train_t = sum(r[1] for r in steady)
    ckpt_t = sum(r[2] for r in steady)
    overhead = round_t / train_t
    ckpt_share = ckpt_t / round_t
    r10 = samples[min(10, args.rounds)]
    rl = samples[args.rounds]
    growth = rl[0] / r10[0] - 1
    rows = [
        ("overhead: round / local training", f"{overhead:.3f}x", "<= 1.10x", "met" if overhead <= 1.10 else "MISSED"),
        ("checkpoint share of round", f"{100 * ckpt_share:.2f} %", "<= 5 %", "met" if ckpt_share <= 0.05 else "MISSED"),
        (f"RSS round {args.rounds} vs round 10", f"{rl[0]:.0f} MB vs {r10[0]:.0f} MB ({100 * growth:+.2f} %)", "within 5 %",
         "met" if abs(growth) <= 0.05 else "MISSED"),
        (f"open files round {args.rounds} vs round 10", f"{rl[1]} vs {r10[1]}", "no growth", "met" if rl[1] <= r10[1] else "MISSED"),
    ]
    # Context for the checkpoint share: a commit waits on the disk's syncs, and a few rounds wait much longer
    # (the file system's journal commit); they move the mean, which is what a run pays.
    ckpts = sorted(r[2] for r in steady)
    slow = ckpts[-max(1, len(ckpts) // 100):]
    rows.append(("  context: checkpoint per round", f"median {1e3 * percentile(ckpts, 0.5):.2f} ms, p99 {1e3 * percentile(ckpts, 0.99):.2f} ms, "
                 f"max {1e3 * ckpts[-1]:.1f} ms; slowest 1 % of rounds: {100 * sum(slow) / max(ckpt_t, 1e-12):.0f} % of checkpoint time", "", ""))
    print(f"{args.task} {args.method} (parallel_clients={args.parallel_clients}), {args.clients} clients, {args.rounds} rounds: wall {wall:.1f} s, "
          f"steady round {1e3 * round_t / len(steady):.1f} ms (local training {1e3 * train_t / len(steady):.1f} ms, "
          f"checkpoint {1e3 * ckpt_t / len(steady):.2f} ms)")
    print(table(rows, ("figure", "measured", "target", "")))
    return 0 if all(r[3] in ("met", "") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
