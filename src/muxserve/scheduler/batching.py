"""The prefill batch builder: which waiting requests one prefill job of one model takes. It
allocates their KV blocks, so a returned batch is ready to run. (Decode batches: DecodeGroup.)"""

from __future__ import annotations

from muxserve.kvcache.block_manager import BlockManager
from muxserve.scheduler.state import ReqState, RequestTable


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
