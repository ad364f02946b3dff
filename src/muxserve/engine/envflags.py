"""On/off switches read from the environment (MUXSERVE_KERNELS, MUXSERVE_HUGEPAGES)."""

from __future__ import annotations

import os

OFF_VALUES = ("0", "false", "no")


def env_switch(name: str) -> bool:
    """True unless $name is set to 0 / false / no (any case): the engine's speed features are on
    by default and an environment variable turns one off, for A/B measurements or a fallback."""
    return os.environ.get(name, "1").strip().lower() not in OFF_VALUES
