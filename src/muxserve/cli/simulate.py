"""`muxserve simulate`: run a workload on a placement in the discrete-event simulator.

    muxserve simulate WORKLOAD.yaml [--placement P.yaml] [--policy P] -o RESULT.json
    muxserve simulate paper19 --alpha 1.3 --max-rate 40 --duration-s 120 -o r.json
    muxserve simulate paper19 --sweep alpha=0.7,0.9,1.3 --plot figs/ -o sweep.json

WORKLOAD is a workload YAML (the original schema, see muxserve.placement.workload_spec) or the
name of the paper's synthetic set (``paper19``). Without --placement a placement is planned for
the policy (round-robin and fcfs are scheduler ablations: they use MuxServe's placement).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from muxserve.config.devices import Cluster
from muxserve.costmodel import COST_MODEL_KINDS, CostModel, get_cost_model
from muxserve.placement.placement_io import read_placement
from muxserve.placement.schema import Placement
from muxserve.placement.workload_spec import SYNTHETIC, Workload, read_workload, synthetic_workload
from muxserve.scheduler import POLICIES, UnitModel
from muxserve.sim.experiment import simulate
from muxserve.sim.simulator import SimUnit
from muxserve.sim.traces import TRACE_KINDS, load_trace, replay
from muxserve.sim.workload import (
    ARRIVALS,
    TraceRequest,
    parse_lengths,
    powerlaw_rates,
    synthesize,
)

SHAREGPT = Path("..") / "shared" / "data" / "traces" / "sharegpt" / (
    "sharegpt_v3_first_turn_lengths.csv")
PLACEMENT_POLICY = {"muxserve": "muxserve", "spatial": "spatial", "temporal": "temporal",
                    "round-robin": "muxserve", "fcfs": "muxserve"}
SWEEP_POLICIES = ("muxserve", "spatial", "temporal")
SWEEP_KEYS = ("alpha", "rate-scale")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("simulate", help="simulate a workload on a placement (discrete-event)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workload", help=f"workload YAML, or a synthetic set: {', '.join(SYNTHETIC)}")
    p.add_argument("--placement", help="placement YAML/JSON (ours, original per-mesh, or the "
                   "paper's placements JSON with --condense); default: plan one")
    p.add_argument("--condense", help="with the paper's placements JSON: which workload")
    p.add_argument("--policy", default="muxserve", choices=POLICIES)
    p.add_argument("-o", "--output", required=True, help="result JSON path")
    p.add_argument("--cluster", help="NODESxDEVICESxPRESET (default: the workload's, else "
                   "4x8xa100-80g)")
    p.add_argument("--alpha", type=float, help="re-rate models by a power law with this alpha")
    p.add_argument("--max-rate", type=float, help="the top model's rate (req/s)")
    p.add_argument("--rate-scale", type=float, default=1.0, help="multiply every rate")
    p.add_argument("--arrival", default="poisson", choices=ARRIVALS)
    p.add_argument("--cv", type=float, default=1.0, help="inter-arrival CV for gamma")
    p.add_argument("--lengths", default="sharegpt", help="sharegpt | fixed:PROMPT,OUTPUT")
    p.add_argument("--duration-s", type=float, default=60.0, help="arrival window (s)")
    p.add_argument("--max-sim-s", type=float, help="stop the clock here (default: drain)")
    p.add_argument("--window", help="START,END seconds: throughput = requests finished in this "
                   "window / its width (steady state; default: finished / whole span)")
    p.add_argument("--trace", help="replay a real trace instead of synthetic arrivals: "
                   f"KIND:PATH with KIND in {', '.join(TRACE_KINDS)}; its requests are spread "
                   "over the models by their rates (lengths come from the trace)")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="with --trace: compress time by this factor")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cost-model", default="profile", choices=COST_MODEL_KINDS)
    p.add_argument("--slo-scale", default="5", help="comma list; the first is the headline")
    p.add_argument("--sweep", help="alpha=V1,V2,... or rate-scale=V1,V2,...: run muxserve, "
                   "spatial and temporal over these values")
    p.add_argument("--plot", help="write PNG figures into this directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


# ---- inputs ---------------------------------------------------------------------------------
def load_workload(spec: str, cluster: str | None) -> Workload:
    w = synthetic_workload(spec) if spec in SYNTHETIC else read_workload(spec)
    if cluster:
        w = replace(w, cluster=Cluster.parse(cluster))
    elif w.cluster is None:
        w = replace(w, cluster=Cluster.parse("4x8xa100-80g"))
    return w


def adjusted_rates(w: Workload, alpha: float | None, max_rate: float | None,
                   rate_scale: float) -> dict[str, float]:
    """The workload's rates, re-rated by --alpha/--max-rate, then scaled by --rate-scale."""
    rates = [m.rate_rps for m in w.models]
    if alpha is not None:
        rates = powerlaw_rates(len(rates), alpha, max_rate or max(rates))
    elif max_rate is not None:
        top = max(rates)
        if top <= 0:
            raise ValueError("--max-rate: every model of the workload has rate 0")
        rates = [r * max_rate / top for r in rates]
    if rate_scale <= 0:
        raise ValueError(f"--rate-scale must be > 0, got {rate_scale}")
    return {m.name: r * rate_scale for m, r in zip(w.models, rates, strict=True)}


