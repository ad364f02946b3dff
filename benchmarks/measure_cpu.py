"""Measure this CPU's memory bandwidth and fp32 matmul FLOP/s for the `cpu-2core` device preset.

    .venv/bin/python benchmarks/measure_cpu.py [--mib 512] [--n 2048] [--repeats 5]

Copy bandwidth counts read + write bytes (the STREAM "copy" convention) of a large numpy array
copy; matmul FLOP/s is 2*n^3 per n x n fp32 matmul (numpy's BLAS, all cores). Best of
``--repeats`` runs, since the machine is shared and interference only slows things down.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def copy_bandwidth_bps(mib: int, repeats: int) -> float:
    src = np.ones(mib * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def matmul_flops(n: int, repeats: int) -> float:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b  # warm up BLAS threads
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    bw = copy_bandwidth_bps(args.mib, args.repeats)
    fl = matmul_flops(args.n, args.repeats)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, numpy {np.__version__}")
    print(f"copy bandwidth: {bw / 1e9:.2f} GB/s  ({args.mib} MiB array, read+write)")
    print(f"fp32 matmul:    {fl / 1e9:.1f} GFLOP/s  (n={args.n})")


if __name__ == "__main__":
    main()
