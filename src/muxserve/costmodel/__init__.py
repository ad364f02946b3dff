"""Cost models: how long a prefill or decode job takes on a share of a device."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from muxserve.config.devices import DeviceSpec, get_device
from muxserve.costmodel.base import CostModel
from muxserve.costmodel.profile import ProfileCostModel, default_profile_path
from muxserve.costmodel.profile_table import (
    ProfileEntry,
    ProfileTable,
    load_profile,
    save_profile,
)
from muxserve.costmodel.roofline import A100_CALIBRATED, RooflineCostModel, RooflineParams

COST_MODEL_KINDS = ("profile", "roofline")
PROFILED_DEVICES = ("a100-80g",)  # devices with a shipped profile table


@lru_cache(maxsize=8)
def _cached_table(path: str, mtime_ns: int) -> ProfileTable:
    """Tables are read-only after loading, so cost models built by name share one per file
    version (the modification time is in the key, so a rewritten file is read again)."""
    return load_profile(path, drop_outliers=True)


def get_cost_model(kind: str, device: DeviceSpec | str = "a100-80g",
                   profile_path: str | Path | None = None) -> CostModel:
    """Build a cost model by name.

    kind "profile": the profile table at ``profile_path`` (default: the A100 profile, only for
    device a100-80g); kind "roofline": the analytic model for ``device`` with A100-calibrated
    constants.
    """
    dev = get_device(device) if isinstance(device, str) else device
    if kind == "roofline":
        return RooflineCostModel(dev)
    if kind == "profile":
        if profile_path is None:
            if dev.name not in PROFILED_DEVICES:
                raise ValueError(
                    f"no built-in profile for device {dev.name!r} (have: "
                    f"{', '.join(PROFILED_DEVICES)}); pass a profile file written by "
                    f"`muxserve profile`, or use the roofline cost model")
            profile_path = default_profile_path()
        path = Path(profile_path).resolve()
        if not path.is_file():
            raise ValueError(f"profile file {str(profile_path)!r} does not exist")
        return ProfileCostModel(_cached_table(str(path), path.stat().st_mtime_ns), device=dev)
    raise ValueError(f"unknown cost model {kind!r}; valid: {', '.join(COST_MODEL_KINDS)}")


__all__ = [
    "A100_CALIBRATED",
    "COST_MODEL_KINDS",
    "CostModel",
    "ProfileCostModel",
    "ProfileEntry",
    "ProfileTable",
    "RooflineCostModel",
    "RooflineParams",
    "get_cost_model",
    "load_profile",
    "save_profile",
]