def get_placement(args: argparse.Namespace, w: Workload, rates: dict[str, float],
                  policy: str, cost: CostModel) -> Placement:
    pl_policy = PLACEMENT_POLICY[policy]
    if args.placement:
        return read_placement(args.placement, w.cluster, condense=args.condense,
                              policy=pl_policy)
    from muxserve.placement.planner import plan  # imported here to keep startup light

    demands = tuple(replace(m, rate_rps=rates[m.name]) for m in w.models)
    return plan(replace(w, models=demands), cost, w.cluster, pl_policy,
                cost_name=args.cost_model)


def units_from_placement(pl: Placement, w: Workload, rates: dict[str, float],
                         cost: CostModel) -> list[SimUnit]:
    """Placement dataclasses -> plain SimUnits (sim may not import placement)."""
    demands = w.by_name()
    missing = sorted(set(demands) - set(pl.model_names))
    if missing:
        raise ValueError(f"placement does not place workload models {missing}")
    units = []
    for u in pl.units:
        models = []
        for i, m in enumerate(u.models):
            if m.name not in demands:
                continue  # placed but not in this workload: no traffic
            models.append(UnitModel(
                model_id=i, name=m.name, arch=demands[m.name].arch, rate_rps=rates[m.name],
                prefill_share=m.prefill_share_pct / 100.0,
                decode_share=m.decode_share_pct / 100.0, max_num_seqs=m.max_num_seqs,
                tp=u.num_gpus))
        if not models:
            continue
        kv_blocks = None
        if u.kv_bytes_per_device is not None:
            kv_blocks = int(u.kv_bytes_per_device // (8192 * cost.dtype_bytes))
        units.append(SimUnit(tuple(models), u.num_gpus, kv_blocks=kv_blocks))
    return units


# ---- running --------------------------------------------------------------------------------
def run_one(args: argparse.Namespace, w: Workload, policy: str, alpha: float | None,
            rate_scale: float, cost: CostModel, progress: bool) -> dict[str, Any]:
    rates = adjusted_rates(w, alpha, args.max_rate, rate_scale)
    lengths = parse_lengths(args.lengths, SHAREGPT)
    if args.trace:
        trace = replay_trace(args.trace, rates, args)
    else:
        trace = synthesize(rates, args.duration_s, lengths, args.seed, args.arrival, args.cv)
    pl = get_placement(args, w, rates, policy, cost)
    units = units_from_placement(pl, w, rates, cost)
    slo_scales = [float(s) for s in str(args.slo_scale).split(",")]
    extra = {"workload": w.source, "alpha": alpha, "rate_scale": rate_scale,
             "rates_rps": rates, "duration_s": args.duration_s, "seed": args.seed,
             "arrival": args.arrival, "cv": args.cv, "lengths": args.lengths,
             "cost_model": args.cost_model, "placement_policy": pl.policy,
             "units": [{"num_devices": u.num_devices, "models": [m.name for m in u.models]}
                       for u in units]}
    window = parse_window(args.window)
    with _progress(progress, f"{policy}", args.max_sim_s or args.duration_s) as tick:
        return simulate(units, cost, trace, policy, slo_scales=slo_scales, rates_rps=rates,
                        max_sim_s=args.max_sim_s, window_s=window, progress=tick, extra=extra)


def replay_trace(spec: str, rates: dict[str, float], args: argparse.Namespace
                 ) -> list[TraceRequest]:
    kind, sep, path = spec.partition(":")
    if not sep or kind not in TRACE_KINDS:
        raise ValueError(f"bad --trace {spec!r}; expected KIND:PATH with KIND one of "
                         f"{', '.join(TRACE_KINDS)}")
    raw = load_trace(kind, path)
    return replay(raw, list(rates), args.seed, weights=list(rates.values()),
                  time_scale=args.time_scale, duration_s=args.duration_s)


def parse_window(text: str | None) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        start, end = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"bad --window {text!r}; expected START,END seconds like 10,60"
                         ) from None
    if end <= start:
        raise ValueError(f"bad --window {text!r}: END must be > START")
    return start, end


