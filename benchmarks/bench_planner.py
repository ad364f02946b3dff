"""Planner benchmark: wall time and estimated throughput, ours next to the paper's placements.

    .venv/bin/python benchmarks/bench_planner.py [--repeat 3] [--skip-scale]

Prints Markdown tables:
1. planner wall time (cold caches, median of --repeat) on the 16-model ChatLMSYS workload
   (condense 2000) and the paper's 19-model synthetic set on 4 x 8 A100-80GB, and 1,000 LLMs
   (sizes drawn 12:4:2:1 from llama-7b/13b/30b/65b, power-law popularity) on 128 x 8 A100;
2. estimated rate-weighted mean throughput of our placement and the paper's placement for
   every ChatLMSYS condense factor and policy, evaluated by the same cost model;
3. the per-node decomposition used at scale against full enumeration on 4 x 8.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

from muxserve.config.devices import Cluster
from muxserve.costmodel import get_cost_model
from muxserve.costmodel.base import CostModel
from muxserve.placement.estimator import PlannerConfig
from muxserve.placement.placement_io import paper_placements
from muxserve.placement.planner import evaluate, plan
from muxserve.placement.workload_spec import (
    Workload,
    powerlaw_demands,
    read_workload,
    synthetic_workload,
)

CHATLMSYS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "traces" / (
    "muxserve_chatlmsys")
CONDENSE = ("500", "800", "1200", "1600", "2000")
SIZES = ("llama-7b", "llama-13b", "llama-30b", "llama-65b")


def chatlmsys(condense: str) -> Workload:
    return read_workload(next(CHATLMSYS.glob(f"*_condense{condense}_*.yaml")))


def fleet(n: int, nodes: int, alpha: float, max_rate: float, seed: int = 0) -> Workload:
    rng = random.Random(seed)
    sizes = rng.choices(SIZES, weights=(12, 4, 2, 1), k=n)
    return Workload(powerlaw_demands(sizes, alpha, max_rate, 161.0, 338.0),
                    Cluster.parse(f"{nodes}x8xa100-80g"), f"fleet{n}")


def timed(w: Workload, cost: CostModel, repeat: int, **kw: object) -> tuple[float, object]:
    times, pl = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        pl = plan(w, cost, **kw)  # type: ignore[arg-type]
        times.append(time.perf_counter() - t)
    return statistics.median(times), pl


def wall_times(costs: dict[str, CostModel], repeat: int, skip_scale: bool) -> None:
    print("| case | cost model | policy | wall s (median) | units | devices | "
          "rate-weighted tpt | total tpt / demanded (req/s) |")
    print("|---|---|---|---|---|---|---|---|")
    cases = [("ChatLMSYS condense 2000, 16 LLMs, 4x8", chatlmsys("2000"), ("profile",)),
             ("paper19 alpha 0.9 max 40, 4x8", synthetic_workload("paper19", 0.9, 40.0),
              ("profile",))]
    if not skip_scale:
        total19 = synthetic_workload("paper19", 0.9, 40.0).total_rate_rps
        s = sum((i + 1) ** -0.9 for i in range(1000))
        cases += [
            ("1000 LLMs alpha 0.9 top 40 req/s, 128x8", fleet(1000, 128, 0.9, 40.0),
             ("roofline", "profile")),
            # same load per device as paper19 on 4x8: total = 32 x paper19's total
            ("1000 LLMs alpha 0.9 fleet-scaled, 128x8", fleet(1000, 128, 0.9, 32 * total19 / s),
             ("roofline", "profile"))]
    for name, w, kinds in cases:
        for kind in kinds:
            for policy in ("muxserve", "spatial", "temporal"):
                rep = repeat if len(w.models) < 100 else 1
                try:
                    dt, pl = timed(w, costs[kind], rep, policy=policy)
                except ValueError as e:  # spatial cannot give 1,000 models their own GPUs
                    print(f"| {name} | {kind} | {policy} | - | infeasible: {e} | | | |")
                    continue
                print(f"| {name} | {kind} | {policy} | {dt:.3f} | {len(pl.units)} | "  # type: ignore[attr-defined]
                      f"{pl.num_devices_used} | {pl.est_objective_rps:.2f} | "  # type: ignore[attr-defined]
                      f"{pl.est_total_rps:.1f} / {pl.total_rate_rps:.1f} |")  # type: ignore[attr-defined]


def versus_paper(costs: dict[str, CostModel]) -> None:
    table = paper_placements(CHATLMSYS / "paper_placements.json")
    print("\n| condense | cost model | policy | ours: rate-weighted tpt | paper's: rate-weighted "
          "tpt | ours / paper | ours total | paper total | demanded |")
    print("|---|---|---|---|---|---|---|---|---|")
    for condense in CONDENSE:
        w = chatlmsys(condense)
        for kind, cost in costs.items():
            for policy in ("muxserve", "spatial", "temporal"):
                ours = plan(w, cost, policy=policy)
                paper = evaluate(table[(condense, policy)], w, cost)
                print(f"| {condense} | {kind} | {policy} | {ours.est_objective_rps:.2f} | "
                      f"{paper.est_objective_rps:.2f} | "
                      f"{ours.est_objective_rps / paper.est_objective_rps:.3f} | "  # type: ignore[operator]
                      f"{ours.est_total_rps:.1f} | {paper.est_total_rps:.1f} | "
                      f"{w.total_rate_rps:.1f} |")


def decomposition_quality(costs: dict[str, CostModel]) -> None:
    print("\n| workload (4x8) | cost model | full enumeration: tpt, s | per-node decomposition: "
          "tpt, s |")
    print("|---|---|---|---|")
    decomposed = PlannerConfig(full_enumeration_limit=0)
    for name, w in (("ChatLMSYS 2000", chatlmsys("2000")), ("ChatLMSYS 800", chatlmsys("800")),
                    ("paper19 alpha 0.9", synthetic_workload("paper19", 0.9, 40.0)),
                    ("paper19 alpha 2.1", synthetic_workload("paper19", 2.1, 40.0))):
        for kind, cost in costs.items():
            a_s, a = timed(w, cost, 1)
            b_s, b = timed(w, cost, 1, config=decomposed)
            print(f"| {name} | {kind} | {a.est_objective_rps:.2f}, {a_s:.2f} | "  # type: ignore[attr-defined]
                  f"{b.est_objective_rps:.2f}, {b_s:.2f} |")  # type: ignore[attr-defined]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-scale", action="store_true", help="skip the 1,000-LLM cases")
    args = ap.parse_args()
    t = time.perf_counter()
    costs = {"profile": get_cost_model("profile"), "roofline": get_cost_model("roofline")}
    print(f"cost models loaded in {time.perf_counter() - t:.2f} s\n")
    wall_times(costs, args.repeat, args.skip_scale)
    versus_paper(costs)
    decomposition_quality(costs)


if __name__ == "__main__":
    main()
