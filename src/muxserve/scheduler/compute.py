"""Compute-share accounting: a unit is 10 parts of 10%; a job on share s takes ceil(10 s) parts.

Jobs may start while the running parts stay within ``capacity_parts`` (12 = MuxServe's ~20%
oversubscription). At most one job per (model, phase) runs; ``one_job_per_model`` (spatial,
temporal: one vLLM-style engine per model) and ``max_jobs`` (temporal: 1) tighten that.
"""

from __future__ import annotations

import functools
import math

from muxserve.scheduler.api import Job
from muxserve.types import Phase

PARTS = 10


@functools.cache  # a unit has a handful of shares; this is asked on every scheduling try
def parts_of(share: float) -> int:
    # the epsilon keeps 0.3 * 10 = 3.0000000000000004 at 3 parts
    return max(1, math.ceil(share * PARTS - 1e-9))


class ComputeLedger:
    def __init__(self, capacity_parts: int, one_job_per_model: bool = False,
                 max_jobs: int | None = None) -> None:
        self.capacity_parts = capacity_parts
        self.one_job_per_model = one_job_per_model
        self.max_jobs = max_jobs
        self.used_parts = 0
        self.running: dict[int, Job] = {}
        self._keys: set[tuple[int, Phase]] = set()
        self._per_phase = dict.fromkeys(Phase, 0)  # running jobs per phase: any_running in O(1)

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
        return self.used_parts + parts_of(share) <= self.capacity_parts

    def busy(self, model_id: int, phase: Phase) -> bool:
        if self.one_job_per_model:
            return (model_id, Phase.PREFILL) in self._keys or (model_id, Phase.DECODE) in self._keys
        return (model_id, phase) in self._keys

    def has_room(self, share: float) -> bool:
        if self.max_jobs is not None and len(self.running) >= self.max_jobs:
            return False
        return self.used_parts + parts_of(share) <= self.capacity_parts

    def any_running(self, phase: Phase) -> bool:
        return self._per_phase[phase] > 0

    def start(self, job: Job) -> None:
        assert self.can_start(job.model_id, job.phase, job.share), f"no room for {job}"
        self.running[job.job_id] = job
        self._keys.add((job.model_id, job.phase))
        self._per_phase[job.phase] += 1
        self.used_parts += parts_of(job.share)

    def end(self, job_id: int) -> Job:
        try:
            job = self.running.pop(job_id)
        except KeyError:
            raise ValueError(f"job {job_id} is not running (finished twice, or never "
                             f"scheduled); running: {sorted(self.running)}") from None
        self._keys.discard((job.model_id, job.phase))
        self._per_phase[job.phase] -= 1
        self.used_parts -= parts_of(job.share)
        return job

    def check_integrity(self) -> None:
        assert self.used_parts == sum(parts_of(j.share) for j in self.running.values())
        assert self._keys == {(j.model_id, j.phase) for j in self.running.values()}
        assert len(self._keys) == len(self.running), "two jobs of one (model, phase) run"
        assert self._per_phase == {ph: sum(j.phase is ph for j in self.running.values())
                                   for ph in Phase}, f"stale per-phase counts {self._per_phase}"
