"""Discrete-event cluster simulator: the real UnitScheduler per unit, the cost model as executor.

Each unit gets its own BlockManager and UnitScheduler (the same class the engine drives). The
loop pops events (see :mod:`muxserve.sim.events` for the ordering rule); each handler changes
state and returns the events it causes (Vidur style):

- ARRIVAL: hand the request to its model's unit; chain the next arrival; ask for a SCHEDULE.
- SCHEDULE: ``scheduler.schedule(now)``; each job runs for ``cost_model.prefill_ms/decode_ms``
  at the job's share and the unit's TP degree, i.e. a JOB_DONE at now + duration.
- JOB_DONE: ``scheduler.update(job, None, now)`` (no early stops); record first tokens and
  finishes; ask for a SCHEDULE.

At most one SCHEDULE per (unit, instant) is pending: all the changes of one instant are seen by
one decision. Only the next arrival is in the heap at any time, so the heap stays small.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import heapq
import itertools
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from muxserve.costmodel.base import CostModel
from muxserve.kvcache.block_manager import DEFAULT_BLOCK_NUMEL, BlockManager
from muxserve.scheduler import Job, Request, SchedulerConfig, UnitModel, UnitScheduler
from muxserve.sim.events import DEFAULT_PRIORITY, EventKind, EventQueue
from muxserve.sim.metrics import RequestRecord
from muxserve.sim.workload import TraceRequest
from muxserve.types import Phase

_ARRIVAL, _SCHEDULE, _JOB_DONE = EventKind.ARRIVAL, EventKind.SCHEDULE, EventKind.JOB_DONE
_PREFILL = Phase.PREFILL
_Ev = tuple[float, EventKind, int, int]  # (time_s, kind, unit, ref): an Event's fields


@dataclass(frozen=True)
class SimUnit:
    """One LLM unit: a mesh of ``num_devices`` devices and the models colocated on it.

    kv_blocks: pool size (blocks per device) when given; else the pool is what is left of
    ``memory_fraction`` of each device's memory after that device's slice of the weights
    (device memory x tp minus the weights, per device since blocks hold per-rank heads).
    """

    models: tuple[UnitModel, ...]
    num_devices: int
    kv_blocks: int | None = None
    memory_fraction: float = 0.9

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a unit needs at least one model")
        tps = {m.tp for m in self.models}
        if tps != {self.num_devices}:
            raise ValueError(f"unit of {self.num_devices} devices: every model's tp must equal "
                             f"it (MuxServe meshes), got {sorted(tps)} for "
                             f"{[m.name for m in self.models]}")
        if not 0.0 < self.memory_fraction <= 1.0:
            raise ValueError(f"memory_fraction must be in (0, 1], got {self.memory_fraction}")


@dataclass(frozen=True)
class SimConfig:
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    max_sim_s: float | None = None  # stop the clock here; later work is left unfinished
    record_log: bool = False  # hash every popped event (determinism checks)
    priority: Mapping[EventKind, int] = field(default_factory=lambda: dict(DEFAULT_PRIORITY))
    block_numel: int = DEFAULT_BLOCK_NUMEL
    check_every_events: int = 0  # run check_integrity() on every unit every N events (0: never)
    # name every KV block (the engine's mode); off, the block managers only count blocks, which
    # decides the same (same counts, quotas, preemptions) at a fraction of the cost: a 13B model
    # takes 1,600 block ids per token block. tests/sim checks both give the same event log.
    track_block_ids: bool = False


@dataclass
class SimResult:
    records: list[RequestRecord]
    end_s: float
    num_events: int
    num_jobs: int
    wall_s: float
    log_digest: str | None
    unfinished: int
    kv_blocks: list[int]
    rejected: list[int]  # trace indices of requests too long for their unit's KV pool
    block_managers: list[BlockManager] = field(repr=False)
    schedulers: list[UnitScheduler] = field(repr=False)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection inside: a simulation builds no reference cycles, but its
    millions of live request objects made the collector's full passes ~15% of a 10-minute run
    (more for an hour). Restored on exit, so any cycles made inside are still collected."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def kv_pool_blocks(unit: SimUnit, cost_model: CostModel, block_numel: int) -> int:
    """Blocks per device: memory_fraction x device memory minus this device's weight slice."""
    if unit.kv_blocks is not None:
        return unit.kv_blocks
    tp = unit.num_devices
    free = unit.memory_fraction * cost_model.device.memory_bytes - sum(
        cost_model.weight_bytes(m.arch, tp) for m in unit.models)
    blocks = int(free // (block_numel * cost_model.dtype_bytes))
    if blocks <= 0:
        raise ValueError(f"unit {[m.name for m in unit.models]} on {tp} x "
                         f"{cost_model.device.name}: the weights leave no memory for KV")
    return blocks


class Simulator:
    """Runs a trace through a cluster of units. One use: build, then ``run()`` once."""

    def __init__(self, units: Sequence[SimUnit], cost_model: CostModel,
                 trace: Sequence[TraceRequest], config: SimConfig | None = None,
                 slo_baseline: Callable[[TraceRequest], float] | None = None) -> None:
        self.config = config or SimConfig()
        self.cost = cost_model
        self.trace = trace
        self.route: dict[str, tuple[int, UnitModel]] = {}
        self.block_managers: list[BlockManager] = []
        self.schedulers: list[UnitScheduler] = []
        self.kv_blocks: list[int] = []
        self.unit_models: list[dict[int, UnitModel]] = []
        for u, unit in enumerate(units):
            ids = [m.model_id for m in unit.models]
            if len(set(ids)) != len(ids):
                raise ValueError(f"unit {u}: duplicate model_id in {ids}")
            for m in unit.models:
                if m.name in self.route:
                    raise ValueError(f"model {m.name!r} is placed on two units; each model "
                                     "must be on exactly one")
                self.route[m.name] = (u, m)
            self.unit_models.append({m.model_id: m for m in unit.models})
            nblocks = kv_pool_blocks(unit, cost_model, self.config.block_numel)
            bm = BlockManager(nblocks, self.config.block_numel, self.config.track_block_ids)
            self.kv_blocks.append(nblocks)
            self.block_managers.append(bm)
            self.schedulers.append(UnitScheduler(unit.models, bm, self.config.scheduler))
        unknown = sorted({r.model for r in trace} - set(self.route))
        if unknown:
            raise ValueError(f"trace has requests for models {unknown} that no unit hosts; "
                             f"hosted: {sorted(self.route)}")
        n = len(trace)
        self.first_s: list[float | None] = [None] * n
        self.finish_s: list[float | None] = [None] * n
        self.baseline = [slo_baseline(r) for r in trace] if slo_baseline else [None] * n
        self.running: dict[tuple[int, int], Job] = {}
        self.pending_schedule: set[int] = set()
        self.num_jobs = 0
        self.rejected: list[int] = []

    # ---- handlers: each returns the events it causes, as (time_s, kind, unit, ref) ----------
    # (plain tuples, not Event objects: a frozen dataclass per event was ~5% of the run)
    def _schedule_soon(self, unit: int, now_s: float) -> list[_Ev]:
        if unit in self.pending_schedule:
            return []
        self.pending_schedule.add(unit)
        return [(now_s, _SCHEDULE, unit, -1)]

    def _on_arrival(self, now_s: float, unit: int, ref: int) -> list[_Ev]:
        tr = self.trace[ref]
        m = self.route[tr.model][1]
        try:
            self.schedulers[unit].add_request(
                Request(ref, m.model_id, tr.arrival_s, tr.prompt_tokens, tr.output_tokens),
                now_s)
            out = self._schedule_soon(unit, now_s)
        except ValueError:
            # it could never fit this unit's KV pool: rejected, it stays unfinished
            self.rejected.append(ref)
            out = []
        nxt = ref + 1
        if nxt < len(self.trace):
            tr = self.trace[nxt]
            out.append((tr.arrival_s, _ARRIVAL, self.route[tr.model][0], nxt))
        return out

    def _on_schedule(self, now_s: float, unit: int, ref: int) -> list[_Ev]:
        self.pending_schedule.discard(unit)
        out = []
        models = self.unit_models[unit]
        cost, running = self.cost, self.running
        for job in self.schedulers[unit].schedule(now_s):
            m = models[job.model_id]
            if job.phase is _PREFILL:
                ms = cost.prefill_ms(m.arch, len(job.req_ids), job.num_tokens, job.share, m.tp)
            else:
                ms = cost.decode_ms(m.arch, len(job.req_ids), job.context_tokens, job.share,
                                    m.tp)
            running[(unit, job.job_id)] = job
            out.append((now_s + ms / 1000.0, _JOB_DONE, unit, job.job_id))
        self.num_jobs += len(out)
        return out

    def _on_job_done(self, now_s: float, unit: int, ref: int) -> list[_Ev]:
        job = self.running.pop((unit, ref))
        # no JobResult: the simulated jobs never stop early (no EOS), so nothing to report
        step = self.schedulers[unit].update(job, None, now_s)
        if step.first_token_req_ids:
            first = self.first_s
            for r in step.first_token_req_ids:
                if first[r] is None:  # a recomputed request keeps its original first token
                    first[r] = now_s
        finish = self.finish_s
        for r in step.finished_req_ids:
            finish[r] = now_s
        if unit in self.pending_schedule:
            return []
        self.pending_schedule.add(unit)
        return [(now_s, _SCHEDULE, unit, -1)]

    # ---- the loop -------------------------------------------------------------------------
    def run(self, progress: Callable[[float], None] | None = None,
            progress_every_events: int = 20000) -> SimResult:
        """Pop events in (time_s, priority, push order) -- the EventQueue rule, inlined over a
        heap of plain tuples -- and hand each to its handler."""
        cfg = self.config
        prio = EventQueue(cfg.priority).priorities()  # validates the mapping
        heap: list[tuple[float, int, int, EventKind, int, int]] = []
        seq = itertools.count()
        if self.trace:
            first = self.trace[0]
            heap.append((first.arrival_s, prio[_ARRIVAL], next(seq), _ARRIVAL,
                         self.route[first.model][0], 0))
        digest = hashlib.blake2b(digest_size=16) if cfg.record_log else None
        stop = float("inf") if cfg.max_sim_s is None else cfg.max_sim_s
        wall0 = time.perf_counter()
        with paused_gc():
            now, n = self._loop(heap, seq, prio, digest, stop, progress, progress_every_events)
            return self._result(now, n, time.perf_counter() - wall0, digest)

    def _loop(self, heap: list[tuple[float, int, int, EventKind, int, int]],
              seq: Iterator[int], prio: Mapping[EventKind, int],
              digest: hashlib.blake2b | None, stop: float,
              progress: Callable[[float], None] | None,
              progress_every_events: int) -> tuple[float, int]:
        handlers = {EventKind.ARRIVAL: self._on_arrival, EventKind.SCHEDULE: self._on_schedule,
                    EventKind.JOB_DONE: self._on_job_done}
        check_every = self.config.check_every_events
        pop, push, pack = heapq.heappop, heapq.heappush, struct.pack
        now = 0.0
        n = 0
        while heap and heap[0][0] <= stop:
            now, _, _, kind, unit, ref = pop(heap)
            n += 1
            if digest is not None:
                digest.update(pack("<dBii", now, kind, unit, ref))
            for t, k, u, r in handlers[kind](now, unit, ref):
                push(heap, (t, prio[k], next(seq), k, u, r))
            if progress is not None and n % progress_every_events == 0:
                progress(now)
            if check_every and n % check_every == 0:
                for s in self.schedulers:
                    s.check_integrity()
        return now, n

    def _result(self, end_s: float, n: int, wall_s: float,
                digest: hashlib.blake2b | None) -> SimResult:
        recs = [RequestRecord(i, r.model, r.arrival_s, r.prompt_tokens, r.output_tokens,
                              self.first_s[i], self.finish_s[i], self.baseline[i])
                for i, r in enumerate(self.trace)]
        unfinished = sum(f is None for f in self.finish_s)
        return SimResult(recs, end_s, n, self.num_jobs, wall_s,
                         digest.hexdigest() if digest else None, unfinished, self.kv_blocks,
                         self.rejected, self.block_managers, self.schedulers)


def isolated_latency_s(cost_model: CostModel, arch_of: Mapping[str, UnitModel],
                       baseline_tp: Mapping[str, int]) -> Callable[[TraceRequest], float]:
    """Per-request SLO baseline: the request alone (batch 1, whole device) on ``baseline_tp``.

    latency = prefill(prompt) + (output - 1) decode steps; the decode steps are priced at the
    mean context (prompt + output // 2) -- one call instead of one per token, exact for a cost
    that is linear in context, as decode latency nearly is at batch 1. Both terms are memoised
    per (architecture, tp, length), so a million requests need a few thousand cost calls.
    """
    prefill: dict[tuple[str, int, int], float] = {}
    decode: dict[tuple[str, int, int], float] = {}

    def baseline(tr: TraceRequest) -> float:
        um = arch_of[tr.model]
        arch, tp = um.arch, baseline_tp[tr.model]
        key = (arch.name, tp, tr.prompt_tokens)
        ms = prefill.get(key)
        if ms is None:
            ms = prefill[key] = cost_model.prefill_ms(arch, 1, tr.prompt_tokens, 1.0, tp)
        if tr.output_tokens > 1:
            ctx = tr.prompt_tokens + tr.output_tokens // 2
            dkey = (arch.name, tp, ctx)
            step = decode.get(dkey)
            if step is None:
                step = decode[dkey] = cost_model.decode_ms(arch, 1, ctx, 1.0, tp)
            ms += (tr.output_tokens - 1) * step
        return ms / 1000.0

    return baseline


def min_tp(cost_model: CostModel, unit_model: UnitModel, weight_fraction: float = 0.5) -> int:
    """Smallest power-of-two TP whose weight slice fits ``weight_fraction`` of a device: the
    "single device" of the SLO baseline for models too large for one device (30B, 65B)."""
    tp = 1
    while (cost_model.weight_bytes(unit_model.arch, tp)
           > weight_fraction * cost_model.device.memory_bytes) and tp < 64:
        tp *= 2
    return tp
