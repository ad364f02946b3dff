"""Reproduce MuxServe's evaluation in the simulator (same scheduler, measured A100 profile).

    .venv/bin/python benchmarks/paper_eval.py --duration-s 10 -o benchmarks/results/sim_eval.json

(a) synthetic: 19 LLMs (12 x 7B, 4 x 13B, 2 x 30B, 1 x 65B) on 4 x 8 A100-80GB, rate_i =
    40 x scale x (i+1)^-alpha, alpha in {0.7, 0.9, 1.3, 1.7, 2.1}, scale in {0.5, 0.75, 1.0,
    1.25}, Poisson arrivals, ShareGPT lengths; placements planned by our planner per policy.
(b) ChatLMSYS day-55 rates at condense 500..2000: our planner's placements and the paper's own.
Every policy of one case sees the same trace (same seed). Nothing here is tuned to the paper.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from muxserve.cli.simulate import SHAREGPT, units_from_placement
from muxserve.costmodel import CostModel, get_cost_model
from muxserve.placement.placement_io import read_placement
from muxserve.placement.planner import plan
from muxserve.placement.schema import Placement
from muxserve.placement.workload_spec import Workload, read_workload, synthetic_workload
from muxserve.sim.experiment import simulate
from muxserve.sim.workload import LengthSampler, load_sharegpt, synthesize

ALPHAS = (0.7, 0.9, 1.3, 1.7, 2.1)
SCALES = (0.5, 0.75, 1.0, 1.25)
CONDENSE = ("500", "800", "1200", "1600", "2000")
POLICIES = ("muxserve", "spatial", "temporal")
ABLATION = ("muxserve", "round-robin", "fcfs")
SLO_SCALES = (5.0, 2.0, 10.0, 20.0)
CHATLMSYS = Path("..") / "shared" / "data" / "traces" / "muxserve_chatlmsys"


def chatlmsys_path(condense: str) -> Path:
    return next(CHATLMSYS.glob(f"requests_over_time_*_condense{condense}_*.yaml"))


def run_case(w: Workload, pl: Placement, policy: str, cost: CostModel, lengths: LengthSampler,
             args: argparse.Namespace, tags: dict[str, Any]) -> dict[str, Any]:
    rates = {m.name: m.rate_rps for m in w.models}
    trace = synthesize(rates, args.duration_s, lengths, args.seed)
    units = units_from_placement(pl, w, rates, cost)
    r = simulate(units, cost, trace, policy, slo_scales=SLO_SCALES, rates_rps=rates,
                 max_sim_s=args.duration_s * args.max_sim_factor,
                 window_s=(args.warmup_frac * args.duration_s, args.duration_s))
    row = {**tags, "policy": policy, "offered_rps": sum(rates.values()),
           "num_requests": r["num_requests"], "unfinished": r["sim"]["unfinished"],
           "throughput_rps": r["throughput_rps"],
           "rate_weighted_throughput_rps": r["rate_weighted_throughput_rps"],
           "slo_attainment": r["slo_attainment"]["by_scale"],
           "p99_latency_s": r["latency_s"]["p99"], "p99_ttft_s": r["ttft_s"]["p99"],
           "p99_tpot_s": r["tpot_s"]["p99"], "wall_s": r["sim"]["wall_s"],
           "units": len(units), "devices": sum(u.num_devices for u in units)}
    att = row["slo_attainment"]["5.0"]
    print(f"{json.dumps(tags)} {policy:>9}: offered {row['offered_rps']:.1f} tpt "
          f"{row['throughput_rps']:.1f} rw {row['rate_weighted_throughput_rps']:.2f} "
          f"SLO@5 {att:.3f} ({row['wall_s']:.1f} s)", flush=True)
    return row


def synthetic(args: argparse.Namespace, cost: CostModel, lengths: LengthSampler) -> list[dict]:
    rows = []
    for alpha in args.alphas:
        for scale in args.scales:
            w = synthetic_workload("paper19", alpha=alpha, max_rate_rps=40.0 * scale,
                                   avg_prompt_tokens=lengths.mean_prompt_tokens,
                                   avg_output_tokens=lengths.mean_output_tokens)
            for policy in POLICIES:
                pl = plan(w, cost, w.cluster, policy)
                rows.append(run_case(w, pl, policy, cost, lengths, args,
                                     {"part": "synthetic", "alpha": alpha, "scale": scale}))
    return rows


def chatlmsys(args: argparse.Namespace, cost: CostModel, lengths: LengthSampler) -> list[dict]:
    rows = []
    for condense in args.condense:
        w = read_workload(chatlmsys_path(condense))
        # the planner sizes batches with the lengths the simulator will draw
        w = replace(w, models=tuple(replace(m, avg_prompt_tokens=lengths.mean_prompt_tokens,
                                            avg_output_tokens=lengths.mean_output_tokens)
                                    for m in w.models))
        for source in ("ours", "paper"):
            for policy in POLICIES:
                if source == "ours":
                    pl = plan(w, cost, w.cluster, policy)
                else:
                    pl = read_placement(CHATLMSYS / "paper_placements.json",
                                        condense=condense, policy=policy)
                rows.append(run_case(w, pl, policy, cost, lengths, args,
                                     {"part": "chatlmsys", "condense": int(condense),
                                      "placement": source}))
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def summarize(rows: list[dict[str, Any]]) -> str:
    """Markdown tables: per case the three policies, and muxserve's ratios over each baseline."""
    cases: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        key = tuple((k, r[k]) for k in ("part", "alpha", "scale", "condense", "placement")
                    if k in r)
        cases.setdefault(key, {})[r["policy"]] = r
    lines = ["| case | offered req/s | rate-weighted tpt mux / spatial / temporal | "
             "x spatial | x temporal | SLO@5 mux / spatial / temporal | "
             "SLO@20 mux / spatial / temporal |", "|---|---|---|---|---|---|---|"]
    tput_ratios: dict[str, dict[str, list[float]]] = {}
    for key, by in cases.items():
        m, s, t = (by.get(p) for p in POLICIES)
        if not (m and s and t):
            continue
        rw = [x["rate_weighted_throughput_rps"] for x in (m, s, t)]
        rs, rt = _ratio(rw[0], rw[1]), _ratio(rw[0], rw[2])
        part = dict(key)["part"] + (f"/{dict(key)['placement']}" if "placement" in dict(key)
                                    else "")
        tput_ratios.setdefault(part, {"spatial": [], "temporal": []})
        if rs:
            tput_ratios[part]["spatial"].append(rs)
        if rt:
            tput_ratios[part]["temporal"].append(rt)
        name = ", ".join(f"{k}={v}" for k, v in key if k not in ("part", "placement"))
        lines.append(
            f"| {part} {name} | {m['offered_rps']:.1f} | "
            f"{' / '.join(_fmt(x) for x in rw)} | {_fmt(rs)} | {_fmt(rt)} | "
            f"{' / '.join(_fmt(x['slo_attainment']['5.0'], '.3f') for x in (m, s, t))} | "
            f"{' / '.join(_fmt(x['slo_attainment']['20.0'], '.3f') for x in (m, s, t))} |")
    lines.append("")
    for part, rr in tput_ratios.items():
        for base, vals in rr.items():
            if vals:
                lines.append(f"- {part}: muxserve / {base} rate-weighted throughput: max "
                             f"{max(vals):.2f}x, mean {sum(vals) / len(vals):.2f}x over "
                             f"{len(vals)} cases")
    lines += ["", *slo_capacity(rows), "", *summarize_ablation(rows)]
    return "\n".join(lines)


