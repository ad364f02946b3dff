"""Throughput at equal (>= 99%) SLO attainment: a measured rate sweep per mode.

    .venv/bin/python benchmarks/bench_compare_sweep.py --dtype bfloat16 --pack-weights \
        --profile benchmarks/results/cpu_profile_bf16.json --vllm \
        --out benchmarks/results/compare_sweep.json

`bench_compare.py` runs every mode at ONE rate; below saturation every mode finishes every
request and the throughput ratio only restates the offered load. Here, per alpha and per mode
(muxserve, spatial, temporal, and with --vllm the 4-server vLLM-cpu peer), the same workload
(`muxserve compare`'s: four models, power-law rates, Poisson arrivals, ShareGPT lengths,
seed 0) is replayed at increasing top-model rates until the SLO attainment drops below 99%.
A mode's capacity is the highest rate it served at >= 99% attainment; its throughput there is
the figure the ratios compare (the paper's "throughput at 99% SLO attainment").
A mode that already misses at the lowest rate has capacity "< lowest rate".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bench_compare import compare_args, peer, run_vllm

from muxserve.cli.compare import MODES, run_mode
from muxserve.cli.compare_setup import build_setup

TARGET = 0.99


def sweep_one(alpha: float, mode: str, rates: list[float], a: argparse.Namespace,
              done: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Walk up the rates (with those of `done`, earlier runs kept as they are) until the
    attainment drops below TARGET, running only the rates not in `done`; one row per rate."""
    have = {r["rate"]: r for r in done or []}
    top_ok = max((r for r, row in have.items() if row["attainment"] >= TARGET), default=0.0)
    rows = []
    for rate in sorted(set(rates) | set(have)):
        if rate not in have and rate < top_ok:
            continue  # a higher rate already passed
        if rate in have:
            rows.append(have[rate])
            if have[rate]["attainment"] < TARGET:
                break
            continue
        args = compare_args(alpha, rate, a)
        setup = build_setup(args)
        res = run_vllm(setup, a) if mode == "vllm-cpu" else run_mode(setup, mode, args)
        att = res["slo_attainment"]["attainment"] or 0.0
        pred = res.get("predicted") or {}
        rows.append({"rate": rate, "requests": res["num_requests"],
                     "finished": res["num_finished"], "throughput_rps": res["throughput_rps"],
                     "attainment": att, "p99_latency_s": res["latency_s"]["p99"],
                     "p99_ttft_s": res["ttft_s"]["p99"], "p50_tpot_s": res["tpot_s"]["p50"],
                     "predicted_throughput_rps": pred.get("throughput_rps"),
                     "predicted_attainment": (pred.get("slo_attainment") or {}).get(
                         "attainment"),
                     "predicted_p99_latency_s": (pred.get("latency_s") or {}).get("p99")})
        print(f"alpha {alpha} {mode:9s} rate {rate}: {res['throughput_rps']:.3f} req/s, "
              f"attainment {att:.1%}", file=sys.stderr, flush=True)
        if att < TARGET:
            break
    return rows


def capacity(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The highest rate served at >= TARGET below the first rate that missed it."""
    best = None
    for r in sorted(rows, key=lambda r: r["rate"]):
        if r["attainment"] < TARGET:
            break
        best = r
    if best is None:
        return {"rate": None, "throughput_rps": None, "below": min(r["rate"] for r in rows)}
    return {"rate": best["rate"], "throughput_rps": best["throughput_rps"]}


def table(block: dict[str, Any]) -> list[str]:
    lines = [f"### alpha {block['alpha']}", "",
             "| mode | rates run (attainment) | capacity: top rate at >= 99% | req/s there |",
             "|---|---|---|---|"]
    caps = {}
    for mode, rows in block["runs"].items():
        cap = capacity(rows)
        caps[mode] = cap
        runs = ", ".join(f"{r['rate']} ({r['attainment']:.0%})" for r in rows)
        rate = cap["rate"] if cap["rate"] is not None else f"< {cap['below']}"
        thr = "-" if cap["throughput_rps"] is None else f"{cap['throughput_rps']:.3f}"
        lines.append(f"| {mode} | {runs} | {rate} | {thr} |")
    mux = caps.get("muxserve", {}).get("throughput_rps")
    lines.append("")
    for other, cap in caps.items():
        if other != "muxserve" and mux:
            if cap["throughput_rps"]:
                lines.append(f"- muxserve / {other} at >= 99% attainment: "
                             f"{mux / cap['throughput_rps']:.2f}x")
            else:
                lines.append(f"- {other} misses 99% already at {cap['below']} req/s")
    return lines + [""]


def build_parser() -> argparse.ArgumentParser:
    """The sweep's flags (compare_sweep_fidelity.py re-parses a result's command with it)."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--alphas", default="1.0,2.1")
    ap.add_argument("--rates", default="0.15,0.25,0.35,0.5,0.7,1.0,1.4",
                    help="top-model rates, ascending")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--duration-s", type=float, default=40.0)
    ap.add_argument("--drain-s", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--profile", default="benchmarks/results/cpu_profile.json")
    ap.add_argument("--slo-scale", default="5")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--pack-weights", action="store_true")
    ap.add_argument("--vllm", action="store_true", help="also sweep the vLLM-cpu peer")
    ap.add_argument("--out", default="benchmarks/results/compare_sweep.json")
    ap.add_argument("--resume", action="store_true",
                    help="keep --out's runs and add only the missing rates (finer grids, "
                         "higher rates) for the given alphas and modes")
    return ap


def main() -> int:
    a = build_parser().parse_args()
    rates = sorted(float(x) for x in a.rates.split(","))
    modes = [m for m in a.modes.split(",") if m]
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    run_info = {"date": now, "command": " ".join(sys.argv), "loadavg_before": os.getloadavg()}
    if a.resume:
        out = json.loads(Path(a.out).read_text())
        out.setdefault("resumed", []).append(run_info)
    else:
        out = {**run_info, "cores": os.cpu_count(), "target_attainment": TARGET, "blocks": []}
    t0 = time.perf_counter()
    by_alpha = {b["alpha"]: b for b in out["blocks"]}
    alphas = [float(x) for x in a.alphas.split(",")]
    for alpha in alphas:
        if alpha not in by_alpha:
            by_alpha[alpha] = {"alpha": alpha, "runs": {}}
            out["blocks"].append(by_alpha[alpha])

    def run(mode: str) -> None:
        for alpha in alphas:
            runs = by_alpha[alpha]["runs"]
            runs[mode] = sweep_one(alpha, mode, rates, a, runs.get(mode))
            Path(a.out).write_text(json.dumps(out, indent=1))

    for mode in modes:
        run(mode)
    if a.vllm:
        peer("serve")
        try:
            run("vllm-cpu")
        finally:
            peer("stop")
    out["wall_s"] = out.get("wall_s", 0.0) + time.perf_counter() - t0
    out["loadavg_after"] = os.getloadavg()
    Path(a.out).write_text(json.dumps(out, indent=1))
    text = "\n".join(line for block in out["blocks"] for line in table(block))
    print(text)
    Path(a.out).with_suffix(".tables.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
