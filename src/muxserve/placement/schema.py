"""In-memory placements: which LLMs share which mesh of devices, with what compute shares.

One ``UnitPlacement`` is an LLM unit (a mesh of 1/2/4/8 devices inside one node and the models
colocated on it, all with tensor parallelism = mesh size). Field names follow the original
per-mesh YAML schema where one exists (``num_gpus``, ``tensor_parallel_size``,
``max_num_seqs``); shares are integer percentages of a device's compute (MPS SM %).
Estimates (``est_*``) are what the planner's cost model predicts; None when not estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from muxserve.config.devices import Cluster

POLICIES = ("muxserve", "spatial", "temporal")


@dataclass(frozen=True)
class ModelPlacement:
    """One LLM inside a unit.

    prefill_share_pct / decode_share_pct: the two workers' SM shares (``mps_percentage``).
    max_num_seqs: the batch cap the planner chose (the decode batch that meets the rate).
    kv_fraction: this model's initial share of the unit's KV pool (ADBS's starting quota).
    """

    name: str
    model: str
    tensor_parallel_size: int
    prefill_share_pct: int
    decode_share_pct: int
    max_num_seqs: int
    rate_rps: float | None = None
    est_throughput_rps: float | None = None
    kv_fraction: float | None = None

    def __post_init__(self) -> None:
        where = f"model {self.name!r}"
        if self.tensor_parallel_size < 1:
            raise ValueError(f"{where}: tensor_parallel_size must be >= 1, "
                             f"got {self.tensor_parallel_size}")
        for f in ("prefill_share_pct", "decode_share_pct"):
            v = getattr(self, f)
            if not 1 <= v <= 100:
                raise ValueError(f"{where}: mps_percentage ({f}) must be in [1, 100], got {v}")
        if self.max_num_seqs < 1:
            raise ValueError(f"{where}: max_num_seqs must be >= 1, got {self.max_num_seqs}")
        if self.rate_rps is not None and self.rate_rps < 0:
            raise ValueError(f"{where}: rate must be >= 0, got {self.rate_rps}")
        if self.kv_fraction is not None and not 0 <= self.kv_fraction <= 1:
            raise ValueError(f"{where}: kv_fraction must be in [0, 1], got {self.kv_fraction}")


@dataclass(frozen=True)
class UnitPlacement:
    """A mesh of ``num_gpus`` devices (``devices`` of ``node``) and the LLMs colocated on it.

    kv_bytes_per_device: KV pool size per device after weights and activation reserves.
    """

    num_gpus: int
    models: tuple[ModelPlacement, ...]
    node: int | None = None
    devices: tuple[int, ...] | None = None
    kv_bytes_per_device: int | None = None
    est_throughput_rps: float | None = None

    def __post_init__(self) -> None:
        if self.num_gpus < 1:
            raise ValueError(f"unit: num_gpus must be >= 1, got {self.num_gpus}")
        if not self.models:
            raise ValueError(f"unit on node {self.node} devices {self.devices}: no models")
        for m in self.models:
            if m.tensor_parallel_size != self.num_gpus:
                raise ValueError(f"model {m.name!r}: tensor_parallel_size "
                                 f"{m.tensor_parallel_size} != the unit's num_gpus "
                                 f"{self.num_gpus} (colocated models use TP = mesh size)")
        if self.devices is not None and len(self.devices) != self.num_gpus:
            raise ValueError(f"unit on node {self.node}: devices {list(self.devices)} has "
                             f"{len(self.devices)} entries, num_gpus is {self.num_gpus}")

    @property
    def decode_share_sum_pct(self) -> int:
        return sum(m.decode_share_pct for m in self.models)


@dataclass(frozen=True)
class Placement:
    """A whole cluster's placement.

    est_objective_rps: rate-weighted mean of per-model estimated throughput (the paper's
    plotted number); est_total_rps: the sum of per-model estimated throughput.
    """

    units: tuple[UnitPlacement, ...]
    policy: str = "muxserve"
    cluster: Cluster | None = None
    cost_model: str | None = None
    est_objective_rps: float | None = None
    est_total_rps: float | None = None
    total_rate_rps: float | None = None

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; valid: {', '.join(POLICIES)}")
        self.check_integrity()

    @property
    def model_names(self) -> list[str]:
        return [m.name for u in self.units for m in u.models]

    @property
    def num_devices_used(self) -> int:
        return sum(u.num_gpus for u in self.units)

    def find(self, name: str) -> tuple[UnitPlacement, ModelPlacement]:
        for u in self.units:
            for m in u.models:
                if m.name == name:
                    return u, m
        raise KeyError(name)

    def with_(self, **changes: object) -> Placement:
        return replace(self, **changes)  # type: ignore[arg-type]

    def check_integrity(self) -> None:
        """Each model placed once; no device used by two units; units inside the cluster."""
        names = self.model_names
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"models placed more than once: {', '.join(sorted(dup))}")
        used: dict[tuple[int, int], int] = {}
        for i, u in enumerate(self.units):
            if u.node is None or u.devices is None:
                continue
            if self.cluster is not None:
                c = self.cluster
                if not 0 <= u.node < c.num_nodes:
                    raise ValueError(f"unit {i}: node {u.node} outside the cluster's "
                                     f"{c.num_nodes} nodes")
                bad = [d for d in u.devices if not 0 <= d < c.devices_per_node]
                if bad:
                    raise ValueError(f"unit {i}: devices {bad} outside 0..{c.devices_per_node - 1}")
            for d in u.devices:
                if (u.node, d) in used:
                    raise ValueError(f"unit {i} and unit {used[(u.node, d)]} both use node "
                                     f"{u.node} device {d}")
                used[(u.node, d)] = i
        if self.cluster is not None and self.num_devices_used > self.cluster.num_devices:
            raise ValueError(f"placement uses {self.num_devices_used} devices; the cluster has "
                             f"{self.cluster.num_devices}")


def assign_devices(units: list[UnitPlacement], cluster: Cluster) -> list[UnitPlacement]:
    """Give units without a node a node and device ids: first-fit, largest meshes first.

    Units that already have a node keep it. Raises when the meshes cannot be packed."""
    free = [list(range(cluster.devices_per_node)) for _ in range(cluster.num_nodes)]
    for u in units:
        if u.node is not None and u.devices is not None:
            for d in u.devices:
                if 0 <= u.node < cluster.num_nodes and d in free[u.node]:
                    free[u.node].remove(d)
    out: dict[int, UnitPlacement] = {}
    order = sorted(range(len(units)), key=lambda i: -units[i].num_gpus)
    for i in order:
        u = units[i]
        if u.node is not None and u.devices is not None:
            out[i] = u
            continue
        node = next((n for n, f in enumerate(free) if len(f) >= u.num_gpus), None)
        if node is None:
            raise ValueError(f"cannot fit a {u.num_gpus}-device unit "
                             f"({', '.join(m.name for m in u.models)}) into {cluster.num_nodes} "
                             f"nodes x {cluster.devices_per_node} devices")
        devs, free[node] = free[node][:u.num_gpus], free[node][u.num_gpus:]
        out[i] = replace(u, node=node, devices=tuple(devs))
    return [out[i] for i in range(len(units))]


def cluster_str(c: Cluster) -> str:
    return f"{c.num_nodes}x{c.devices_per_node}x{c.device.name}"
