"""Compute-share rule check: ChatLMSYS condense 2000 on the paper's placement, both ledger rules.

Runs the simulator with compute_rule="overlap" (the original MuxServe's SMResource rule, the
default) and "sum" (total <= 120%), and reports throughput plus what the rule changes: the mean
prefill batch, how often a ready prefill found no room, and the peak summed share of running
jobs per unit.

    .venv/bin/python benchmarks/compute_rule_stats.py --duration-s 30 --policy muxserve
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from muxserve.cli.simulate import SHAREGPT, units_from_placement
from muxserve.costmodel import get_cost_model
from muxserve.placement.placement_io import read_placement
from muxserve.placement.workload_spec import read_workload
from muxserve.scheduler import SchedulerConfig, UnitScheduler
from muxserve.sim.experiment import simulate
from muxserve.sim.workload import load_sharegpt, synthesize
from muxserve.types import Phase

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_sim import PAPER_PLACEMENTS, WORKLOAD  # noqa: E402


def run(rule: str, policy: str, duration_s: float) -> None:
    w = read_workload(WORKLOAD)
    cost = get_cost_model("profile", "a100-80g")
    rates = {m.name: m.rate_rps for m in w.models}
    trace = synthesize(rates, duration_s, load_sharegpt(SHAREGPT), 0)
    pl = read_placement(PAPER_PLACEMENTS, condense="2000", policy="muxserve")
    units = units_from_placement(pl, w, rates, cost)
    stats: Counter[str] = Counter()
    peak: dict[int, int] = {}
    orig_try = UnitScheduler.try_start

    def try_start(self, m, phase):  # type: ignore[no-untyped-def]
        job = orig_try(self, m, phase)
        if job is not None:
            if phase is Phase.PREFILL:
                stats["prefill_jobs"] += 1
                stats["prefill_reqs"] += len(job.req_ids)
            peak[id(self)] = max(peak.get(id(self), 0), self.ledger.used_parts)
        elif phase is Phase.PREFILL:
            stats["blocked_prefill"] += self.blocked_on_compute(m, phase)
        return job

    UnitScheduler.try_start = try_start
    try:
        res = simulate(units, cost, trace, policy, rates_rps=rates, window_s=(10.0, duration_s),
                       scheduler=SchedulerConfig(compute_rule=rule))
    finally:
        UnitScheduler.try_start = orig_try
    print(f"{rule:8s} {policy}: throughput {res['throughput_rps']:.2f} req/s (window 10-"
          f"{duration_s:.0f} s, {len(trace) / duration_s:.1f} offered), rate-weighted "
          f"{res['rate_weighted_throughput_rps']:.2f}, SLO@5 "
          f"{res['slo_attainment']['attainment']:.3f}; mean prefill batch "
          f"{stats['prefill_reqs'] / max(1, stats['prefill_jobs']):.2f} over "
          f"{stats['prefill_jobs']} prefill jobs; ready prefills blocked on compute "
          f"{stats['blocked_prefill']}; peak summed share per unit "
          f"{sorted(v * 10 for v in peak.values())} %")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--policy", default="muxserve")
    args = ap.parse_args(argv)
    for rule in ("sum", "overlap"):
        run(rule, args.policy, args.duration_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
