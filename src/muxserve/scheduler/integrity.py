"""UnitScheduler.check_integrity(): every cross-structure invariant of a unit, in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from muxserve.scheduler.state import Status

if TYPE_CHECKING:  # type-only: unit.py imports this module
    from muxserve.scheduler.unit import UnitScheduler


def check_unit(sched: UnitScheduler) -> None:
    """Queues, decode groups, block owners and counts, jobs and quotas agree. O(pool)."""
    sched.bm.check_integrity()
    sched.ledger.check_integrity()
    if sched.quota.mode != "none":
        sched.quota.check_integrity()
    in_job = {rid for j in sched.ledger.running.values() for rid in j.req_ids}
    for m in sched.models:
        active, group = sched.table.active[m], sched.groups[m]
        group.check_integrity(sched.bm)
        assert set(sched.bm.seqs_of(m)) == set(active), f"model {m}: block owners != active"
        running = {rid for rid, st in active.items() if st.status is Status.RUNNING}
        assert running == set(group.members) | {st.req_id for st in group.joiners}
        for rid, st in active.items():
            busy = st.status is Status.PREFILLING or st.in_group and group.in_flight
            assert busy == (rid in in_job), f"request {rid} is {st.status} but in_job={busy}"
            kv = sched.kv_tokens(rid)
            assert sched.bm.blocks_of(rid) == sched.bm.blocks_needed(m, kv), (
                f"request {rid}: {sched.bm.blocks_of(rid)} blocks for {kv} KV tokens")
            assert kv - sched.bm.layout(m).tokens_per_block < sched.bm.num_tokens(rid) <= kv
        keys = [st.key for st in sched.table.waiting[m]]
        assert keys == sorted(keys), f"model {m}: waiting queue is not FCFS"
        assert all(st.status is Status.WAITING for st in sched.table.waiting[m])
    n = sum(len(q) for q in sched.table.waiting.values()) + sum(
        len(a) for a in sched.table.active.values())
    assert n == len(sched.table.states), "a request is lost or in two places"
