"""`muxserve plan`: place LLMs on a cluster and write the placement YAML.

    muxserve plan WORKLOAD.yaml -o placement.yaml [--policy muxserve|spatial|temporal]
                  [--cluster 4x8xa100-80g] [--cost-model profile|roofline]
    muxserve plan --synthetic paper19 --alpha 0.9 --max-rate 40 -o placement.yaml
    muxserve plan WORKLOAD.yaml --evaluate paper_placements.json --condense 2000

WORKLOAD is a workload file in the original MuxServe schema (``cluster``, ``models[]`` with
``name``/``model``/``rate``, ``avg_prompt_len``, ``avg_output_len``). The cluster defaults to
the workload's. ``--evaluate`` re-estimates an existing placement (ours, hand-written, or the
paper's JSON) with the same cost model instead of planning.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from muxserve.config.devices import Cluster
from muxserve.costmodel import COST_MODEL_KINDS, get_cost_model
from muxserve.placement.estimator import GIB
from muxserve.placement.placement_io import read_placement, write_placement
from muxserve.placement.planner import evaluate, plan
from muxserve.placement.schema import POLICIES, Placement, cluster_str
from muxserve.placement.validate import limit_violations
from muxserve.placement.workload_spec import SYNTHETIC, Workload, read_workload, synthetic_workload


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plan", help="place LLMs on a cluster (MuxServe's placement optimizer)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", nargs="?", help="workload YAML (original MuxServe schema)")
    p.add_argument("-o", "--output", help="placement YAML to write")
    p.add_argument("--policy", default="muxserve", choices=POLICIES)
    p.add_argument("--cluster", help="NODESxDEVICESxPRESET, e.g. 4x8xa100-80g "
                   "(default: the workload's; device a100-80g)")
    p.add_argument("--cost-model", default="profile", choices=COST_MODEL_KINDS)
    p.add_argument("--synthetic", choices=SYNTHETIC, help="plan the paper's synthetic set "
                   "instead of a workload file")
    p.add_argument("--alpha", type=float, default=0.9, help="synthetic: popularity exponent")
    p.add_argument("--max-rate", type=float, default=40.0,
                   help="synthetic: the most popular model's rate (req/s)")
    p.add_argument("--evaluate", metavar="PLACEMENT",
                   help="estimate this placement instead of planning one")
    p.add_argument("--condense", help="with the paper's placements JSON: which workload")
    p.add_argument("--quiet", action="store_true", help="no table, one summary line")
    p.set_defaults(func=run)


def load_workload(args: argparse.Namespace, cluster: Cluster | None) -> Workload:
    if args.synthetic:
        if args.workload:
            raise ValueError("give either a workload file or --synthetic, not both")
        return synthetic_workload(args.synthetic, args.alpha, args.max_rate, cluster)
    if not args.workload:
        raise ValueError("missing WORKLOAD (a workload YAML) or --synthetic paper19")
    return read_workload(args.workload)


def run(args: argparse.Namespace) -> int:
    cluster = Cluster.parse(args.cluster) if args.cluster else None
    workload = load_workload(args, cluster)
    cluster = cluster or workload.cluster
    if cluster is None:
        raise ValueError("the workload has no 'cluster'; pass --cluster NODESxDEVICESxPRESET")
    cost = get_cost_model(args.cost_model, cluster.device)
    t0 = time.perf_counter()
    if args.evaluate:
        given = read_placement(args.evaluate, cluster=cluster, condense=args.condense,
                               policy=args.policy)
        pl = evaluate(given, workload, cost, cluster, cost_name=args.cost_model)
    else:
        pl = plan(workload, cost, cluster, args.policy, cost_name=args.cost_model)
    wall_s = time.perf_counter() - t0
    problems = limit_violations(pl, workload, cost, cluster)
    if args.quiet:
        print(f"{pl.policy}: {len(pl.units)} units on {pl.num_devices_used}/"
              f"{cluster.num_devices} devices, rate-weighted tpt {pl.est_objective_rps:.2f} "
              f"req/s, total {pl.est_total_rps:.2f}/{pl.total_rate_rps:.2f} req/s "
              f"({wall_s:.2f} s)")
    else:
        print_summary(pl, workload, cluster, wall_s)
    for msg in problems:
        print(f"warning: {msg}")
    if args.output:
        write_placement(pl, args.output)
        print(f"wrote {args.output}")
    return 0


def _devices(devs: tuple[int, ...] | None) -> str:
    if not devs:
        return "?"
    if list(devs) == list(range(devs[0], devs[0] + len(devs))) and len(devs) > 1:
        return f"{devs[0]}-{devs[-1]}"
    return ",".join(map(str, devs))


def _unit_rows(pl: Placement, workload: Workload, cluster: Cluster) -> list[list[Any]]:
    demands = workload.by_name()
    mem = cluster.device.memory_bytes
    rows = []
    for k, u in enumerate(pl.units):
        weights = 0.0
        kv_used = 0.0
        for m in u.models:
            d = demands[m.name]
            weights += d.arch.weight_bytes() / u.num_gpus
            kv_used += (m.max_num_seqs * d.arch.kv_bytes_per_token() / u.num_gpus
                        * (d.avg_prompt_tokens + d.avg_output_tokens))
        for j, m in enumerate(u.models):
            served = m.est_throughput_rps or 0.0
            rate = m.rate_rps or 0.0
            rows.append([
                str(k) if j == 0 else "",
                f"{u.node}:{_devices(u.devices)}" if j == 0 else "",
                m.name, demands[m.name].arch.name, str(m.tensor_parallel_size),
                f"{m.prefill_share_pct}/{m.decode_share_pct}", str(m.max_num_seqs),
                f"{rate:.2f}", f"{served:.2f}", f"{100 * served / rate:.0f}%" if rate else "-",
                (f"{u.decode_share_sum_pct}% / {100 * (weights + kv_used) / mem:.0f}%"
                 if j == 0 else "")])
    return rows


def print_summary(pl: Placement, workload: Workload, cluster: Cluster, wall_s: float) -> None:
    """A rich table: one row per model, grouped by unit."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{pl.policy} placement on {cluster_str(cluster)} "
                    f"(cost model: {pl.cost_model})")
    for col, just in (("unit", "right"), ("node:devices", "left"), ("model", "left"),
                      ("arch", "left"), ("TP", "right"), ("SM% pre/dec", "right"),
                      ("max seqs", "right"), ("rate", "right"), ("est tpt", "right"),
                      ("met", "right"), ("dec share / mem", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in _unit_rows(pl, workload, cluster):
        t.add_row(*row)
    c = Console()
    if c.width < 132:  # pipes and CI logs report 80 columns; the table needs about 130
        c = Console(width=132)
    c.print(t)
    c.print(f"units {len(pl.units)}, devices used {pl.num_devices_used}/{cluster.num_devices}; "
            f"rate-weighted mean throughput {pl.est_objective_rps:.2f} req/s; total "
            f"{pl.est_total_rps:.2f} of {pl.total_rate_rps:.2f} req/s demanded; "
            f"planned in {wall_s:.2f} s")
    kv = [u.kv_bytes_per_device or 0 for u in pl.units]
    if kv:
        c.print(f"KV pool per device: {min(kv) / GIB:.1f}-{max(kv) / GIB:.1f} GiB")
