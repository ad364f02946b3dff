"""One simulated experiment: units + cost model + trace -> the shared JSON result.

Callers (the CLI, benchmarks) turn placements into ``SimUnit``s and workloads into traces;
this module adds the SLO baselines, runs the simulator and builds the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from muxserve.costmodel.base import CostModel
from muxserve.scheduler import SchedulerConfig, UnitModel
from muxserve.sim.metrics import build_result
from muxserve.sim.simulator import (
    SimConfig,
    Simulator,
    SimUnit,
    isolated_latency_s,
    min_tp,
    paused_gc,
)
from muxserve.sim.workload import TraceRequest


def slo_baseline_fn(units: Sequence[SimUnit], cost_model: CostModel
                    ) -> Callable[[TraceRequest], float]:
    """Per-request SLO baseline: the request alone at batch 1 with the whole device, on the
    smallest TP its weights fit (1 for 7B/13B): independent of the placement under test, so
    every policy is held to the same SLO."""
    by_name: dict[str, UnitModel] = {m.name: m for u in units for m in u.models}
    tps = {name: min_tp(cost_model, m) for name, m in by_name.items()}
    return isolated_latency_s(cost_model, by_name, tps)


def simulate(units: Sequence[SimUnit], cost_model: CostModel, trace: Sequence[TraceRequest],
             policy: str, *, scheduler: SchedulerConfig | None = None,
             slo_scales: Sequence[float] = (5.0,), rates_rps: Mapping[str, float] | None = None,
             max_sim_s: float | None = None, ttft_slo_s: float | None = None,
             tpot_slo_s: float | None = None, window_s: tuple[float, float] | None = None,
             record_log: bool = False, track_block_ids: bool = False,
             progress: Callable[[float], None] | None = None,
             extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``trace`` on ``units`` with scheduling ``policy``; return build_result's dict plus a
    ``sim`` section (events, jobs, wall time, simulated requests per wall second)."""
    sched = replace(scheduler or SchedulerConfig(), policy=policy)
    with paused_gc():  # (see paused_gc) also while a baseline is computed per request
        sim = Simulator(units, cost_model, trace,
                        SimConfig(scheduler=sched, max_sim_s=max_sim_s, record_log=record_log,
                                  track_block_ids=track_block_ids),
                        slo_baseline=slo_baseline_fn(units, cost_model))
    res = sim.run(progress=progress)
    info: dict[str, Any] = {
        "num_units": len(units),
        "num_devices": sum(u.num_devices for u in units),
        "num_events": res.num_events,
        "num_jobs": res.num_jobs,
        "end_s": res.end_s,
        "wall_s": res.wall_s,
        "sim_requests_per_wall_s": len(trace) / res.wall_s if res.wall_s > 0 else None,
        "unfinished": res.unfinished,
        "rejected": len(res.rejected),
        "kv_blocks_per_unit": res.kv_blocks,
    }
    if res.log_digest:
        info["event_log_digest"] = res.log_digest
    with paused_gc():  # a million RequestRecords: see paused_gc
        return build_result(res.records, policy, slo_scales=slo_scales, rates_rps=rates_rps,
                            ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, window_s=window_s,
                            extra={"sim": info, **(extra or {})})
