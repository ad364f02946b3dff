"""Helpers for scheduler tests: tiny models and a fake-clock loop (schedule -> run -> update)."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from muxserve.config.models import ModelArch
from muxserve.kvcache import BlockManager
from muxserve.scheduler import (
    Job,
    JobResult,
    Request,
    SchedulerConfig,
    StepEvents,
    UnitModel,
    UnitScheduler,
)
from muxserve.types import Phase


def tiny_arch(name: str = "tiny", layers: int = 1, kv_heads: int = 1,
              head_dim: int = 128) -> ModelArch:
    """tokens_per_block = 8192 // (2 * head_dim) (32 at head_dim 128); g = layers * kv_heads."""
    return ModelArch(name=name, family="llama", num_layers=layers, hidden_size=kv_heads * head_dim,
                     num_heads=kv_heads, num_kv_heads=kv_heads, head_dim=head_dim,
                     intermediate_size=64, vocab_size=100)


def unit(models: list[UnitModel], num_blocks: int, **config: object) -> UnitScheduler:
    cfg = SchedulerConfig(integrity_checks=True, **config)  # type: ignore[arg-type]
    return UnitScheduler(models, BlockManager(num_blocks), cfg)


def req(req_id: int, model_id: int = 0, arrival_s: float = 0.0, prompt: int = 10,
        out: int = 3) -> Request:
    return Request(req_id, model_id, arrival_s, prompt, out)


@dataclass
class Loop:
    """A fake-clock event loop: every job takes ``duration(job)`` seconds (1 s by default)."""

    sched: UnitScheduler
    duration: Callable[[Job], float] = lambda job: 1.0
    now_s: float = 0.0
    started: list[tuple[float, Job]] = field(default_factory=list)
    events: list[tuple[float, StepEvents]] = field(default_factory=list)
    _running: list[tuple[float, int, Job]] = field(default_factory=list)

    def run(self, requests: Iterable[Request] = (), until_s: float = 1e9,
            on_update: Callable[[Job, StepEvents], None] | None = None) -> None:
        pending = sorted(requests, key=lambda r: (r.arrival_s, r.req_id))
        while pending or self._running or self.sched.has_unfinished():
            next_arrival = pending[0].arrival_s if pending else float("inf")
            next_end = self._running[0][0] if self._running else float("inf")
            t = min(next_arrival, next_end)
            if t == float("inf"):
                raise AssertionError("stuck: unfinished requests but nothing runs")
            if t > until_s:
                return
            self.now_s = t
            while self._running and self._running[0][0] <= t:  # ends before arrivals
                _, _, job = heapq.heappop(self._running)
                ev = self.sched.update(job, JobResult(job.job_id), t)
                self.events.append((t, ev))
                if on_update:
                    on_update(job, ev)
            while pending and pending[0].arrival_s <= t:
                self.sched.add_request(pending.pop(0), t)
            for job in self.sched.schedule(t):
                self.started.append((t, job))
                heapq.heappush(self._running, (t + self.duration(job), job.job_id, job))

    def jobs(self, phase: Phase | None = None) -> list[tuple[float, int, str, tuple[int, ...]]]:
        """(start_s, model_id, phase, req_ids) of started jobs, for exact comparisons."""
        return [(t, j.model_id, j.phase.value, j.req_ids) for t, j in self.started
                if phase is None or j.phase is phase]

    def finished(self) -> list[int]:
        return [r for _, ev in self.events for r in ev.finished_req_ids]
