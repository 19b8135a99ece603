"""Target 2: a round's clients trained together (vmap) against one after another.

Digits MLP with LoRA, 10 clients, Dirichlet 0.5, 1 local epoch, batch 16:
the same clients from the same start, both paths side by side, several
repetitions.  Also checks the two paths give the same client updates.

    python bench/clients.py [--clients 10] [--reps 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._util import table  # noqa: E402
from fedspec.fl.batched import train_clients_batched  # noqa: E402
from fedspec.fl.client import TrainSettings, train_local  # noqa: E402
from fedspec.fl.lora import get_state, lora_pairs, mask_inactive, trainable_names  # noqa: E402
from fedspec.fl.partition import partition  # noqa: E402
from fedspec.fl.tasks import load_task  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rank", type=int, default=4)
    args = parser.parse_args()
    task = load_task("digits")
    torch.manual_seed(0)
    model = task.build_model(16, 2.0)
    pairs = lora_pairs(trainable_names(model))
    start = mask_inactive(get_state(model), pairs, args.rank)
    clients = partition(task.train.labels, "dirichlet", args.clients, 0.5, 42, 10)
    seeds = list(range(args.clients))
    settings = TrainSettings(1, 16, "adamw", 5e-3, 1.0, args.rank, pairs)
    cpu = torch.device("cpu")
    seq_t, bat_t = [], []
    for rep in range(args.reps + 1):  # the first repetition warms up both paths
        t0 = time.perf_counter()
        seq = [train_local(model, task.logits, task.train, idx, start, settings, s, cpu) for idx, s in zip(clients, seeds)]
        t1 = time.perf_counter()
        bat = train_clients_batched(model, task.logits, task.train, clients, start, settings, seeds, cpu)
        t2 = time.perf_counter()
        if rep:
            seq_t.append(t1 - t0)
            bat_t.append(t2 - t1)
    diff = max(float((a.state[n] - b.state[n]).abs().max()) for a, b in zip(seq, bat) for n in a.state)
    s, b = min(seq_t), min(bat_t)
    ratio = b / s
    rows = [(f"{args.clients} clients, {sum(len(c) for c in clients)} samples", f"{1e3 * s:.0f} ms", f"{1e3 * b:.0f} ms",
             f"{ratio:.2f}x (<= 0.5x)", f"{diff:.1e}", "met" if ratio <= 0.5 and diff < 1e-4 else "MISSED")]
    print(f"threads: {torch.get_num_threads()}, best of {args.reps}")
    print(table(rows, ("round", "sequential", "together (vmap)", "time ratio", "max |Δ param|", "target")))
    return 0 if ratio <= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
