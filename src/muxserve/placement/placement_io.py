"""Placement files: our YAML (top level ``units:``), the original per-mesh YAML, and the paper's
placements JSON, all read into the same ``Placement`` dataclasses.

Each unit is the original per-mesh schema plus our optional fields::

    policy: muxserve
    cluster: {nnodes: 4, ngpus_per_node: 8, device: a100-80g}
    units:
    - num_gpus: 2
      node: 0                      # ours
      devices: [0, 1]              # ours
      kv_bytes_per_device: ...     # ours
      est_throughput_rps: 12.0     # ours
      models:
      - {name: llm-1, model: llama-13b, tensor_parallel_size: 2, mps_percentage: [90, 60],
         max_num_seqs: 62, rate: 9.0, est_throughput_rps: 9.0, kv_fraction: 0.7}

The paper's JSON uses ``size`` ("13b"), ``tp`` and ``mps`` instead, and has no nodes; its
``flexsm`` policy is MuxServe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from muxserve.config.devices import Cluster, get_device
from muxserve.placement.schema import (
    POLICIES,
    ModelPlacement,
    Placement,
    UnitPlacement,
    assign_devices,
)

PAPER_POLICY = {"flexsm": "muxserve", "spatial": "spatial", "temporal": "temporal"}
PAPER_CLUSTER = "4x8xa100-80g"  # stated in the paper placements' note


def _int(d: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int:
    if d.get(key) is None:
        if default is not None:
            return default
        raise ValueError(f"{where}: missing field {key!r}")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float) or v != int(v):
        raise ValueError(f"{where}: field {key!r} must be an integer, got {v!r}")
    return int(v)


def _opt_float(d: Mapping[str, Any], key: str, where: str) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{where}: field {key!r} must be a number, got {v!r}")
    return float(v)


def _model_from_dict(md: Any, unit_where: str, num_gpus: int) -> ModelPlacement:
    if not isinstance(md, Mapping):
        raise ValueError(f"{unit_where}: each entry of 'models' must be a mapping, got {md!r}")
    name = md.get("name")
    if not name:
        raise ValueError(f"{unit_where}: a model is missing field 'name'")
    where = f"{unit_where} model {name!r}"
    model = md.get("model")
    if model is None and md.get("size") is not None:  # the paper's JSON
        model = f"llama-{str(md['size']).lower()}"
    if not model:
        raise ValueError(f"{where}: missing field 'model'")
    shares = md.get("mps_percentage", md.get("mps"))
    if shares is None:
        raise ValueError(f"{where}: missing field 'mps_percentage' ([prefill %, decode %])")
    if (not isinstance(shares, Sequence) or isinstance(shares, str) or len(shares) != 2
            or not all(isinstance(s, int | float) and not isinstance(s, bool) for s in shares)):
        raise ValueError(f"{where}: field 'mps_percentage' must be [prefill %, decode %], "
                         f"got {shares!r}")
    tp = md.get("tensor_parallel_size", md.get("tp", num_gpus))
    if isinstance(tp, bool) or not isinstance(tp, int):
        raise ValueError(f"{where}: field 'tensor_parallel_size' must be an integer, got {tp!r}")
    try:
        return ModelPlacement(
            name=str(name), model=str(model), tensor_parallel_size=tp,
            prefill_share_pct=int(shares[0]), decode_share_pct=int(shares[1]),
            max_num_seqs=_int(md, "max_num_seqs", where, 256),
            rate_rps=_opt_float(md, "rate", where),
            est_throughput_rps=_opt_float(md, "est_throughput_rps", where),
            kv_fraction=_opt_float(md, "kv_fraction", where))
    except ValueError as e:
        raise ValueError(f"{unit_where}: {e}") from None


def _unit_from_dict(ud: Any, where: str) -> UnitPlacement:
    if not isinstance(ud, Mapping):
        raise ValueError(f"{where}: must be a mapping, got {ud!r}")
    num_gpus = _int(ud, "num_gpus", where)
    models = ud.get("models")
    if not isinstance(models, Sequence) or isinstance(models, str) or not models:
        raise ValueError(f"{where}: missing field 'models' (a non-empty list)")
    devices = ud.get("devices")
    if devices is not None and (not isinstance(devices, Sequence) or isinstance(devices, str)):
        raise ValueError(f"{where}: field 'devices' must be a list of device ids, got {devices!r}")
    node = ud.get("node")
    if node is not None and (isinstance(node, bool) or not isinstance(node, int)):
        raise ValueError(f"{where}: field 'node' must be an integer, got {node!r}")
    kv = ud.get("kv_bytes_per_device")
    try:
        return UnitPlacement(
            num_gpus=num_gpus,
            models=tuple(_model_from_dict(m, where, num_gpus) for m in models),
            node=node, devices=tuple(int(d) for d in devices) if devices is not None else None,
            kv_bytes_per_device=int(kv) if kv is not None else None,
            est_throughput_rps=_opt_float(ud, "est_throughput_rps", where))
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def _cluster_from(v: Any, where: str) -> Cluster | None:
    if v is None:
        return None
    if isinstance(v, str):
        return Cluster.parse(v)
    if isinstance(v, Mapping):
        return Cluster(_int(v, "nnodes", f"{where} cluster"),
                       _int(v, "ngpus_per_node", f"{where} cluster"),
                       get_device(str(v.get("device", "a100-80g"))))
    raise ValueError(f"{where}: field 'cluster' must be a mapping or 'NxDxPRESET', got {v!r}")


def placement_from_dict(d: Any, where: str = "placement",
                        cluster: Cluster | None = None) -> Placement:
    """Our schema (``units:``) or one original per-mesh config (``num_gpus:`` + ``models:``).

    Units without ``node``/``devices`` get them by first-fit packing when a cluster is known."""
    if isinstance(d, Mapping) and "units" not in d and "num_gpus" in d:
        d = {"units": [d]}
    if not isinstance(d, Mapping) or not isinstance(d.get("units"), Sequence):
        raise ValueError(f"{where}: missing field 'units' (a list of per-mesh units)")
    policy = str(d.get("policy", "muxserve"))
    if policy not in POLICIES:
        raise ValueError(f"{where}: unknown policy {policy!r}; valid: {', '.join(POLICIES)}")
    cluster = _cluster_from(d.get("cluster"), where) or cluster
    units = [_unit_from_dict(u, f"{where} units[{i}]") for i, u in enumerate(d["units"])]
    if cluster is not None:
        units = assign_devices(units, cluster)
    try:
        return Placement(
            units=tuple(units), policy=policy, cluster=cluster,
            cost_model=d.get("cost_model"),
            est_objective_rps=_opt_float(d, "est_objective_rps", where),
            est_total_rps=_opt_float(d, "est_total_rps", where),
            total_rate_rps=_opt_float(d, "total_rate_rps", where))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def paper_placements(path: str | Path) -> dict[tuple[str, str], Placement]:
    """The paper's placements JSON: {(condense, policy): Placement}, policy in POLICIES."""
    p = Path(path)
    data = json.loads(p.read_text())
    table = data.get("placements") if isinstance(data, Mapping) else None
    if not isinstance(table, Mapping):
        raise ValueError(f"{p}: missing field 'placements'")
    cluster = Cluster.parse(PAPER_CLUSTER)
    out: dict[tuple[str, str], Placement] = {}
    for condense, by_policy in table.items():
        for pol, units in by_policy.items():
            if pol not in PAPER_POLICY:
                raise ValueError(f"{p}: placements[{condense}]: unknown policy {pol!r}; "
                                 f"valid: {', '.join(PAPER_POLICY)}")
            out[(str(condense), PAPER_POLICY[pol])] = placement_from_dict(
                {"units": units, "policy": PAPER_POLICY[pol]},
                where=f"{p} placements[{condense}][{pol}]", cluster=cluster)
    return out


