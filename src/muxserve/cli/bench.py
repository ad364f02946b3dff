"""`muxserve bench`: open-loop HTTP load on any OpenAI-compatible endpoint (muxserve, vLLM,
SGLang), several models at once, measured per request and reported in `muxserve simulate`'s
JSON schema.

    muxserve bench WORKLOAD.yaml --base-url http://127.0.0.1:8000 -o r.json
    muxserve bench --base-url http://127.0.0.1:8000 --models a,b --alpha 1.0 --max-rate 2 \\
        --lengths fixed:64,32 --duration-s 30 --measure-baseline -o r.json --plot figs/
    muxserve bench --base-url smollm2-135m=http://127.0.0.1:8101 \\
        --base-url gemma3-270m=http://127.0.0.1:8102 --model-rates smollm2-135m=1,gemma3-270m=0.5 \\
        --trace azure-conv --max-prompt-tokens 1024 --max-output-tokens 128 -o r.json

The request list (arrivals, lengths) is `muxserve simulate`'s for the same workload flags and
seed. Each request is a streamed /v1/completions call with max_tokens = its output length,
ignore_eos and a synthetic prompt of about its prompt length.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muxserve.bench.report import bench_result, load_baseline, request_rows, to_records
from muxserve.bench.runner import (
    RunOptions,
    RunOutput,
    measure_baseline,
    preflight,
    run_trace,
)
from muxserve.bench.targets import (
    APIS,
    Targets,
    parse_base_urls,
    parse_pairs,
    resolve_targets,
)
from muxserve.bench.workload import (
    TRACES,
    cap_lengths,
    rates_from_flags,
    replay_trace,
    servegen_trace,
)
from muxserve.cli.simulate import (
    SHAREGPT,
    adjusted_rates,
    load_workload,
    parse_sweep,
    parse_window,
)
from muxserve.sim.workload import ARRIVALS, TraceRequest, parse_lengths, synthesize

API_KEY_ENV = ("MUXSERVE_API_KEY", "OPENAI_API_KEY")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("bench", help="load-test an OpenAI-compatible endpoint (HTTP)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", nargs="?", help="workload YAML (the original MuxServe schema) or "
                   "paper19; or use --models / --model-rates")
    p.add_argument("--base-url", action="append", required=True, metavar="URL|MODEL=URL",
                   help="endpoint for all models, or MODEL=URL for one (repeatable)")
    p.add_argument("--models", help="comma list, most popular first (rates: --alpha/--max-rate)")
    p.add_argument("--model-rates", help="explicit rates: m1=2.0,m2=0.5 (req/s)")
    p.add_argument("--api", default="completions", choices=APIS, help="/v1/completions "
                   "(a prompt) or /v1/chat/completions (one user message)")
    p.add_argument("--served-name", action="append", metavar="MODEL=NAME",
                   help="send MODEL's requests with model=NAME (e.g. llm-0=smollm2-135m)")
    p.add_argument("--alpha", type=float, help="power-law popularity exponent")
    p.add_argument("--max-rate", type=float, help="the top model's rate (req/s)")
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiply every rate")
    p.add_argument("--arrival", default="poisson", choices=ARRIVALS)
    p.add_argument("--cv", type=float, default=1.0, help="inter-arrival CV for gamma")
    p.add_argument("--lengths", default="sharegpt", help="sharegpt | fixed:PROMPT,OUTPUT")
    p.add_argument("--trace", choices=tuple(TRACES), help="replay a real trace's arrivals and "
                   "lengths instead (requests spread over the models by their rates); "
                   "servegen: per-model rate series (use --rate-scale, --lengths)")
    p.add_argument("--trace-time-scale", type=float, default=1.0,
                   help="> 1 compresses the trace's time (arrival / scale)")
    p.add_argument("--duration-s", type=float, default=60.0, help="arrival window (s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-prompt-tokens", type=int, help="clip prompt lengths")
    p.add_argument("--max-output-tokens", type=int, help="clip output lengths")
    p.add_argument("--slo-scale", default="5", help="comma list; the first is the headline")
    p.add_argument("--ttft-slo-s", type=float, help="TTFT SLO for goodput (DistServe)")
    p.add_argument("--tpot-slo-s", type=float, help="TPOT SLO for goodput (DistServe)")
    p.add_argument("--window", help="START,END seconds: steady-state throughput window")
    p.add_argument("--sweep", help="alpha=V1,V2,... or rate-scale=V1,V2,...: one run per "
                   "value, one after another, the same SLO baseline for all")
    base = p.add_mutually_exclusive_group()
    base.add_argument("--slo-baseline", help="JSON: model -> seconds, model -> {ttft_s, "
                      "tpot_s}, or an earlier bench result")
    base.add_argument("--measure-baseline", action="store_true", help="first send requests "
                      "one model at a time, alone, to measure each model's SLO baseline")
    p.add_argument("--baseline-requests", type=int, default=2,
                   help="with --measure-baseline: requests per model (the fastest counts)")
    p.add_argument("--api-key", help=f"bearer token (default: ${' or $'.join(API_KEY_ENV)})")
    p.add_argument("--max-concurrency", type=int, help="cap on requests in flight (client-side "
                   "queueing counts in latency)")
    p.add_argument("--timeout-s", type=float, default=600.0, help="per request, whole stream")
    p.add_argument("--label", default="bench", help="the result's policy field (e.g. vllm)")
    p.add_argument("-o", "--output", required=True, help="result JSON path")
    p.add_argument("--plot", help="write PNG figures into this directory")
    p.add_argument("--save-requests", metavar="FILE.jsonl",
                   help="also write one JSON line per request (times, tokens, error)")
    p.add_argument("--dry-run", action="store_true", help="build the request list, send nothing")
    p.add_argument("--no-preflight", action="store_true", help="skip the GET /v1/models check "
                   "that every endpoint is up and lists its models")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# ---- the request list -----------------------------------------------------------------------
def workload_rates(args: argparse.Namespace) -> tuple[dict[str, float], str]:
    """(rates, source): a workload file rated as `muxserve simulate` does, or the flags."""
    if args.workload:
        if args.models or args.model_rates:
            raise ValueError("give the models once: a WORKLOAD file or --models/--model-rates")
        w = load_workload(args.workload, None)
        return adjusted_rates(w, args.alpha, args.max_rate, args.rate_scale), w.source
    explicit = parse_pairs(args.model_rates, "--model-rates")
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    if args.trace and models and args.max_rate is None:
        return {m: 1.0 for m in models}, "models"  # trace replay: equal weights
    return rates_from_flags(models, explicit, args.alpha, args.max_rate, args.rate_scale), (
        "model-rates" if explicit else "models")


def build_trace(args: argparse.Namespace, rates: dict[str, float]
                ) -> tuple[list[TraceRequest], dict[str, float], dict[str, Any] | None]:
    """(requests, offered rates, trace info). Synthetic: simulate's synthesize() call, same
    arguments. Trace replay: offered rates are the replayed counts / duration."""
    if not args.duration_s > 0:
        raise ValueError(f"--duration-s must be > 0, got {args.duration_s}")
    if args.trace == "servegen":
        trace, series = servegen_trace(list(rates), parse_lengths(args.lengths, SHAREGPT),
                                       args.seed, args.duration_s, args.trace_time_scale,
                                       args.rate_scale)
        info: dict[str, Any] | None = {"name": args.trace, "time_scale": args.trace_time_scale,
                                       "rate_scale": args.rate_scale, "series": series}
    elif args.trace:
        trace = replay_trace(args.trace, list(rates), args.seed, weights=list(rates.values()),
                             time_scale=args.trace_time_scale, duration_s=args.duration_s)
        info = {"name": args.trace, "time_scale": args.trace_time_scale, "weights": rates}
    else:
        lengths = parse_lengths(args.lengths, SHAREGPT)
        trace = synthesize(rates, args.duration_s, lengths, args.seed, args.arrival, args.cv)
        return (cap_lengths(trace, args.max_prompt_tokens, args.max_output_tokens), rates,
                None)
    offered = {m: sum(r.model == m for r in trace) / args.duration_s for m in rates}
    return cap_lengths(trace, args.max_prompt_tokens, args.max_output_tokens), offered, info


def _baseline_lengths(trace: list[TraceRequest], models: list[str]) -> dict[str, tuple[int, int]]:
    """Each model's median request (prompt, output); the run's median for a model with none."""
    import numpy as np

    def med(rs: list[TraceRequest]) -> tuple[int, int]:
        return (int(np.median([r.prompt_tokens for r in rs])),
                int(np.median([r.output_tokens for r in rs])))

    overall = med(trace) if trace else (32, 32)
    return {m: med(rs) if (rs := [r for r in trace if r.model == m]) else overall
            for m in models}


# ---- running --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Level:
    """One load level: its flags, requests, offered rates and trace info."""

    args: argparse.Namespace
    trace: list[TraceRequest]
    offered: dict[str, float]
    trace_info: dict[str, Any] | None
    source: str


def _levels(args: argparse.Namespace) -> tuple[list[_Level], tuple[str, list[float]] | None]:
    """The run's load levels (one, or one per --sweep value), all built before anything is
    sent so that bad flags fail at once."""
    sweep = parse_sweep(args.sweep) if args.sweep else None
    variants = [args]
    if sweep:
        attr = "alpha" if sweep[0] == "alpha" else "rate_scale"
        variants = [argparse.Namespace(**{**vars(args), attr: v}) for v in sweep[1]]
    levels = []
    for a in variants:
        rates, source = workload_rates(a)
        trace, offered, info = build_trace(a, rates)
        levels.append(_Level(a, trace, offered, info, source))
    return levels, sweep


def _get_baseline(args: argparse.Namespace, trace: list[TraceRequest], models: list[str],
                  targets: Targets, opts: RunOptions) -> tuple[dict[str, Any] | None, str | None]:
    if args.slo_baseline:
        baseline = load_baseline(args.slo_baseline)
        if missing := [m for m in models if m not in baseline]:
            print(f"bench: warning: no SLO baseline for {missing}: their requests count as "
                  "missing the SLO", file=sys.stderr)
        return baseline, args.slo_baseline
    if args.measure_baseline:
        measured, failed = measure_baseline(_baseline_lengths(trace, models), targets, opts,
                                            args.baseline_requests)
        for m, err in failed.items():
            print(f"bench: warning: no SLO baseline for {m!r}, its request failed: {err}",
                  file=sys.stderr)
        return measured, "measured"
    return None, None


def _execute(lv: _Level, targets: Targets, opts: RunOptions, baseline: dict[str, Any] | None,
             base_src: str | None) -> tuple[dict[str, Any], list[dict[str, Any]], RunOutput]:
    """Send one level's requests; (result, per-request rows, raw output)."""
    from muxserve.bench.progress import LiveProgress

    args, trace = lv.args, lv.trace
    with LiveProgress(len(trace), not args.quiet) as bar:
        out = run_trace(trace, targets, opts, bar.on_sent, bar.on_done)
    if out.interrupted:
        print(f"bench: interrupted after {len(out.outcomes)} of {len(trace)} requests; the "
              "result covers those", file=sys.stderr)
        trace = trace[:len(out.outcomes)]
    extra = {"workload": lv.source, "alpha": args.alpha, "rate_scale": args.rate_scale,
             "rates_rps": lv.offered, "duration_s": args.duration_s, "seed": args.seed,
             "arrival": args.arrival, "cv": args.cv, "lengths": args.trace or args.lengths}
    client = {"api": args.api, "timeout_s": args.timeout_s,
              "max_concurrency": args.max_concurrency, "served_name": dict(targets.served_name),
              "max_prompt_tokens": args.max_prompt_tokens,
              "max_output_tokens": args.max_output_tokens}
    result = bench_result(trace, out, label=args.label, rates_rps=lv.offered,
                          base_url=targets.base_url, baseline=baseline, baseline_source=base_src,
                          slo_scales=[float(s) for s in str(args.slo_scale).split(",")],
                          ttft_slo_s=args.ttft_slo_s, tpot_slo_s=args.tpot_slo_s,
                          window_s=parse_window(args.window), trace_info=lv.trace_info,
                          client=client, extra=extra)
    if args.plot and not args.sweep:
        from muxserve.bench.plots import plot_timeline
        from muxserve.sim.plots import plot_result

        records = to_records(trace, out, baseline)
        for f in [*plot_result(result, args.plot), plot_timeline(records, args.label, args.plot)]:
            print(f"wrote {f}", file=sys.stderr)
    return result, request_rows(trace, out), out


