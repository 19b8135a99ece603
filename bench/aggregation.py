"""Target 3: FedSpec from stacked factors vs a dense SVD of Σ wᵢBᵢAᵢ.

Shapes: BERT-base (24 matrices 768×768, n=10 clients, r=8) and d=4096 (64
matrices).  Both paths run side by side on the same random factors; the ratio
is per matrix (at d=4096 the dense path is timed on a few matrices, since one
dense SVD there takes seconds).  Peak memory is the largest tensor each path
allocates (the dense path needs d×d; the factored one d×(n·r)).

    python bench/aggregation.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._util import table  # noqa: E402
from fedspec.fl.aggregators.factored import split_balanced, stack_factors, svd_of_product  # noqa: E402


def one(d: int, n: int, r: int, gen: torch.Generator) -> tuple[float, float, float, int, int]:
    bs = [torch.randn(d, r, generator=gen) * 0.01 for _ in range(n)]
    as_ = [torch.randn(r, d, generator=gen) * 0.01 for _ in range(n)]
    w = [1.0 / n] * n
    t0 = time.perf_counter()
    left, right = stack_factors(bs, as_, w)
    fact = split_balanced(svd_of_product(left, right, dense=False, keep=r), r)
    t_fact = time.perf_counter() - t0
    t0 = time.perf_counter()
    left, right = stack_factors(bs, as_, w)
    dense_m = left @ right
    u, s, vh = torch.linalg.svd(dense_m, full_matrices=False)
    root = s[:r].sqrt()
    dense = (u[:, :r] * root, root[:, None] * vh[:r])
    t_dense = time.perf_counter() - t0
    p_f, p_d = fact[0] @ fact[1], dense[0] @ dense[1]
    rel = float(torch.linalg.matrix_norm(p_f - p_d) / torch.linalg.matrix_norm(p_d))
    return t_fact, t_dense, rel, d * n * r * 8 * 2, d * d * 8


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer matrices (a smoke run)")
    args = parser.parse_args()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    rows, ok = [], True
    one(768, 10, 8, gen)  # warm-up: first LAPACK calls allocate workspaces
    for label, d, count, dense_count, target in (("BERT-base 768", 768, 24, 24, 30), ("d=4096", 4096, 64, 3, 500)):
        if args.quick:
            count, dense_count = 2, 1
        tf = td = 0.0
        worst = 0.0
        for k in range(dense_count):
            f, dn, rel, mem_f, mem_d = one(d, 10, 8, gen)
            tf, td, worst = tf + f, td + dn, max(worst, rel)
        per_f, per_d = tf / dense_count, td / dense_count
        # the factored path alone over all matrices, for the absolute figure
        t0 = time.perf_counter()
        for _ in range(count - dense_count):
            bs = [torch.randn(d, 8, generator=gen) for _ in range(10)]
            as_ = [torch.randn(8, d, generator=gen) for _ in range(10)]
            split_balanced(svd_of_product(*stack_factors(bs, as_, [0.1] * 10), dense=False, keep=8), 8)
        all_f = (time.perf_counter() - t0) + tf
        speedup = per_d / per_f
        met = speedup >= target and worst <= 1e-4
        ok &= met
        rows.append((label, count, f"{all_f * 1e3:.1f} ms", f"{per_f * 1e3:.2f} ms", f"{per_d * 1e3:.1f} ms",
                     f"{speedup:.0f}x (>= {target}x)", f"{worst:.1e}", f"{mem_f / 1e6:.2f} MB", f"{mem_d / 1e6:.1f} MB",
                     "met" if met else "MISSED"))
    print(table(rows, ("shape", "matrices", "factored all", "factored/matrix", "dense/matrix", "speed-up",
                       "rel. err BA", "factored peak tensor", "dense peak tensor", "target")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
