"""The planner's entry points: ``plan`` (muxserve / spatial / temporal) and ``evaluate``.

``plan`` turns a workload, a cluster and a cost model into a ``Placement`` with estimates;
``evaluate`` re-estimates any placement (ours, hand-written, the paper's) with the same unit
model, honouring its shares and batch caps, so that placements can be compared fairly.
"""

from __future__ import annotations

from collections.abc import Sequence

from muxserve.config.devices import Cluster
from muxserve.costmodel.base import CostModel
from muxserve.placement.baselines import spatial_units
from muxserve.placement.estimator import Estimator, Member, PlannerConfig
from muxserve.placement.local_search import Mesh
from muxserve.placement.optimizer import search
from muxserve.placement.schema import (
    POLICIES,
    ModelPlacement,
    Placement,
    UnitPlacement,
    assign_devices,
)
from muxserve.placement.workload_spec import Workload


def _r(x: float) -> float:
    return round(float(x), 4)


Loc = tuple[int, int | None, tuple[int, ...] | None]  # (mesh size, node, devices)


def _locs(meshes: Sequence[Mesh]) -> list[Loc]:
    return [(n, node, tuple(range(dev, dev + n))) for n, node, dev in meshes]


def _units_from(est: Estimator, locs: Sequence[Loc], members: Sequence[tuple[Member, ...]],
                overlap: bool) -> list[UnitPlacement]:
    """Placement units with estimates from the estimator (empty meshes dropped)."""
    units = []
    for (n, node, devices), mem in zip(locs, members, strict=True):
        if not mem:
            continue
        ue = est.unit(n, tuple(sorted(mem)), overlap)
        by_id = {m[0]: k for k, m in enumerate(sorted(mem))}
        models = []
        for m in mem:
            k = by_id[m[0]]
            d = est.models[m[0]]
            models.append(ModelPlacement(
                name=d.name, model=d.model, tensor_parallel_size=n, prefill_share_pct=m[1],
                decode_share_pct=m[2], max_num_seqs=max(1, ue.batches[k]),
                rate_rps=_r(d.rate_rps), est_throughput_rps=_r(min(ue.tpts_rps[k], d.rate_rps)),
                kv_fraction=_r(ue.kv_fractions[k])))
        units.append(UnitPlacement(
            num_gpus=n, models=tuple(models), node=node, devices=devices,
            kv_bytes_per_device=ue.kv_free_bytes,
            est_throughput_rps=_r(sum(m.est_throughput_rps or 0.0 for m in models))))
    return units


def _finish(units: list[UnitPlacement], est: Estimator, workload: Workload, cluster: Cluster,
            policy: str, cost_name: str | None) -> Placement:
    units = assign_devices(units, cluster)
    units.sort(key=lambda u: (u.node if u.node is not None else -1, (u.devices or (0,))[0]))
    total_rate = workload.total_rate_rps
    served = {m.name: m.est_throughput_rps or 0.0 for u in units for m in u.models}
    weighted = sum(d.rate_rps * served.get(d.name, 0.0) for d in workload.models)
    return Placement(
        units=tuple(units), policy=policy, cluster=cluster, cost_model=cost_name,
        est_objective_rps=_r(weighted / total_rate) if total_rate > 0 else 0.0,
        est_total_rps=_r(sum(served.values())), total_rate_rps=_r(total_rate))


def plan(workload: Workload, cost_model: CostModel, cluster: Cluster | None = None,
         policy: str = "muxserve", config: PlannerConfig | None = None,
         cost_name: str | None = None) -> Placement:
    """Place ``workload`` on ``cluster`` (default: the workload's) under ``policy``.

    muxserve: enumeration-based greedy with spatial-temporal sharing.
    spatial: each model alone on its own mesh, full device, one job at a time.
    temporal: muxserve's meshes and colocation, but 100% shares and one job at a time.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; valid: {', '.join(POLICIES)}")
    cluster = cluster or workload.cluster
    if cluster is None:
        raise ValueError("no cluster: the workload has no 'cluster' field; pass one "
                         "(NODESxDEVICESxPRESET, e.g. 4x8xa100-80g)")
    est = Estimator(workload.models, cost_model, cluster.device, config)
    if policy == "spatial":
        meshes, members = spatial_units(est, cluster)
        units = _units_from(est, _locs(meshes), members, overlap=False)
        return _finish(units, est, workload, cluster, policy, cost_name)
    result = search(est, cluster)
    if policy == "temporal":
        cap = est.cfg.max_batch
        members = [tuple((m[0], 100, 100, cap) for m in mem) for mem in result.members]
        units = _units_from(est, _locs(result.meshes), members, overlap=False)
    else:
        units = _units_from(est, _locs(result.meshes), result.members, overlap=True)
    return _finish(units, est, workload, cluster, policy, cost_name)


def evaluate(placement: Placement, workload: Workload, cost_model: CostModel,
             cluster: Cluster | None = None, config: PlannerConfig | None = None,
             cost_name: str | None = None) -> Placement:
    """Re-estimate ``placement`` for ``workload``: its shares, TP and batch caps are kept; the
    temporal policy runs one job at a time. Models of the workload it omits count as 0 req/s."""
    cluster = cluster or placement.cluster or workload.cluster
    if cluster is None:
        raise ValueError("evaluate needs a cluster (the placement and the workload have none)")
    index = {m.name: i for i, m in enumerate(workload.models)}
    unknown = [m for m in placement.model_names if m not in index]
    if unknown:
        raise ValueError(f"placement has models the workload lacks: {', '.join(unknown)}")
    est = Estimator(workload.models, cost_model, cluster.device, config)
    locs: list[Loc] = []
    members: list[tuple[Member, ...]] = []
    for u in placement.units:
        for m in u.models:
            i = index[m.name]
            if est.mem(est.kind_of[i], u.num_gpus) is None:
                raise ValueError(f"model {m.name!r} ({workload.models[i].arch.name}) cannot be "
                                 f"estimated at tensor_parallel_size {u.num_gpus} by this cost "
                                 f"model")
        locs.append((u.num_gpus, u.node, u.devices))
        members.append(tuple((index[m.name], m.prefill_share_pct, m.decode_share_pct,
                              m.max_num_seqs) for m in u.models))
    overlap = placement.policy != "temporal"
    units = _units_from(est, locs, members, overlap)
    return _finish(units, est, workload, cluster, placement.policy, cost_name)
