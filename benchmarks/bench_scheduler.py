"""Scheduler speed: CPU time the UnitScheduler (+ BlockManager) needs per generated token and per
job, driven by a trivial constant-latency loop (no cost model, no simulator), so the number is
the scheduler's own overhead.

One unit with three llama-7b models (g = 1024 blocks per token block) on a 40 GB KV pool of
16 KB blocks; Poisson arrivals; prompts 10-300 and outputs 10-400 tokens; decode steps 30 ms,
prefills 1 ms per 10 tokens. Runs with block ids tracked (engine mode) and counted only
(``track_block_ids=False``, simulator mode).

Usage:
  .venv/bin/python benchmarks/bench_scheduler.py [--requests 20000] [--rate 8]
"""

from __future__ import annotations

import argparse
import heapq
import random
import time

from muxserve.config.models import get_model_arch
from muxserve.kvcache import BlockManager
from muxserve.scheduler import JobResult, Request, SchedulerConfig, UnitModel, UnitScheduler
from muxserve.types import Phase


def run(num_requests: int, rate_rps: float, policy: str, track_ids: bool) -> dict[str, float]:
    arch = get_model_arch("llama-7b")
    models = [UnitModel(i, f"m{i}", arch, rate_rps=rate_rps / (i + 1), prefill_share=0.6,
                        decode_share=0.4) for i in range(3)]
    bm = BlockManager(int(40e9 // (8192 * 2)), track_block_ids=track_ids)
    sched = UnitScheduler(models, bm, SchedulerConfig(policy=policy))
    rng = random.Random(0)
    reqs, t = [], 0.0
    for i in range(num_requests):
        t += rng.expovariate(rate_rps)
        reqs.append(Request(i, rng.choice([0, 0, 0, 1, 1, 2]), t, rng.randint(10, 300),
                            rng.randint(10, 400)))
    running: list = []
    now, tokens, jobs, k = 0.0, 0, 0, 0
    cpu0 = time.process_time()
    while k < len(reqs) or running or sched.has_unfinished():
        now = min(reqs[k].arrival_s if k < len(reqs) else float("inf"),
                  running[0][0] if running else float("inf"))
        while running and running[0][0] <= now:
            _, _, job = heapq.heappop(running)
            tokens += len(sched.update(job, JobResult(job.job_id), now).token_req_ids)
        while k < len(reqs) and reqs[k].arrival_s <= now:
            sched.add_request(reqs[k], now)
            k += 1
        for job in sched.schedule(now):
            jobs += 1
            d = 0.03 if job.phase is Phase.DECODE else 0.0001 * job.num_tokens
            heapq.heappush(running, (now + d, job.job_id, job))
    cpu = time.process_time() - cpu0
    assert bm.used_blocks() == 0
    return {"cpu_s": cpu, "tokens": tokens, "jobs": jobs, "sim_s": now,
            "tokens_per_cpu_s": tokens / cpu, "us_per_job": 1e6 * cpu / jobs,
            "preemptions": sched.num_preemptions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=8.0, help="total arrival rate, req/s")
    ap.add_argument("--policy", default="muxserve")
    args = ap.parse_args()
    for track_ids in (True, False):
        r = run(args.requests, args.rate, args.policy, track_ids)
        print(f"track_block_ids={track_ids!s:5}  {r['tokens']} tokens, {r['jobs']} jobs in "
              f"{r['cpu_s']:.2f} s CPU: {r['tokens_per_cpu_s'] / 1e6:.2f} M tokens/CPU-s, "
              f"{r['us_per_job']:.1f} us/job (simulated {r['sim_s']:.0f} s, "
              f"{r['preemptions']} preemptions)")


if __name__ == "__main__":
    main()