def run(args: argparse.Namespace) -> int:
    levels, sweep = _levels(args)
    models = list(levels[0].offered)
    targets = resolve_targets(models, parse_base_urls(args.base_url),
                              parse_pairs(args.served_name, "--served-name"), args.api)
    for lv in levels:
        counts = {m: sum(r.model == m for r in lv.trace) for m in models}
        tag = f" ({sweep[0]}={getattr(lv.args, sweep[0].replace('-', '_'))})" if sweep else ""
        print(f"bench{tag}: {len(lv.trace)} requests over {args.duration_s:g} s: "
              + ", ".join(f"{m} {n} -> {targets.base_url[m]}" for m, n in counts.items()),
              file=sys.stderr)
    if args.dry_run:
        return 0
    api_key = args.api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)),
                                   None)
    opts = RunOptions(args.timeout_s, args.max_concurrency, api_key, args.seed)
    if not args.no_preflight:
        preflight(targets, opts)
    # one baseline for every level: each load is held to the same SLO
    baseline, base_src = _get_baseline(args, levels[0].trace, models, targets, opts)
    results, rows, interrupted = [], [], False
    for lv in levels:
        result, level_rows, out = _execute(lv, targets, opts, baseline, base_src)
        if sweep:
            value = getattr(lv.args, sweep[0].replace("-", "_"))
            result["sweep"] = {sweep[0]: value}
            level_rows = [{**row, "sweep": {sweep[0]: value}} for row in level_rows]
        results.append(result)
        rows += level_rows
        if interrupted := out.interrupted:
            break
    final: Any = ({"sweep": sweep[0], "values": sweep[1], "results": results} if sweep
                  else results[0])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(final, indent=1))
    if args.save_requests:
        Path(args.save_requests).parent.mkdir(parents=True, exist_ok=True)
        with open(args.save_requests, "w") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    if args.plot and sweep:
        from muxserve.sim.plots import plot_sweep

        for f in plot_sweep(final, args.plot):
            print(f"wrote {f}", file=sys.stderr)
    for result in results:
        _summary(result)
    return 130 if interrupted else 0


def _fmt(v: float | None, scale: float = 1.0, unit: str = "") -> str:
    return "n/a" if v is None else f"{v * scale:.1f}{unit}"


def _summary(r: dict[str, Any]) -> None:
    if "sweep" in r:
        print(" ".join(f"{k}={v}" for k, v in r["sweep"].items()))
    rows = [("total", r, r["errors"]["total"])] + [
        (m, pm, r["errors"]["per_model"][m]["total"]) for m, pm in r["per_model"].items()]
    for name, s, errs in rows:
        print(f"{name:>16}: {s['num_finished']}/{s['num_requests']} ok, {errs} errors, "
              f"{s['throughput_rps']:.2f} req/s, {s['token_throughput_tps']:.1f} tok/s, "
              f"TTFT p50 {_fmt(s['ttft_s']['p50'], 1e3, ' ms')}, "
              f"TPOT p50 {_fmt(s['tpot_s']['p50'], 1e3, ' ms')}, "
              f"SLO@{s['slo_attainment']['scale']:g} "
              f"{_fmt(s['slo_attainment']['attainment'], 100, '%')}")
