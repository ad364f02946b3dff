"""Independent checks of a placement against memory and compute limits.

Recomputes everything from the cost model's memory functions rather than trusting the
estimates written in the placement, so it also checks hand-written placements.
"""

from __future__ import annotations

from muxserve.config.devices import Cluster
from muxserve.costmodel.base import CostModel
from muxserve.placement.estimator import GIB, PlannerConfig
from muxserve.placement.schema import Placement
from muxserve.placement.workload_spec import Workload


def limit_violations(placement: Placement, workload: Workload, cost_model: CostModel,
                     cluster: Cluster | None = None,
                     config: PlannerConfig | None = None) -> list[str]:
    """Human-readable violations (empty when the placement is within every limit):
    every workload model placed exactly once; meshes inside one node and of an allowed size;
    TP = mesh size; decode shares within the budget (unless temporal); weights + overheads +
    the batch caps' KV fit each device's usable memory."""
    cfg = config or PlannerConfig()
    cluster = cluster or placement.cluster or workload.cluster
    out: list[str] = []
    demands = workload.by_name()
    placed = placement.model_names
    for name in demands:
        if placed.count(name) != 1:
            out.append(f"model {name!r} placed {placed.count(name)} times")
    for name in placed:
        if name not in demands:
            out.append(f"model {name!r} is not in the workload")
    if cluster is None:
        return out + ["no cluster to check against"]
    dev = cluster.device
    usable = dev.memory_bytes * cfg.mem_utilization
    overhead = min(cfg.overhead_gib_per_model * GIB, cfg.overhead_max_fraction * dev.memory_bytes)
    for k, u in enumerate(placement.units):
        where = f"unit {k} ({u.num_gpus} devices on node {u.node})"
        if u.num_gpus not in cfg.mesh_sizes or u.num_gpus > cluster.devices_per_node:
            out.append(f"{where}: mesh size not in {list(cfg.mesh_sizes)} or larger than a node")
        # temporal multiplexing runs one job at a time, so its 100% shares never overlap
        if (placement.policy != "temporal"
                and u.decode_share_sum_pct > cfg.max_decode_share_sum_pct):
            out.append(f"{where}: decode shares sum to {u.decode_share_sum_pct}% > "
                       f"{cfg.max_decode_share_sum_pct}%")
        used = 0.0
        for m in u.models:
            if m.tensor_parallel_size != u.num_gpus:
                out.append(f"{where}: model {m.name!r} has TP {m.tensor_parallel_size}")
            d = demands.get(m.name)
            if d is None:
                continue
            seq = cost_model.kv_bytes_per_token(d.arch, u.num_gpus) * (
                d.avg_prompt_tokens + d.avg_output_tokens)
            used += cost_model.weight_bytes(d.arch, u.num_gpus) + overhead + m.max_num_seqs * seq
        if used > usable * (1 + 1e-9):
            out.append(f"{where}: weights + overheads + KV of the batch caps need "
                       f"{used / GIB:.1f} GiB per device > {usable / GIB:.1f} GiB usable")
    return out
