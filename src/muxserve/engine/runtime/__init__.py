"""The multiplexed unit runtime: ADBS (or a baseline policy) drives real prefill and decode
worker processes per model on compute shares, with one shared copy of each model's weights and
one shared KV pool per unit. See docs/runtime.md.

    from muxserve.engine.runtime import UnitConfig, UnitRuntime, UnitClient
"""

from muxserve.engine.runtime.aclient import UnitClient
from muxserve.engine.runtime.client import UnitDeadError, UnitRuntime
from muxserve.engine.runtime.config import MODES, ModelSpec, UnitConfig
from muxserve.engine.runtime.messages import JobRecord
from muxserve.engine.runtime.results import RequestOutput
from muxserve.engine.runtime.shares import (
    CpuShares,
    MpsShares,
    ShareGrant,
    green_context_sms,
    mps_percentage,
)

__all__ = ["MODES", "CpuShares", "JobRecord", "ModelSpec", "MpsShares", "RequestOutput",
           "ShareGrant", "UnitClient", "UnitConfig", "UnitDeadError", "UnitRuntime",
           "green_context_sms", "mps_percentage"]
