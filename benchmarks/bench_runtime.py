"""Unit-runtime overheads: the same requests through MultiModelLLM in-process and through a
unit (unit process + worker processes, pipes), one model on one core; and each worker's memory.

    .venv/bin/python benchmarks/bench_runtime.py --model smollm2-135m --batch 8 --tokens 64
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from muxserve.engine.llm import MultiModelLLM
from muxserve.engine.protocol import GenerateRequest
from muxserve.engine.request import GenerationRequest
from muxserve.engine.runtime import UnitConfig, UnitRuntime
from muxserve.types import SamplingParams


def private_mib(pid: int) -> tuple[float, float]:
    vals = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f.readlines()[1:]:
            k, v = line.split(":", 1)
            vals[k] = int(v.split()[0]) / 1024
    private = vals["Private_Clean"] + vals["Private_Dirty"]
    return private, vals["Shared_Clean"] + vals["Shared_Dirty"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--mode", default="temporal")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    params = SamplingParams(max_tokens=a.tokens, temperature=0.0, ignore_eos=True)
    ids = list(range(100, 132))
    core = min(os.sched_getaffinity(0))
    torch.set_num_threads(1)  # as a worker on a one-core share
    llm = MultiModelLLM({"m": a.model}, dtype=a.dtype, kv_pool_bytes=64 * 2**20)
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})  # in-process: on the core the unit's jobs will use
    reqs = [GenerationRequest("m", ids, params)] * a.batch
    llm.generate(reqs)
    t = time.perf_counter()
    llm.generate(reqs)
    inproc = time.perf_counter() - t
    os.sched_setaffinity(0, before)  # the unit process and this client stay off the job core
    del llm
    cfg = UnitConfig.of({"m": a.model}, mode=a.mode, dtype=a.dtype, kv_pool_bytes=64 * 2**20,
                        cores=(core,))
    t = time.perf_counter()
    with UnitRuntime(cfg) as rt:
        start = time.perf_counter() - t
        mk = [GenerateRequest(f"w{i}", "m", tuple(ids), params) for i in range(a.batch)]
        rt.run_requests(mk)
        t = time.perf_counter()
        rt.run_requests([GenerateRequest(f"r{i}", "m", tuple(ids), params)
                         for i in range(a.batch)])
        unit = time.perf_counter() - t
        info = rt.info()
        mem = {k: private_mib(p) for k, p in info["workers"].items()}
    n = a.batch * a.tokens
    print(f"{a.model} {a.dtype} batch {a.batch} x {a.tokens} tokens, one core: in-process "
          f"{inproc:.2f} s ({n / inproc:.0f} tok/s), unit {unit:.2f} s ({n / unit:.0f} tok/s), "
          f"overhead {100 * (unit / inproc - 1):+.1f}%; unit start {start:.1f} s")
    w = info["weight_bytes"]["m"] / 2**20
    for k, (priv, shared) in mem.items():
        print(f"  worker {k}: private {priv:.0f} MiB, shared {shared:.0f} MiB "
              f"(weights {w:.0f} MiB)")


if __name__ == "__main__":
    main()
