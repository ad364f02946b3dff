"""Compute-share accounting: a unit is 10 parts of 10%; a job on share s takes ceil(10 s) parts.

Two rules decide whether a job's parts fit (``SchedulerConfig.compute_rule``):

- ``"overlap"`` (default; the original MuxServe's ``SMResource``): parts are tracked one by one
  with a use count. A job of n parts may start when free parts + min(``overload_parts``, parts
  used by at most one job, free ones included) >= n. It takes free parts first, then puts itself
  on top of parts used by exactly one job (picked at random, as the original does; seeded here),
  so no part ever serves more than two jobs. The overlap is bounded *per new job*, not in total:
  with 2 parts of overload, decodes of 90% + 30% run together (120%), and a further 20% job
  starts on top of them (140%).
- ``"sum"`` (documented alternative; this package's earlier rule): jobs start while the running
  parts stay within ``capacity_parts`` (12 = 120% in total).

Policies that do not oversubscribe (spatial, temporal) use ``"sum"`` with their own capacity.
At most one job per (model, phase) runs; ``one_job_per_model`` (spatial, temporal: one
vLLM-style engine per model) and ``max_jobs`` (temporal: 1) tighten that.
"""

from __future__ import annotations

import functools
import math
import random

from muxserve.scheduler.api import Job
from muxserve.types import Phase

PARTS = 10
MAX_JOBS_PER_PART = 2  # the overlap rule never stacks a third job on a part


@functools.cache  # a unit has a handful of shares; this is asked on every scheduling try
def parts_of(share: float) -> int:
    # the epsilon keeps 0.3 * 10 = 3.0000000000000004 at 3 parts
    return max(1, math.ceil(share * PARTS - 1e-9))


class ComputeLedger:
    """overload_parts=None: the "sum" rule with capacity_parts; an int: the "overlap" rule (then
    capacity_parts is PARTS x MAX_JOBS_PER_PART, the most parts that can ever be held)."""

    def __init__(self, capacity_parts: int, one_job_per_model: bool = False,
                 max_jobs: int | None = None, overload_parts: int | None = None,
                 seed: int = 0) -> None:
        self.overload_parts = overload_parts
        self.capacity_parts = (capacity_parts if overload_parts is None
                               else PARTS * MAX_JOBS_PER_PART)
        self.one_job_per_model = one_job_per_model
        self.max_jobs = max_jobs
        self.used_parts = 0  # parts held, counted once per holding job
        self.running: dict[int, Job] = {}
        self._keys: set[tuple[int, Phase]] = set()
        self._per_phase = dict.fromkeys(Phase, 0)  # running jobs per phase: any_running in O(1)
        # the overlap rule's per-part state, laid out as the original's lists (free parts are
        # popped from the end; re-freed parts appended), so the same calls pick the same parts
        self._refs = [0] * PARTS
        self._free = list(range(PARTS))
        self._single = list(range(PARTS))  # parts used by at most one job (free ones too)
        self._held: dict[int, list[int]] = {}  # job_id -> its parts
        self._rng = random.Random(seed)

    def _fits(self, parts: int) -> bool:
        if self.overload_parts is None:
            return self.used_parts + parts <= self.capacity_parts
        return len(self._free) + min(self.overload_parts, len(self._single)) >= parts

    def can_start(self, model_id: int, phase: Phase, share: float) -> bool:
        """Free to start: no job of this (model, phase) runs, and the share fits."""
        # busy() and has_room() inlined: asked for every model and phase of every round
        keys = self._keys
        if self.one_job_per_model:
            if (model_id, Phase.PREFILL) in keys or (model_id, Phase.DECODE) in keys:
                return False
        elif (model_id, phase) in keys:
            return False
        if self.max_jobs is not None and len(self.running) >= self.max_jobs:
            return False
        return self._fits(parts_of(share))

    def busy(self, model_id: int, phase: Phase) -> bool:
        if self.one_job_per_model:
            return (model_id, Phase.PREFILL) in self._keys or (model_id, Phase.DECODE) in self._keys
        return (model_id, phase) in self._keys

    def has_room(self, share: float) -> bool:
        if self.max_jobs is not None and len(self.running) >= self.max_jobs:
            return False
        return self._fits(parts_of(share))

    def any_running(self, phase: Phase) -> bool:
        return self._per_phase[phase] > 0

    def start(self, job: Job) -> None:
        assert self.can_start(job.model_id, job.phase, job.share), f"no room for {job}"
        self.running[job.job_id] = job
        self._keys.add((job.model_id, job.phase))
        self._per_phase[job.phase] += 1
        n = parts_of(job.share)
        self.used_parts += n
        if self.overload_parts is not None:
            self._held[job.job_id] = self._take(n)

    def _take(self, n: int) -> list[int]:
        refs, free, single = self._refs, self._free, self._single
        taken = []
        for _ in range(n):
            if free:
                part = free.pop()
            else:  # share a part with the one job on it; it then leaves the shareable list
                part = self._rng.choice(single)
                single.remove(part)
            refs[part] += 1
            taken.append(part)
        return taken

    def end(self, job_id: int) -> Job:
        try:
            job = self.running.pop(job_id)
        except KeyError:
            raise ValueError(f"job {job_id} is not running (finished twice, or never "
                             f"scheduled); running: {sorted(self.running)}") from None
        self._keys.discard((job.model_id, job.phase))
        self._per_phase[job.phase] -= 1
        self.used_parts -= parts_of(job.share)
        if self.overload_parts is not None:
            refs, free, single = self._refs, self._free, self._single
            for part in self._held.pop(job_id):
                refs[part] -= 1
                if refs[part] == 0:
                    free.append(part)
                if refs[part] < MAX_JOBS_PER_PART and part not in single:
                    single.append(part)
        return job

    def check_integrity(self) -> None:
        assert self.used_parts == sum(parts_of(j.share) for j in self.running.values())
        assert self.used_parts <= self.capacity_parts, (self.used_parts, self.capacity_parts)
        assert self._keys == {(j.model_id, j.phase) for j in self.running.values()}
        assert len(self._keys) == len(self.running), "two jobs of one (model, phase) run"
        assert self._per_phase == {ph: sum(j.phase is ph for j in self.running.values())
                                   for ph in Phase}, f"stale per-phase counts {self._per_phase}"
        if self.overload_parts is None:
            return
        assert set(self._held) == set(self.running), "parts held by a job that is not running"
        counts = [0] * PARTS
        for parts in self._held.values():
            for part in parts:
                counts[part] += 1
        assert counts == self._refs, f"part use counts {self._refs} != held {counts}"
        assert max(counts) <= MAX_JOBS_PER_PART, f"a part serves > 2 jobs: {counts}"
        assert sorted(self._free) == [p for p in range(PARTS) if counts[p] == 0], self._free
        assert sorted(self._single) == [p for p in range(PARTS)
                                        if counts[p] < MAX_JOBS_PER_PART], self._single
