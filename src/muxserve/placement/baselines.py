"""The spatial-partitioning baseline: every model alone on its own mesh, whole devices.

1. Each model starts on its smallest "comfortable" mesh: weights fit with KV room of at least
   ``spatial_kv_to_weight`` x the weight bytes (A100-80GB: 7B/13B on 1, 30B on 4, 65B on 8,
   the paper's spatial setup).
   Every model starts at its memory minimum; meshes grow towards the comfortable size, most
   demanding model (rate x parameters per device) first, while the meshes pack into the nodes
   (the paper's ChatLMSYS spatial runs keep 30B on 2 and 65B on 4 for lack of devices).
2. Devices left over go by demand: the model furthest below its rate (else with the highest
   demand per device) doubles its mesh while the meshes still pack.

(The temporal baseline needs no search of its own: it is muxserve's grouping with 100% shares
and one job at a time, see ``planner.plan``.)
"""

from __future__ import annotations

from collections.abc import Sequence

from muxserve.config.devices import Cluster
from muxserve.placement.estimator import Estimator, Member
from muxserve.placement.local_search import Mesh
from muxserve.placement.optimizer import check_fits_somewhere


def pack(sizes: Sequence[int], cluster: Cluster) -> list[tuple[int, int]] | None:
    """First-fit decreasing of meshes into nodes: (node, first device) per mesh, in the order
    of ``sizes``; None when they do not fit (exact for power-of-two sizes and nodes)."""
    free = [cluster.devices_per_node] * cluster.num_nodes
    out: dict[int, tuple[int, int]] = {}
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
        node = next((j for j, f in enumerate(free) if f >= sizes[k]), None)
        if node is None:
            return None
        out[k] = (node, cluster.devices_per_node - free[node])
        free[node] -= sizes[k]
    return [out[k] for k in range(len(sizes))]


def _sizes_ok(est: Estimator, i: int, per_node: int) -> list[int]:
    return [n for n in sorted(est.cfg.mesh_sizes)
            if n <= per_node and est.candidate(i, n) is not None]


def _comfortable(est: Estimator, i: int, ok: list[int]) -> int:
    kind = est.kind_of[i]
    for n in ok:
        w = est.weight_dev(kind, n)
        if est.kv_free_bytes(n, [i]) >= est.cfg.spatial_kv_to_weight * w:
            return n
    return ok[-1]


def _alone_tpt(est: Estimator, i: int, n: int) -> float:
    seq = est.seq_kv(est.kind_of[i], n)
    bmax = min(est.cfg.max_batch, int(est.kv_free_bytes(n, [i]) // seq))
    return est.alone_batch(i, n, 100, 100, bmax)[1]


def spatial_units(est: Estimator, cluster: Cluster) -> tuple[list[Mesh], list[tuple[Member, ...]]]:
    """Meshes and their single members (shares 100/100) for the spatial baseline."""
    ids = list(range(len(est.models)))
    per = cluster.devices_per_node
    check_fits_somewhere(est, ids, per)
    ok = {i: _sizes_ok(est, i, per) for i in ids}
    want = {i: _comfortable(est, i, ok[i]) for i in ids}
    size = {i: ok[i][0] for i in ids}
    if pack([size[i] for i in ids], cluster) is None:
        need = sum(size.values())
        raise ValueError(f"spatial: the {len(ids)} models need at least {need} devices on "
                         f"their own meshes; the cluster has {cluster.num_devices} "
                         f"({cluster.num_nodes} x {per}) and may not pack them")

    def demand_per_device(i: int) -> float:
        return est.models[i].compute_demand / size[i]

    def grow(i: int) -> bool:
        """Double model i's mesh if the meshes still pack."""
        bigger = [n for n in ok[i] if n > size[i]]
        if not bigger:
            return False
        old, size[i] = size[i], bigger[0]
        if pack([size[j] for j in ids], cluster) is None:
            size[i] = old
            return False
        return True

    # phase 1: towards the comfortable size, most demanding per device first
    progress = True
    while progress:
        progress = False
        for i in sorted((i for i in ids if size[i] < want[i]),
                        key=lambda i: (-demand_per_device(i), est.models[i].name)):
            if grow(i):
                progress = True
                break

    # phase 2: leftover devices by demand, models below their rate first
    def priority(i: int) -> tuple[int, float, str]:
        r = est.rates[i]
        tpt = _alone_tpt(est, i, size[i])
        if tpt < r:
            return (0, tpt / r, est.models[i].name)
        return (1, -demand_per_device(i), est.models[i].name)

    stuck: set[int] = set()
    while True:
        cand = [i for i in ids if i not in stuck]
        if not cand:
            break
        i = min(cand, key=priority)
        if not grow(i):
            stuck.add(i)

    layout = pack([size[i] for i in ids], cluster)
    assert layout is not None
    cap = est.cfg.max_batch
    meshes = [(size[i], node, dev) for i, (node, dev) in zip(ids, layout, strict=True)]
    members: list[tuple[Member, ...]] = [((i, 100, 100, cap),) for i in ids]
    return meshes, members
