"""Cross-device resume check: start an item on CUDA, stop it after round 2, finish it on the CPU.

Prints the per-round accuracy of: CPU only, CUDA only, CUDA→CPU resumed.  Needs a CUDA machine.
    python bench/cross_device.py OUT_DIR
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import torch

from fedspec.config import make_spec
from fedspec.errors import LeaseLost
from fedspec.checkpoint_file import read_header
from fedspec.fl.loop import checkpoint_dir, run_experiment


def main(out: Path) -> int:
    if not torch.cuda.is_available():
        print("no CUDA here; nothing to check")
        return 0
    spec = make_spec(clients=5, rounds=5, tail_threshold=0.0)
    run_experiment(spec, "x", out / "cpu", device="cpu")
    run_experiment(spec, "x", out / "cuda", device="cuda")

    def stop_after_two(kind: str) -> None:
        meta = read_header(checkpoint_dir(out / "mixed", "x"))
        if meta and meta["round"] == 2:
            raise LeaseLost("stop")

    try:
        run_experiment(spec, "x", out / "mixed", device="cuda", guard=stop_after_two)
    except LeaseLost:
        pass
    res = run_experiment(spec, "x", out / "mixed", device="cpu")
    print("resumed from round", res.resumed_from)
    for name in ("cpu", "cuda", "mixed"):
        rows = list(csv.DictReader(open(out / name / "paper_results" / "x.csv")))
        print(f"{name:6s}", [(r["device"], round(float(r["test_accuracy"]), 4), r["rank"]) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
