"""UnitScheduler: one unit's scheduler (ADBS and the baseline policies). Interface stub; the
implementation lands next (see docs/notes/kvcache-scheduler.md)."""

from __future__ import annotations

from collections.abc import Sequence

from muxserve.kvcache.block_manager import BlockManager
from muxserve.scheduler.api import (
    DEFAULT_SCHEDULER_CONFIG,
    Job,
    JobResult,
    Request,
    SchedulerConfig,
    StepEvents,
    UnitModel,
)


class UnitScheduler:
    """Decides which jobs each colocated model runs and owns their KV blocks.

    Loop: ``jobs = schedule(now)``; run each job; ``update(job, JobResult(job.job_id), end)``.
    """

    def __init__(self, models: Sequence[UnitModel], block_manager: BlockManager,
                 config: SchedulerConfig = DEFAULT_SCHEDULER_CONFIG) -> None:
        raise NotImplementedError

    def add_request(self, req: Request, now_s: float) -> None:
        raise NotImplementedError

    def abort(self, req_id: int) -> None:
        raise NotImplementedError

    def schedule(self, now_s: float) -> list[Job]:
        """Jobs to START now (may be empty). Allocates their KV blocks."""
        raise NotImplementedError

    def update(self, job: Job, result: JobResult, now_s: float) -> StepEvents:
        """A job ended at now_s: account its tokens, finish requests, free their blocks."""
        raise NotImplementedError

    def has_unfinished(self) -> bool:
        raise NotImplementedError

    def num_running_jobs(self) -> int:
        raise NotImplementedError

    def check_integrity(self) -> None:
        raise NotImplementedError