def slo_capacity(rows: list[dict[str, Any]], target: float = 0.99) -> list[str]:
    """Synthetic: per alpha and SLO scale, the highest offered rate whose attainment >= target
    (the paper's "requests within 99% SLO attainment"), and muxserve's ratio."""
    out = [f"| alpha | SLO scale | max offered req/s with >= {target:.0%} attainment: "
           "mux / spatial / temporal |", "|---|---|---|"]
    syn = [r for r in rows if r["part"] == "synthetic"]
    if not syn:
        return []
    for alpha in sorted({r["alpha"] for r in syn}):
        for scale in ("5.0", "10.0", "20.0"):
            best = {}
            for p in POLICIES:
                ok = [r["offered_rps"] for r in syn if r["alpha"] == alpha and r["policy"] == p
                      and (r["slo_attainment"][scale] or 0) >= target]
                best[p] = max(ok) if ok else None
            out.append(f"| {alpha} | {scale} | "
                       f"{' / '.join(_fmt(best[p], '.1f') for p in POLICIES)} |")
    return out


def ablation(args: argparse.Namespace, cost: CostModel, lengths: LengthSampler) -> list[dict]:
    """The paper's scheduling ablation: ADBS vs round-robin vs FCFS on MuxServe's placement."""
    rows = []
    for alpha in args.alphas:
        w = synthetic_workload("paper19", alpha=alpha, max_rate_rps=40.0 * args.ablation_scale,
                               avg_prompt_tokens=lengths.mean_prompt_tokens,
                               avg_output_tokens=lengths.mean_output_tokens)
        pl = plan(w, cost, w.cluster, "muxserve")
        for policy in ABLATION:
            rows.append(run_case(w, pl, policy, cost, lengths, args,
                                 {"part": "ablation", "alpha": alpha,
                                  "scale": args.ablation_scale}))
    return rows


