"""Batch builders: which requests one prefill or decode job of one model takes. They allocate KV
blocks for what they take (and preempt for decode), so a returned batch is ready to run."""

from __future__ import annotations

from muxserve.kvcache.block_manager import BlockManager
from muxserve.scheduler.state import ReqState, RequestTable, Status


def prefill_ready(table: RequestTable, bm: BlockManager, model_id: int, seq_cap: int) -> bool:
    """True when a prefill of this model could start now if compute allowed it."""
    q = table.waiting[model_id]
    return (bool(q) and len(table.active[model_id]) < seq_cap
            and bm.can_allocate(model_id, q[0].prefill_tokens))


def build_prefill(table: RequestTable, bm: BlockManager, model_id: int, token_cap: int,
                  seq_cap: int) -> list[ReqState]:
    """Fill a prefill batch first-come-first-served and allocate its blocks.

    Stops at the first request that would push the batch over ``token_cap`` tokens, the model
    over ``seq_cap`` sequences, or the pool out of blocks (strict FCFS: no skipping ahead).
    A lone request longer than ``token_cap`` still runs, alone, or it would never run.
    """
    q = table.waiting[model_id]
    batch: list[ReqState] = []
    tokens = 0
    while q:
        st = q[0]
        n = st.prefill_tokens
        if batch and tokens + n > token_cap:
            break
        if len(table.active[model_id]) >= seq_cap or not bm.can_allocate(model_id, n):
            break
        bm.allocate(st.req_id, model_id, n)
        table.admit(st)
        batch.append(st)
        tokens += n
    return batch


def preempt(table: RequestTable, bm: BlockManager, st: ReqState) -> None:
    """Free a request's blocks and requeue it; its next prefill recomputes prompt + generated."""
    bm.free(st.req_id)
    table.deactivate(st)
    table.enqueue(st)
    st.num_preemptions += 1


def build_decode(table: RequestTable, bm: BlockManager,
                 model_id: int) -> tuple[list[ReqState], list[ReqState]]:
    """One decode step over all of the model's idle running requests, oldest first.

    Appends the slot of each request's newest token. When the pool has no block for it, the
    newest requests of the batch are preempted (vLLM/MuxServe recompute), the request itself
    last. Requests inside a running job are never victims: their job still writes their blocks.
    Returns (batch, preempted).
    """
    pending = table.idle_running(model_id)
    if bm.append_batch([st.req_id for st in pending]):  # the common case: everything fits
        for st in pending:
            st.status = Status.DECODING
        return pending, []
    batch: list[ReqState] = []
    preempted: list[ReqState] = []
    i = 0
    while i < len(pending):
        st = pending[i]
        while not bm.can_append(st.req_id) and len(pending) > i + 1:
            victim = pending.pop()
            preempt(table, bm, victim)
            preempted.append(victim)
        if bm.can_append(st.req_id):
            bm.append(st.req_id)
            batch.append(st)
            st.status = Status.DECODING
        else:
            preempt(table, bm, st)
            preempted.append(st)
        i += 1
    return batch, preempted