def read_placement(path: str | Path, cluster: Cluster | None = None, condense: str | None = None,
                   policy: str = "muxserve") -> Placement:
    """Read a placement YAML/JSON. For the paper's JSON, ``condense`` picks the workload
    (e.g. "2000") and ``policy`` the system (muxserve = the paper's flexsm)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"placement file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())  # YAML is a superset of JSON
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML/JSON: {e}") from None
    if isinstance(data, Mapping) and "placements" in data:
        table = paper_placements(p)
        keys = sorted({c for c, _ in table}, key=lambda c: int(c) if c.isdigit() else 0)
        if condense is None:
            raise ValueError(f"{p} holds several placements: pass condense (one of "
                             f"{', '.join(keys)}) and policy")
        if (str(condense), policy) not in table:
            raise ValueError(f"{p}: no placement for condense {condense!r} policy {policy!r}; "
                             f"condense: {', '.join(keys)}; policy: {', '.join(POLICIES)}")
        return table[(str(condense), policy)]
    return placement_from_dict(data, where=str(p), cluster=cluster)


def _num(x: float | None) -> float | None:
    # written exactly (the planner rounds its estimates) so that write -> read is lossless
    return None if x is None else float(x)


def placement_to_dict(pl: Placement) -> dict[str, Any]:
    d: dict[str, Any] = {"policy": pl.policy}
    if pl.cluster is not None:
        d["cluster"] = {"nnodes": pl.cluster.num_nodes,
                        "ngpus_per_node": pl.cluster.devices_per_node,
                        "device": pl.cluster.device.name}
    for k in ("cost_model", "est_objective_rps", "est_total_rps", "total_rate_rps"):
        v = getattr(pl, k)
        if v is not None:
            d[k] = v if isinstance(v, str) else _num(v)
    units = []
    for u in pl.units:
        ud: dict[str, Any] = {"num_gpus": u.num_gpus}
        if u.node is not None:
            ud["node"] = u.node
        if u.devices is not None:
            ud["devices"] = list(u.devices)
        if u.kv_bytes_per_device is not None:
            ud["kv_bytes_per_device"] = u.kv_bytes_per_device
        if u.est_throughput_rps is not None:
            ud["est_throughput_rps"] = _num(u.est_throughput_rps)
        models = []
        for m in u.models:
            md: dict[str, Any] = {
                "name": m.name, "model": m.model, "tensor_parallel_size": m.tensor_parallel_size,
                "mps_percentage": [m.prefill_share_pct, m.decode_share_pct],
                "max_num_seqs": m.max_num_seqs}
            for key, v in (("rate", m.rate_rps), ("est_throughput_rps", m.est_throughput_rps),
                           ("kv_fraction", m.kv_fraction)):
                if v is not None:
                    md[key] = _num(v)
            models.append(md)
        ud["models"] = models
        units.append(ud)
    d["units"] = units
    return d


class _FlowListDumper(yaml.SafeDumper):  # type: ignore[misc]  # yaml has no stubs here
    """Short lists of scalars ([90, 60], [0, 1]) on one line; everything else block style."""


def _repr_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(isinstance(x, int | float | str) for x in data) and len(data) <= 8
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_FlowListDumper.add_representer(list, _repr_list)


def placement_to_yaml(pl: Placement) -> str:
    return str(yaml.dump(placement_to_dict(pl), Dumper=_FlowListDumper, sort_keys=False))


def write_placement(pl: Placement, path: str | Path) -> None:
    Path(path).write_text(placement_to_yaml(pl))
