"""Cost models: how long a prefill or decode job takes on a share of a device."""

from muxserve.costmodel.base import CostModel

__all__ = ["CostModel"]
