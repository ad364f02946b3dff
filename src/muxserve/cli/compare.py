"""`muxserve compare`: the real unit runtime under muxserve, spatial and temporal, side by side,
each next to the simulator's prediction for the same setting.

    muxserve compare -o result.json                        # the four-model CPU set
    muxserve compare unit.yaml --alpha 2.1 --max-rate 0.5 --duration-s 60 -o r.json

One request list (``sim.workload.synthesize``: power-law rates, Poisson arrivals, ShareGPT
lengths capped to fit) is generated once and replayed in real time against a fresh unit per
mode, one mode after the other. Each mode's entry of ``results`` has ``muxserve simulate``'s
schema (``sim.metrics.build_result``) plus ``predicted``: the simulator's result for the same
requests, policy, shares and KV pool, priced by the CPU profile table (``muxserve profile``).
The SLO baseline of a request is its latency alone at batch 1 on the whole machine, priced
from the same profile, for the measured and the predicted runs alike.

CONFIG.yaml (all keys but ``models`` optional)::

    models:                      # in popularity order (the power law ranks them)
      - {name: smollm2-a, source: smollm2-135m, prefill_share: 0.5, decode_share: 0.5}
      - {name: gemma3-a, source: gemma3-270m, rate_rps: 0.2}   # a rate overrides the power law
    dtype: float32
    kv_pool_mib: 256
    cores: [0, 1]
    pack_weights: false          # true: each worker packs a private bf16 weight copy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from muxserve.cli.compare_setup import (
    DEFAULT_PROFILE,
    CompareSetup,
    build_setup,
    predict,
    records_of,
)
from muxserve.sim.metrics import build_result

MODES = ("muxserve", "spatial", "temporal")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("compare", help="measure the real runtime under muxserve/spatial/temporal "
                       "next to the simulator's prediction", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="unit YAML (default: the four-model CPU set)")
    p.add_argument("-o", "--output", required=True, help="result JSON path")
    p.add_argument("--alpha", type=float, default=1.0, help="power-law popularity exponent")
    p.add_argument("--max-rate", type=float, default=0.5, help="the top model's rate (req/s)")
    p.add_argument("--lengths", default="sharegpt", help="sharegpt | fixed:PROMPT,OUTPUT")
    p.add_argument("--max-prompt", type=int, default=256,
                   help="clip prompt lengths at this many tokens")
    p.add_argument("--max-output", type=int, default=128,
                   help="cap output lengths at this many tokens")
    p.add_argument("--duration-s", type=float, default=60.0, help="arrival window (s)")
    p.add_argument("--drain-s", type=float, default=None,
                   help="after the last arrival, wait at most this long for the rest "
                   "(default: = --duration-s); what is left counts as unfinished")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--modes", default=",".join(MODES), help="comma list of " + ", ".join(MODES))
    p.add_argument("--profile", default=str(DEFAULT_PROFILE),
                   help="CPU profile table for the predictions and SLO baselines")
    p.add_argument("--slo-scale", default="5", help="comma list; the first is the headline")
    p.add_argument("--dtype", help="override the config's dtype (float32 | bfloat16)")
    p.add_argument("--pack-weights", action="store_true",
                   help="each worker packs a private bf16 weight copy (faster; more memory)")
    p.add_argument("--no-predict", action="store_true", help="skip the simulator's predictions")
    p.add_argument("--quiet", action="store_true", help="no per-mode progress lines")
    p.set_defaults(func=run)


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"bad --modes {text!r}; valid: {', '.join(MODES)}")
    return modes


def run_mode(setup: CompareSetup, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    from muxserve.engine.compare import run_trace  # torch: only when actually running

    log = None if args.quiet else (lambda msg: print(f"[{mode}] {msg}", file=sys.stderr))
    run = run_trace(setup.unit_config(mode), setup.requests(), setup.drain_until_s, log=log)
    extra = {**setup.describe(), "mode": mode, "engine": run.info}
    res = build_result(records_of(setup, run.timings), mode, slo_scales=setup.slo_scales,
                       rates_rps=setup.rates_rps, extra=extra)
    if not args.no_predict:
        res["predicted"] = predict(setup, mode)
    return res


def run(args: argparse.Namespace) -> int:
    modes = parse_modes(args.modes)
    setup = build_setup(args)
    results = [run_mode(setup, mode, args) for mode in modes]
    out = {"compare": modes, **setup.describe(), "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1))
    print_table(results)
    return 0


def _fmt(v: float | None, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """One row per (mode, measured|predicted): throughput, SLO, p99 latency, TTFT, TPOT."""
    rows = []
    for r in results:
        for label, res in (("measured", r), ("predicted", r.get("predicted"))):
            if res is None:
                continue
            att = res["slo_attainment"]["attainment"]
            rows.append([r["policy"], label, f"{res['num_finished']}/{res['num_requests']}",
                         _fmt(res["throughput_rps"], digits=3),
                         _fmt(res["token_throughput_tps"], digits=1),
                         _fmt(att, 100.0, 1), _fmt(res["latency_s"]["p99"]),
                         _fmt(res["ttft_s"]["p99"]), _fmt(res["tpot_s"]["p50"], 1000.0, 0)])
    return rows


HEADER = ["mode", "source", "finished", "req/s", "tok/s", "SLO %", "p99 lat s", "p99 TTFT s",
          "p50 TPOT ms"]


def print_table(results: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    scale = results[0]["slo_attainment"]["scale"] if results else ""
    table = Table(title=f"measured vs predicted (SLO scale {scale})")
    for h in HEADER:
        table.add_column(h, justify="left" if h in ("mode", "source") else "right")
    for row in table_rows(results):
        table.add_row(*row)
    Console(file=sys.stdout).print(table)
