"""Local improvements of a greedy placement: spend leftover decode shares, move single models.

The greedy places each model once, in demand order, with the decode share that model needed
alone; these passes fix what that order could not see. Both only ever raise the summed unit
value and keep every memory and decode-share limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from muxserve.placement.estimator import Estimator, Member

Mesh = tuple[int, int, int]  # (size, node, first device)


@dataclass
class GreedyResult:
    """Members per mesh (sorted by model index) and the summed unit values."""

    meshes: list[Mesh]
    members: list[tuple[Member, ...]]
    value: float
    headroom: float = 0.0


def total_headroom(est: Estimator, meshes: Sequence[Mesh],
                   members: Sequence[tuple[Member, ...]]) -> float:
    """Summed unit headroom (see UnitEstimate.headroom)."""
    return sum(est.unit(n, mem).headroom for (n, _, _), mem in zip(meshes, members, strict=True)
               if mem)


def refine_shares(est: Estimator, result: GreedyResult) -> GreedyResult:
    """Spend each unit's leftover decode-share budget: repeatedly give the next share step to
    the member whose raise adds the most unit value (shares were chosen for each model alone,
    before its neighbours' prefills slowed it down)."""
    steps = sorted(est.cfg.decode_shares_pct)
    members = list(result.members)
    for u, ((n, _, _), mem) in enumerate(zip(result.meshes, members, strict=True)):
        while mem:
            base = est.unit(n, mem).value
            budget = est.cfg.max_decode_share_sum_pct - sum(m[2] for m in mem)
            best: tuple[float, tuple[Member, ...]] | None = None
            for k, (i, p, d, cap) in enumerate(mem):
                up = [s for s in steps if s > d]
                if not up or up[0] - d > budget:
                    continue
                new = mem[:k] + ((i, p, up[0], cap),) + mem[k + 1:]
                val = est.unit(n, new).value
                if val > base * (1 + 1e-9) and (best is None or val > best[0]):
                    best = (val, new)
            if best is None:
                break
            mem = best[1]
        members[u] = mem
    value = sum(est.unit(n, mem).value for (n, _, _), mem in zip(result.meshes, members,
                                                                   strict=True) if mem)
    return GreedyResult(result.meshes, members, value, total_headroom(est, result.meshes, members))


def improve_moves(est: Estimator, result: GreedyResult, max_moves: int = 64) -> GreedyResult:
    """Local search after the greedy: move single models to the mesh where the total value
    rises most (the greedy placed early models before it knew the later ones), re-spending
    decode shares after each move; stops when no move helps."""
    cap = est.cfg.max_batch
    members = list(result.members)
    meshes = result.meshes
    for _ in range(max_moves):
        best: tuple[float, int, int, tuple[Member, ...], tuple[Member, ...]] | None = None
        for src, mem in enumerate(members):
            n_src = meshes[src][0]
            base_src = est.unit(n_src, mem).value
            for k, m in enumerate(mem):
                rest = mem[:k] + mem[k + 1:]
                left = est.unit(n_src, rest).value if rest else 0.0
                seen: set[tuple[int, tuple[Member, ...]]] = set()
                for dst, dmem in enumerate(members):
                    n = meshes[dst][0]
                    if dst == src or (n, dmem) in seen:
                        continue
                    seen.add((n, dmem))
                    c = est.candidate(m[0], n)
                    if c is None or (sum(x[2] for x in dmem) + c.decode_pct
                                     > est.cfg.max_decode_share_sum_pct):
                        continue
                    new = tuple(sorted(dmem + ((m[0], c.prefill_pct, c.decode_pct, cap),)))
                    if not est.fits(n, [x[0] for x in new]):
                        continue
                    old = base_src + (est.unit(n, dmem).value if dmem else 0.0)
                    delta = left + est.unit(n, new).value - old
                    if delta > 1e-9 * max(1.0, result.value) and (best is None or delta > best[0]):
                        best = (delta, src, dst, rest, new)
        if best is None:
            break
        _, src, dst, rest, new = best
        members[src], members[dst] = rest, new
        members = refine_shares(est, GreedyResult(meshes, members, 0.0)).members
    value = sum(est.unit(n, mem).value for (n, _, _), mem in zip(meshes, members, strict=True)
                if mem)
    return GreedyResult(meshes, members, value, total_headroom(est, meshes, members))
