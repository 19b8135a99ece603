"""Target 1: fedspec against Flower's simulation engine on the same workload.

Workload: digits, the pretrained MLP 64→128→128→10 with LoRA (rank 4) on
fc1/fc2 and a trained head on both sides (fedspec has no full-model mode, so
Flower trains the very same LoRA model, built by fedspec's task code), 10
clients, Dirichlet α=0.5 from fedspec's partition code, 1 local epoch, batch
16, AdamW, 20 rounds of FedAvg over the trainable tensors.

Flower runs in its own virtual environment (it pins its own dependencies):

    python -m venv /tmp/flwr-venv
    /tmp/flwr-venv/bin/pip install "flwr[simulation]<2" torch==2.13.0 -e .
    python bench/vs_flower.py --flower-python /tmp/flwr-venv/bin/python

Without ``--flower-python`` (or when it lacks flwr) only fedspec's side runs
and the Flower columns say "skipped".  Wall time and peak memory are measured
from outside, over the whole process tree (Ray starts many processes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench._util import table  # noqa: E402

FLOWER_CLIENT = r'''
import sys, time, warnings
warnings.filterwarnings("ignore")
t_start = time.perf_counter()
import numpy as np, torch
import flwr as fl
from fedspec.fl.tasks import load_task
from fedspec.fl.lora import get_state, set_state, lora_pairs, mask_inactive, trainable_names
from fedspec.fl.client import TrainSettings, train_local, evaluate
from fedspec.fl.partition import partition

ROUNDS = int(sys.argv[1])
task = load_task("digits")
parts = partition(task.train.labels, "dirichlet", 10, 0.5, 42, 10)
torch.manual_seed(0)
model = task.build_model(4, 2.0)
pairs = lora_pairs(trainable_names(model))
names = trainable_names(model)
start = mask_inactive(get_state(model), pairs, 4)
first_fit = []

def to_state(arrays):
    return {n: torch.from_numpy(np.asarray(a)).float() for n, a in zip(names, arrays)}

class Client(fl.client.NumPyClient):
    def __init__(self, cid):
        self.cid = int(cid)
    def get_parameters(self, config):
        return [start[n].numpy() for n in names]
    def fit(self, parameters, config):
        settings = TrainSettings(1, 16, "adamw", 5e-3, 1.0, 4, pairs)
        r = train_local(model, task.logits, task.train, parts[self.cid], to_state(parameters), settings, self.cid, torch.device("cpu"))
        return [r.state[n].numpy() for n in names], r.num_samples, {"t": time.time()}
    def evaluate(self, parameters, config):
        return 0.0, 1, {}

def client_fn(context):
    cid = context.node_config.get("partition-id", 0) if hasattr(context, "node_config") else int(context)
    return Client(cid).to_client()

def evaluate_fn(server_round, parameters, config):
    acc, loss = evaluate(model, task.logits, task.test, to_state(parameters), 512, torch.device("cpu"))
    if server_round == 1:
        print("FIRST_ROUND_DONE", time.perf_counter() - t_start, flush=True)
    return loss, {"accuracy": acc}

strategy = fl.server.strategy.FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=10, min_available_clients=10,
    initial_parameters=fl.common.ndarrays_to_parameters([start[n].numpy() for n in names]), evaluate_fn=evaluate_fn)
hist = fl.simulation.start_simulation(client_fn=client_fn, num_clients=10, config=fl.server.ServerConfig(num_rounds=ROUNDS),
    strategy=strategy, client_resources={"num_cpus": 1})
print("FINAL_ACCURACY", hist.metrics_centralized["accuracy"][-1][1], flush=True)
'''


def measure(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) summed over the process tree, and stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    root = psutil.Process(proc.pid)
    peak = 0.0
    out_lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: out_lines.extend(proc.stdout), daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
            rss = sum(p.memory_info().rss for p in procs if p.is_running())
            peak = max(peak, rss / 1e6)
        except psutil.Error:
            pass
        time.sleep(0.05)
    reader.join(timeout=5)
    return time.perf_counter() - t0, peak, "".join(out_lines)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--flower-python", type=Path, help="python of a venv with flwr[simulation] and fedspec installed")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "fedspec.cli.main", "run", "--method", "fedavg", "--clients", "10", "--alpha", "0.5",
               "--rounds", str(args.rounds), "--batch-size", "16", "--rank", "4", "--root", tmp]
        f_wall, f_mem, _ = measure(cmd, REPO)
        import csv

        rs = list(csv.DictReader(open(Path(tmp) / "paper_results" / "fedavg_dirichlet_alpha0.5.csv")))
        steady = sorted(float(r["round_seconds"]) for r in rs[1:])
        f_round = steady[len(steady) // 2]
        rows.append(("fedspec run", f"{f_wall:.1f} s", f"{f_round:.3f} s", f"{f_mem:.0f} MB", rs[-1]["test_accuracy"][:6]))
    flower_ok = False
    if args.flower_python and args.flower_python.exists():
        probe = subprocess.run([str(args.flower_python), "-c", "import flwr, fedspec; print(flwr.__version__)"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            with tempfile.TemporaryDirectory() as tmp:
                script = Path(tmp) / "flower_digits.py"
                script.write_text(FLOWER_CLIENT)
                w_wall, w_mem, w_out = measure([str(args.flower_python), str(script), str(args.rounds)], REPO)
            first = next((float(line.split()[1]) for line in w_out.splitlines() if line.startswith("FIRST_ROUND_DONE")), float("nan"))
            acc = next((line.split()[1][:6] for line in w_out.splitlines() if line.startswith("FINAL_ACCURACY")), "failed")
            per_round = (w_wall - first) / max(1, args.rounds - 1)
            rows.append((f"Flower {probe.stdout.strip()} simulation (Ray)", f"{w_wall:.1f} s", f"{per_round:.3f} s",
                         f"{w_mem:.0f} MB", acc))
            flower_ok = acc != "failed"
            if not flower_ok:
                print(w_out[-3000:])
        else:
            print(f"skipped Flower: {args.flower_python} cannot import flwr and fedspec ({probe.stderr.strip()[-200:]})")
    else:
        print("skipped Flower: pass --flower-python (see this script's docstring)")
    print(table(rows, ("engine", "wall", "steady s/round", "peak memory (tree)", "final accuracy")))
    if flower_ok:
        speed = float(rows[1][1][:-2]) / float(rows[0][1][:-2])
        mem = float(rows[0][3][:-3]) / float(rows[1][3][:-3])
        print(f"wall: fedspec {speed:.2f}x faster (target >= 4x); memory: fedspec {mem:.2f} of Flower's (target <= 0.33)")
        return 0 if speed >= 4 and mem <= 1 / 3 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