class _progress:
    """A rich progress bar over simulated seconds (a no-op when quiet or not a terminal)."""

    def __init__(self, on: bool, label: str, total_s: float) -> None:
        self.on, self.label, self.total_s = on and sys.stderr.isatty(), label, total_s

    def __enter__(self):  # type: ignore[no-untyped-def]
        if not self.on:
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.start()
        task = self.bar.add_task(f"simulating {self.label}", total=self.total_s)
        return lambda now_s: self.bar.update(task, completed=min(now_s, self.total_s))

    def __exit__(self, *exc: object) -> None:
        if self.on:
            self.bar.stop()


def parse_sweep(text: str) -> tuple[str, list[float]]:
    key, _, vals = text.partition("=")
    if key not in SWEEP_KEYS or not vals:
        raise ValueError(f"bad --sweep {text!r}; expected KEY=V1,V2,... with KEY one of "
                         f"{', '.join(SWEEP_KEYS)}")
    try:
        return key, [float(v) for v in vals.split(",")]
    except ValueError:
        raise ValueError(f"bad --sweep {text!r}: values must be numbers") from None


def run(args: argparse.Namespace) -> int:
    w = load_workload(args.workload, args.cluster)
    cost = get_cost_model(args.cost_model, w.cluster.device if w.cluster else "a100-80g")
    progress = not args.quiet
    if args.sweep:
        key, values = parse_sweep(args.sweep)
        results = []
        for v in values:
            for policy in SWEEP_POLICIES:
                alpha = v if key == "alpha" else args.alpha
                scale = v if key == "rate-scale" else args.rate_scale
                r = run_one(args, w, policy, alpha, scale, cost, progress)
                r["sweep"] = {key: v}
                results.append(r)
        out: Any = {"sweep": key, "values": values, "results": results}
    else:
        out = run_one(args, w, args.policy, args.alpha, args.rate_scale, cost, progress)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1))
    if args.plot:
        from muxserve.sim.plots import plot_result, plot_sweep

        files = plot_sweep(out, args.plot) if args.sweep else plot_result(out, args.plot)
        for f in files:
            print(f"wrote {f}", file=sys.stderr)
    _summary(out)
    return 0


def _summary(out: dict[str, Any]) -> None:
    rows = out.get("results", [out])
    for r in rows:
        att = r["slo_attainment"]["attainment"]
        tag = " ".join(f"{k}={v}" for k, v in r.get("sweep", {}).items())
        print(f"{r['policy']:>11} {tag} throughput {r['throughput_rps']:.2f} req/s, "
              f"rate-weighted {r['rate_weighted_throughput_rps']:.2f}, "
              f"SLO@{r['slo_attainment']['scale']} "
              f"{'n/a' if att is None else f'{100 * att:.1f}%'}, "
              f"p99 latency {r['latency_s']['p99'] or float('nan'):.2f} s "
              f"({r['sim']['wall_s']:.1f} s wall)")