def summarize_ablation(rows: list[dict[str, Any]]) -> list[str]:
    by: dict[float, dict[str, float]] = {}
    for r in rows:
        if r["part"] == "ablation":
            by.setdefault(r["alpha"], {})[r["policy"]] = r["rate_weighted_throughput_rps"]
    if not by:
        return []
    out = ["| alpha | rate-weighted tpt muxserve / round-robin / fcfs | x round-robin | x fcfs |",
           "|---|---|---|---|"]
    for alpha, t in sorted(by.items()):
        out.append(f"| {alpha} | {' / '.join(_fmt(t.get(p)) for p in ABLATION)} | "
                   f"{_fmt(_ratio(t.get('muxserve'), t.get('round-robin')))} | "
                   f"{_fmt(_ratio(t.get('muxserve'), t.get('fcfs')))} |")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=10.0, help="arrival window per run")
    ap.add_argument("--max-sim-factor", type=float, default=4.0,
                    help="stop each run's clock at this x duration (overloaded backlogs)")
    ap.add_argument("--warmup-frac", type=float, default=0.2,
                    help="throughput counts finishes in [frac x duration, duration]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--part", choices=("all", "synthetic", "chatlmsys", "ablation"),
                    default="all", help="all = synthetic + chatlmsys (ablation runs alone)")
    ap.add_argument("--ablation-scale", type=float, default=1.0)
    ap.add_argument("--alphas", type=float, nargs="*", default=list(ALPHAS))
    ap.add_argument("--scales", type=float, nargs="*", default=list(SCALES))
    ap.add_argument("--condense", nargs="*", default=list(CONDENSE))
    ap.add_argument("-o", "--output", default="benchmarks/results/sim_eval.json")
    ap.add_argument("--summarize", help="only print the tables of an earlier output JSON")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(json.loads(Path(args.summarize).read_text())["rows"]))
        return 0
    cost = get_cost_model("profile", "a100-80g")
    lengths = load_sharegpt(SHAREGPT)
    t0 = time.perf_counter()
    rows: list[dict] = []
    if args.part in ("all", "synthetic"):
        rows += synthetic(args, cost, lengths)
    if args.part in ("all", "chatlmsys"):
        rows += chatlmsys(args, cost, lengths)
    if args.part == "ablation":
        rows += ablation(args, cost, lengths)
    out = {"args": vars(args), "wall_s": time.perf_counter() - t0, "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1))
    print(summarize(rows))
    print(f"wrote {args.output} ({out['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
