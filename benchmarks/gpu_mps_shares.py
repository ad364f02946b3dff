"""GPU check of the runtime's compute shares (MpsShares, green_context_sms) on a real GPU.

MuxServe gives each LLM's prefill and decode job a share of a GPU's SMs; the unit runtime's GPU
layout sets CUDA_MPS_ACTIVE_THREAD_PERCENTAGE per worker process (`MpsShares.worker_env`).
This script asks the GPU whether that does what the design assumes:
1. a compute-bound job (bf16 matmul) at share s gets about s of the GPU's matmul rate;
2. two jobs at s and 1 - s running at once (a prefill beside a decode) keep those rates;
3. a memory-bound job (a large copy, what decoding is) at a small share still gets most of the
   memory bandwidth: the compute that decoding leaves free is what colocation reclaims.
Each job runs in its own process for a fixed time after a common start; nothing of muxserve but
shares.py is imported (the GPU machine lacks muxserve's serving dependencies).

Usage (GPU machine, as root): python3 benchmarks/gpu_mps_shares.py [--secs 3] [--out F.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB = r"""
import sys, time, torch
kind, secs, start = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
if kind == "matmul":
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
    step, work = (lambda: a @ b), 2 * 8192 ** 3
else:  # copy: 1 GiB read + 1 GiB written per step
    a = torch.empty(2 ** 29, device="cuda", dtype=torch.bfloat16); b = torch.empty_like(a)
    step, work = (lambda: b.copy_(a)), 2 * a.numel() * a.element_size()
for _ in range(3): step()
torch.cuda.synchronize()
while time.time() < start: time.sleep(0.001)
n, t0 = 0, time.perf_counter()
while time.perf_counter() - t0 < secs:
    for _ in range(4): step()
    torch.cuda.synchronize(); n += 4
dt = time.perf_counter() - t0
print(f"RESULT {n * work / dt / 1e12:.3f}")
"""


def load_shares():
    sys.path.insert(0, str(ROOT / "src"))  # muxserve.types (stdlib only)
    spec = importlib.util.spec_from_file_location(
        "mux_shares", ROOT / "src/muxserve/engine/runtime/shares.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["mux_shares"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def run_jobs(jobs: list[tuple[str, dict[str, str]]], secs: float) -> list[float]:
    """Start every (kind, env) job in its own process, all timing the same window."""
    start = time.time() + 8.0  # CUDA init of every process fits before the window
    procs = [subprocess.Popen([sys.executable, "-c", JOB, kind, str(secs), str(start)],
                              env={**os.environ, **env}, stdout=subprocess.PIPE, text=True)
             for kind, env in jobs]
    rates = []
    for p in procs:
        out, _ = p.communicate(timeout=120)
        line = [x for x in out.splitlines() if x.startswith("RESULT")]
        rates.append(float(line[-1].split()[1]) if line else float("nan"))
    return rates


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--secs", type=float, default=3.0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    shares = load_shares()
    res: dict[str, object] = {}
    res["alone_no_mps"] = {"matmul_tflops": run_jobs([("matmul", {})], args.secs)[0],
                           "copy_tbps": run_jobs([("copy", {})], args.secs)[0]}
    pipe = tempfile.mkdtemp(prefix="mps_pipe_")
    log = tempfile.mkdtemp(prefix="mps_log_")
    mps_env = {"CUDA_MPS_PIPE_DIRECTORY": pipe, "CUDA_MPS_LOG_DIRECTORY": log}
    try:
        subprocess.run(["nvidia-cuda-mps-control", "-d"], env={**os.environ, **mps_env},
                       check=True)
    except (OSError, subprocess.CalledProcessError) as e:
        res["mps"] = f"could not start the MPS daemon: {e}"
        print(json.dumps(res, indent=1))
        return 1
    try:
        def env(share: float) -> dict[str, str]:
            return {**mps_env, shares.MPS_ENV: str(shares.mps_percentage(share))}
        for s in (1.0, 0.5, 0.3):
            res[f"matmul_alone_share_{s}"] = run_jobs([("matmul", env(s))], args.secs)[0]
            res[f"copy_alone_share_{s}"] = run_jobs([("copy", env(s))], args.secs)[0]
        pair = run_jobs([("matmul", env(0.7)), ("matmul", env(0.3))], args.secs)
        res["matmul_0.7_with_matmul_0.3"] = pair
        mix = run_jobs([("matmul", env(0.7)), ("copy", env(0.3))], args.secs)
        res["matmul_0.7_with_copy_0.3"] = mix
    finally:
        subprocess.run(["nvidia-cuda-mps-control"], input="quit\n", text=True,
                       env={**os.environ, **mps_env}, check=False)
    import torch
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    res["device"] = torch.cuda.get_device_name(0)
    res["green_context_sms"] = {s: shares.green_context_sms(s, sms) for s in (0.3, 0.5, 0.7)}
    res["sm_count"] = sms
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
