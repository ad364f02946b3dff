"""muxserve.placement: the enumeration-based greedy placement optimizer, its baselines and the
placement/workload file schemas (pure Python, no torch)."""

from muxserve.placement.estimator import PlannerConfig
from muxserve.placement.placement_io import (
    paper_placements,
    placement_from_dict,
    placement_to_dict,
    placement_to_yaml,
    read_placement,
    write_placement,
)
from muxserve.placement.planner import evaluate, plan
from muxserve.placement.schema import POLICIES, ModelPlacement, Placement, UnitPlacement
from muxserve.placement.workload_spec import (
    ModelDemand,
    Workload,
    read_workload,
    synthetic_workload,
)

__all__ = [
    "POLICIES",
    "ModelDemand",
    "ModelPlacement",
    "Placement",
    "PlannerConfig",
    "UnitPlacement",
    "Workload",
    "evaluate",
    "paper_placements",
    "placement_from_dict",
    "placement_to_dict",
    "placement_to_yaml",
    "plan",
    "read_placement",
    "read_workload",
    "synthetic_workload",
    "write_placement",
]
