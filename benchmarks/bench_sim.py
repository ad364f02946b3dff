"""Simulator speed: the condense-2000 ChatLMSYS workload (16 LLMs, ~190 req/s) on 4 x 8 A100.

    .venv/bin/python benchmarks/bench_sim.py                     # one simulated hour
    .venv/bin/python benchmarks/bench_sim.py --duration-s 120 --profile

Reports simulated requests per wall-clock second (trace generation and placement excluded,
metrics included), and per CPU second with the load average (the machine is shared, so wall
time depends on others' load). Target: one hour (~680k requests) in under 3 minutes.
``--track-block-ids`` names every KV block as the engine does (same result, ~4x slower).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
from pathlib import Path

from muxserve.cli.simulate import SHAREGPT, units_from_placement
from muxserve.costmodel import get_cost_model
from muxserve.placement.placement_io import read_placement
from muxserve.placement.planner import plan
from muxserve.placement.workload_spec import read_workload
from muxserve.sim.experiment import simulate
from muxserve.sim.workload import load_sharegpt, synthesize

CHATLMSYS = Path("..") / "shared" / "data" / "traces" / "muxserve_chatlmsys"
WORKLOAD = CHATLMSYS / ("requests_over_time_models_days_from_day55_to_day55_condense2000_N17_"
                        "maxrate_32_avgrate_11.yaml")
PAPER_PLACEMENTS = CHATLMSYS / "paper_placements.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=3600.0)
    ap.add_argument("--placement", choices=("paper", "ours"), default="paper")
    ap.add_argument("--policy", default="muxserve")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", action="store_true", help="print the 25 hottest functions")
    ap.add_argument("--track-block-ids", action="store_true",
                    help="name every KV block as the engine does (slower; same result)")
    ap.add_argument("-o", "--output", help="write the result JSON here")
    args = ap.parse_args(argv)

    w = read_workload(WORKLOAD)
    cost = get_cost_model("profile", "a100-80g")
    rates = {m.name: m.rate_rps for m in w.models}
    t0 = time.perf_counter()
    trace = synthesize(rates, args.duration_s, load_sharegpt(SHAREGPT), args.seed)
    t_trace = time.perf_counter() - t0
    if args.placement == "paper":
        pl = read_placement(PAPER_PLACEMENTS, condense="2000", policy=args.policy
                            if args.policy in ("spatial", "temporal") else "muxserve")
    else:
        pl = plan(w, cost, w.cluster, "muxserve")
    units = units_from_placement(pl, w, rates, cost)
    prof = cProfile.Profile() if args.profile else None
    t0, cpu0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    res = simulate(units, cost, trace, args.policy, rates_rps=rates,
                   track_block_ids=args.track_block_ids)
    if prof:
        prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    sim = res["sim"]
    print(f"requests {len(trace)} ({len(trace) / args.duration_s:.1f} req/s offered, "
          f"{args.duration_s:.0f} s), trace built in {t_trace:.1f} s")
    print(f"simulated in {wall:.1f} s wall (loop {sim['wall_s']:.1f} s): "
          f"{len(trace) / wall:.0f} simulated req/s, {sim['num_events'] / sim['wall_s']:.0f} "
          f"events/s, {sim['num_jobs']} jobs, simulated end {sim['end_s']:.0f} s")
    # on a shared machine the wall time depends on the load; CPU time much less
    print(f"CPU time {cpu:.1f} s: {len(trace) / cpu:.0f} simulated req per CPU second; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"throughput {res['throughput_rps']:.1f} req/s, rate-weighted "
          f"{res['rate_weighted_throughput_rps']:.2f}, SLO@5 "
          f"{res['slo_attainment']['attainment']:.3f}, unfinished {sim['unfinished']}")
    if args.output:
        res["bench"] = {"wall_s": wall, "cpu_s": cpu, "sim_requests_per_s": len(trace) / wall,
                        "loadavg": os.getloadavg()}
        Path(args.output).write_text(json.dumps(res, indent=1))
    if prof:
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
