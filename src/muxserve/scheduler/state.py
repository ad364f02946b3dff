"""Per-request scheduling state and per-model queues (waiting FCFS, active by admission)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from muxserve.scheduler.api import Request


class Status(Enum):
    WAITING = "waiting"  # no KV blocks; needs a (re-)prefill
    PREFILLING = "prefilling"  # in a running prefill job
    RUNNING = "running"  # prefilled, holds blocks: in its model's DecodeGroup


@dataclass(eq=False, slots=True)
class ReqState:
    req: Request
    generated: int = 0  # tokens generated so far (kept across preemptions); see DecodeGroup
    status: Status = Status.WAITING
    aborted: bool = False  # abort() came while it was in a running job
    num_preemptions: int = 0
    req_id: int = field(init=False)  # copies of req's fields: read on every token
    max_output_tokens: int = field(init=False)
    # DecodeGroup bookkeeping (valid while in_group): generated = gen_base + steps - step_base;
    # kv_cap = tokens its block table rows hold
    in_group: bool = False
    gen_base: int = 0
    step_base: int = 0
    kv_cap: int = 0
    join_seq: int = 0  # its position in the group's join order (members dict order)

    def __post_init__(self) -> None:
        self.req_id = self.req.req_id
        self.max_output_tokens = self.req.max_output_tokens

    @property
    def prefill_tokens(self) -> int:
        # a preempted request is recomputed from scratch: prompt and everything it generated
        return self.req.prompt_tokens + self.generated

    @property
    def key(self) -> tuple[float, int]:
        return (self.req.arrival_s, self.req.req_id)


class RequestTable:
    """All unfinished requests of a unit. Finished and aborted ones are forgotten."""

    def __init__(self, model_ids: Iterable[int]) -> None:
        self.states: dict[int, ReqState] = {}
        # waiting: sorted by (arrival_s, req_id), so a preempted request goes back in front of
        # newer arrivals; active: holds blocks, in admission order (newest last = first victim)
        self.waiting: dict[int, deque[ReqState]] = {m: deque() for m in model_ids}
        self.active: dict[int, dict[int, ReqState]] = {m: {} for m in self.waiting}

    def add(self, req: Request) -> None:
        if req.req_id in self.states:
            raise ValueError(f"request id {req.req_id} is already queued or running")
        st = ReqState(req)
        self.states[req.req_id] = st
        self.enqueue(st)

    def enqueue(self, st: ReqState) -> None:
        """Put a request into its model's waiting queue at its FCFS position."""
        st.status = Status.WAITING
        q = self.waiting[st.req.model_id]
        if not q or q[-1].key <= st.key:
            q.append(st)  # the common case: arrivals come in time order
            return
        i = next(i for i, other in enumerate(q) if st.key < other.key)
        q.insert(i, st)

    def admit(self, st: ReqState) -> None:
        """Head of the waiting queue -> active (it just got its blocks)."""
        q = self.waiting[st.req.model_id]
        assert q and q[0] is st, "admission must be FCFS"
        q.popleft()
        self.active[st.req.model_id][st.req_id] = st
        st.status = Status.PREFILLING

    def deactivate(self, st: ReqState) -> None:
        """Active -> nowhere (its blocks were freed: finished, aborted or preempted)."""
        del self.active[st.req.model_id][st.req_id]

    def forget(self, st: ReqState) -> None:
        del self.states[st.req_id]
