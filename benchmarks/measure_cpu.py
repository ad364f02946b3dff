"""Measure this CPU's memory bandwidth and fp32 matmul FLOP/s for the `cpu-2core` device preset.

    .venv/bin/python benchmarks/measure_cpu.py [--mib 256] [--n 2048] [--repeats 5]

For k = 1 .. all cores: copy bandwidth with k processes copying at once (read + write bytes, the
STREAM "copy" convention; aggregate over a barrier-synchronised window) and fp32 matmul FLOP/s
with k BLAS threads (2*n^3 per n x n matmul, a fresh process per k so OPENBLAS_NUM_THREADS
applies). The all-core numbers go in the preset; the k < all rows show how a job's speed scales
with its core share (the CPU's f_c and f_m). Best of ``--repeats``: the machine is shared and
interference only slows things down.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time


def _copy_worker(mib: int, repeats: int, barrier, out) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    src = np.ones(mib * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        barrier.wait()
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    out.put(2 * src.nbytes / best)


def copy_bandwidth_bps(procs: int, mib: int, repeats: int) -> float:
    """Aggregate copy bandwidth of ``procs`` processes copying at the same time."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    ps = [ctx.Process(target=_copy_worker, args=(mib, repeats, barrier, out)) for _ in range(procs)]
    for p in ps:
        p.start()
    total = sum(out.get() for _ in ps)
    for p in ps:
        p.join()
    return total


def _matmul_flops(n: int, repeats: int) -> float:
    import numpy as np

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


def matmul_flops(threads: int, n: int, repeats: int) -> float:
    """fp32 matmul FLOP/s with ``threads`` BLAS threads (in a fresh process)."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import measure_cpu; print(measure_cpu._matmul_flops({n}, {repeats}))")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return float(res.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    import numpy as np

    cores = os.cpu_count() or 1
    print(f"machine: {platform.machine()} {cores} cores, {platform.processor() or '?'}, "
          f"numpy {np.__version__}")
    print("| cores | copy bandwidth (GB/s, read+write) | fp32 matmul (GFLOP/s) |")
    print("|---|---|---|")
    for k in range(1, cores + 1):
        bw = copy_bandwidth_bps(k, args.mib, args.repeats)
        fl = matmul_flops(k, args.n, args.repeats)
        print(f"| {k} | {bw / 1e9:.2f} | {fl / 1e9:.1f} |")


if __name__ == "__main__":
    main()
