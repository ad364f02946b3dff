"""muxserve.scheduler: ADBS and the baseline policies, one UnitScheduler per unit (pure Python)."""

from muxserve.scheduler.api import (
    POLICIES,
    Job,
    JobResult,
    Request,
    SchedulerConfig,
    StepEvents,
    UnitModel,
)
from muxserve.scheduler.unit import UnitScheduler

__all__ = ["POLICIES", "Job", "JobResult", "Request", "SchedulerConfig", "StepEvents",
           "UnitModel", "UnitScheduler"]
