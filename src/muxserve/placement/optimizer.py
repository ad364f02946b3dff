"""MuxServe's enumeration-based greedy placement, made fast enough for large fleets.

1. Node patterns: every way to split one node's devices into meshes of the allowed sizes
   (8 devices: [8], [4,4], [4,2,2], ... [1 x 8]).
2. Groupings: a multiset of node patterns (nodes are interchangeable, so order does not
   matter), reduced to its multiset of mesh sizes (the greedy below only sees sizes, so two
   node combinations with the same mesh sizes give the same result and are evaluated once).
   Groupings with more meshes than models, or whose largest mesh is smaller than the largest
   minimum mesh some model needs, are dropped.
3. Greedy per grouping: models by computation requirement (rate x parameters), largest first;
   each goes to the mesh where it adds the most estimated value (rate x served throughput),
   subject to memory (weights + overheads + KV reserve) and the decode-share budget; ties go to
   the smaller mesh. Meshes in the same state (size, members) are evaluated once.
   Each grouping runs twice: equal gains then go either to the mesh keeping more headroom
   (spreads light models) or to the first such mesh (packs them, as the original does).
4. Each result spends leftover decode-share budget (local_search.refine_shares); the grouping
   with the best objective wins (equal objectives: more headroom); single-model moves between
   meshes then polish it (local_search.improve_moves).

When the number of groupings exceeds ``full_enumeration_limit`` (from 6 nodes of 8), the
search decomposes: models are spread over nodes by longest-processing-time on their device
need (compute and memory), then each node is optimised alone over its own patterns. See
docs/placement.md.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from muxserve.config.devices import Cluster
from muxserve.placement.estimator import Estimator, Member
from muxserve.placement.local_search import (
    GreedyResult,
    Mesh,
    improve_moves,
    refine_shares,
    total_headroom,
)

CROSS_NODE_MOVE_LIMIT = 20_000


def node_patterns(devices_per_node: int, mesh_sizes: Sequence[int]) -> list[tuple[int, ...]]:
    """All multisets of mesh sizes that exactly cover one node, largest meshes first."""
    sizes = sorted({s for s in mesh_sizes if s <= devices_per_node}, reverse=True)
    out: list[tuple[int, ...]] = []

    def rec(left: int, start: int, acc: list[int]) -> None:
        if left == 0:
            out.append(tuple(acc))
            return
        for k in range(start, len(sizes)):
            if sizes[k] <= left:
                rec(left - sizes[k], k, acc + [sizes[k]])

    rec(devices_per_node, 0, [])
    if not out:
        raise ValueError(f"no mesh sizes in {list(mesh_sizes)} cover a node of "
                         f"{devices_per_node} devices")
    return out


def num_groupings(num_nodes: int, num_patterns: int) -> int:
    return math.comb(num_patterns + num_nodes - 1, num_nodes)


def groupings(num_nodes: int, patterns: Sequence[tuple[int, ...]]) -> list[list[Mesh]]:
    """Distinct mesh-size multisets, each laid out on nodes (first node combination found)."""
    seen: set[tuple[int, ...]] = set()
    out: list[list[Mesh]] = []
    for combo in itertools.combinations_with_replacement(range(len(patterns)), num_nodes):
        sizes = tuple(sorted((s for c in combo for s in patterns[c]), reverse=True))
        if sizes in seen:
            continue
        seen.add(sizes)
        meshes: list[Mesh] = []
        for node, c in enumerate(combo):
            dev = 0
            for s in patterns[c]:
                meshes.append((s, node, dev))
                dev += s
        out.append(meshes)
    return out


class PlacementFailed(Exception):
    """The greedy found no mesh for a model; ``model`` is its index."""

    def __init__(self, model: int) -> None:
        super().__init__(model)
        self.model = model


def greedy(est: Estimator, meshes: Sequence[Mesh], order: Sequence[int],
           start: Sequence[tuple[Member, ...]] | None = None, spread: bool = True) -> GreedyResult:
    """Place models in ``order`` one by one on the mesh with the largest value gain, starting
    from the members in ``start`` (default: empty meshes). Equal gains go to the smaller mesh
    (MuxServe's rule), then, with ``spread``, to the mesh that keeps more headroom, else to the
    first such mesh (which packs light models together)."""
    cap = est.cfg.max_batch
    members: list[tuple[Member, ...]] = list(start) if start else [() for _ in meshes]
    values = [est.unit(n, mem).value if mem else 0.0
              for (n, _, _), mem in zip(meshes, members, strict=True)]
    dsum = [sum(m[2] for m in mem) for mem in members]
    for i in order:
        best: tuple[float, int, float, int, tuple[Member, ...], float] | None = None
        seen: set[tuple[int, tuple[Member, ...]]] = set()
        for u, (n, _, _) in enumerate(meshes):
            state = (n, members[u])
            if state in seen:
                continue
            seen.add(state)
            c = est.candidate(i, n)
            if c is None or dsum[u] + c.decode_pct > est.cfg.max_decode_share_sum_pct:
                continue
            new = tuple(sorted(members[u] + ((i, c.prefill_pct, c.decode_pct, cap),)))
            if not est.fits(n, [m[0] for m in new]):
                continue
            ue = est.unit(n, new)
            gain = ue.value - values[u]
            room = 0.0
            if spread:
                room = ue.headroom - (est.unit(n, members[u]).headroom if members[u] else 0.0)
            if best is None or _better(gain, n, room, best[0], best[1], best[2]):
                best = (gain, n, room, u, new, ue.value)
        if best is None:
            raise PlacementFailed(i)
        _, _, _, u, new, val = best
        members[u], values[u] = new, val
        dsum[u] = sum(m[2] for m in new)
    return GreedyResult(list(meshes), members, sum(values), total_headroom(est, meshes, members))


def _better(gain: float, n: int, room: float, b_gain: float, b_n: int, b_room: float) -> bool:
    """More value gained; on a tie the smaller mesh (MuxServe's rule), then more headroom."""
    tol = 1e-9 * max(1.0, abs(gain), abs(b_gain))
    if abs(gain - b_gain) > tol:
        return gain > b_gain
    if n != b_n:
        return n < b_n
    return room > b_room * (1 + 1e-9) + 1e-12


def demand_order(est: Estimator, ids: Sequence[int]) -> list[int]:
    """Computation requirement (rate x parameters) first, then size, then name for ties."""
    return sorted(ids, key=lambda i: (-est.models[i].compute_demand,
                                      -est.models[i].arch.num_params, est.models[i].name))


def check_fits_somewhere(est: Estimator, ids: Sequence[int], devices_per_node: int) -> None:
    """A clear error for models that fit no mesh of this cluster, naming each."""
    bad = [i for i in ids
           if not any(est.candidate(i, n) for n in est.cfg.mesh_sizes if n <= devices_per_node)]
    if bad:
        gib = est.device.memory_bytes / 2**30
        names = ", ".join(f"{est.models[i].name!r} ({est.models[i].arch.name}, "
                          f"{est.models[i].arch.weight_bytes() / 2**30:.0f} GiB of weights)"
                          for i in bad)
        raise ValueError(f"model(s) {names} fit on no mesh of up to {devices_per_node} x "
                         f"{est.device.name} ({gib:.0f} GiB each) with room for "
                         f"{est.cfg.kv_reserve_seqs} sequences of KV cache, or the cost model "
                         f"has no data for them at those tensor-parallel degrees")


def search_node_groupings(est: Estimator, ids: Sequence[int], num_nodes: int,
                          devices_per_node: int) -> GreedyResult:
    """Full enumeration over mesh groupings of ``num_nodes`` nodes for models ``ids``."""
    check_fits_somewhere(est, ids, devices_per_node)
    order = demand_order(est, ids)
    required = max(est.min_mesh(i) or 0 for i in ids)
    all_g = groupings(num_nodes, node_patterns(devices_per_node, est.cfg.mesh_sizes))
    fewest = min(len(g) for g in all_g)
    cand = [g for g in all_g
            if len(g) <= max(len(ids), fewest) and max(m[0] for m in g) >= required]
    best: GreedyResult | None = None
    failed: set[int] = set()
    for g, spread in itertools.product(cand, (True, False)):
        try:
            r = refine_shares(est, greedy(est, g, order, spread=spread))
        except PlacementFailed as e:
            failed.add(e.model)
            continue
        # equal values (every rate met) go to more headroom; then the earlier grouping
        tol = 1e-9 * max(1.0, r.value)
        if (best is None or r.value > best.value + tol
                or (r.value >= best.value - tol and r.headroom > best.headroom * (1 + 1e-9))):
            best = r
    if best is None:
        names = ", ".join(repr(est.models[i].name) for i in sorted(failed)) or "?"
        raise ValueError(f"no mesh grouping of {num_nodes} node(s) x {devices_per_node} "
                         f"{est.device.name} fits all {len(ids)} models (memory or decode-share "
                         f"budget exhausted); could not place: {names}")
    return improve_moves(est, best)


def device_need(est: Estimator, i: int) -> float:
    """Devices' worth of compute model i needs alone at its best mesh (>= its decode share)."""
    needs = []
    for n in est.cfg.mesh_sizes:
        c = est.candidate(i, n)
        if c is not None:
            short = est.rates[i] / c.tpt_rps if c.tpt_rps > 0 else 1.0
            needs.append(n * c.decode_pct / 100 * max(1.0, short))
    return min(needs) if needs else math.inf


def footprint(est: Estimator, i: int) -> float:
    """Bytes model i takes on its smallest mesh: weights, overheads and the KV reserve."""
    n = est.min_mesh(i)
    if n is None:
        return math.inf
    w, seq = est.weight_dev(est.kind_of[i], n), est.seq_kv(est.kind_of[i], n)
    return n * (w + est.overhead_bytes + est.cfg.kv_reserve_seqs * seq)


def split_over_nodes(est: Estimator, cluster: Cluster) -> list[list[int]]:
    """Longest-processing-time assignment of models to nodes, balancing the larger of the
    compute load (devices' worth) and the weight memory share of each node."""
    ids = list(range(len(est.models)))
    need = {i: device_need(est, i) for i in ids}
    weight = {i: footprint(est, i) for i in ids}
    node_mem = cluster.devices_per_node * est.usable_bytes
    per = cluster.devices_per_node
    loads = [(0.0, 0.0)] * cluster.num_nodes
    out: list[list[int]] = [[] for _ in range(cluster.num_nodes)]
    for i in sorted(ids, key=lambda i: (-need[i], -weight[i], est.models[i].name)):
        def after(k: int, i: int = i) -> float:
            c, m = loads[k]
            return max((c + need[i]) / per, (m + weight[i]) / node_mem)
        k = min(range(cluster.num_nodes), key=lambda k: (after(k), len(out[k]), k))
        c, m = loads[k]
        loads[k] = (c + need[i], m + weight[i])
        out[k].append(i)
    return out


def search(est: Estimator, cluster: Cluster) -> GreedyResult:
    """Best grouping and greedy assignment for the whole cluster."""
    ids = list(range(len(est.models)))
    patterns = node_patterns(cluster.devices_per_node, est.cfg.mesh_sizes)
    if num_groupings(cluster.num_nodes, len(patterns)) <= est.cfg.full_enumeration_limit:
        return search_node_groupings(est, ids, cluster.num_nodes, cluster.devices_per_node)
    check_fits_somewhere(est, ids, cluster.devices_per_node)
    meshes: list[Mesh] = []
    members: list[tuple[Member, ...]] = []
    leftover: list[int] = []
    for node, node_ids in enumerate(split_over_nodes(est, cluster)):
        r = _search_node_dropping(est, node_ids, cluster.devices_per_node, leftover)
        if r is None:  # nothing placed here: keep the node whole for the leftovers
            meshes.append((cluster.devices_per_node, node, 0))
            members.append(())
            continue
        meshes += [(s, node, dev) for s, _, dev in r.meshes]
        members += r.members
    if leftover:
        # models a node could not take go wherever they add the most, cluster-wide
        try:
            members = greedy(est, meshes, demand_order(est, leftover), members).members
        except PlacementFailed as e:
            raise ValueError(f"no room left for model {est.models[e.model].name!r} "
                             f"({est.models[e.model].arch.name}) on {cluster.num_nodes} nodes x "
                             f"{cluster.devices_per_node} {est.device.name}: could not place it "
                             f"(memory or decode-share budget exhausted)") from None
    value = sum(est.unit(n, mem).value for (n, _, _), mem in zip(meshes, members, strict=True)
                if mem)
    result = GreedyResult(meshes, members, value, total_headroom(est, meshes, members))
    # cross-node moves cost O(models x meshes) each: affordable up to mid-size clusters
    if len(est.models) * len(meshes) <= CROSS_NODE_MOVE_LIMIT:
        result = improve_moves(est, result)
    return result


def _search_node_dropping(est: Estimator, ids: list[int], per_node: int,
                          leftover: list[int]) -> GreedyResult | None:
    """Optimise one node; models it cannot hold move to ``leftover`` (least demanding first)."""
    ids = list(ids)
    while ids:
        try:
            return search_node_groupings(est, ids, 1, per_node)
        except ValueError:
            drop = demand_order(est, ids)[-1]
            ids.remove(drop)
            leftover.append(drop)
    return None
