"""A model's decode group: its prefilled requests, stepped in lockstep by its decode jobs.

A decode job steps ALL of a model's idle running requests, and at most one decode job per model
runs, so the token counts of a model's running requests advance together. The group therefore
keeps one step counter and per-request offsets,

    generated(st) = st.gen_base + steps - st.step_base        (for a member),

and touches a request only when something happens to it: it needs a new token block (once every
tokens_per_block steps), it reaches max_output_tokens, or it is preempted or aborted. A decode
step costs O(events) Python work instead of O(batch): this is what lets the simulator push
hundreds of millions of tokens through the same scheduler the engine uses.

KV accounting: block table rows are exact whenever a job starts. The block manager's token count
of a member is synced only when it gets a new row (it may lag by < tokens_per_block tokens, and
rows = ceil(tokens / tokens_per_block) holds for both values); use UnitScheduler.kv_tokens().
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from muxserve.kvcache.block_manager import BlockManager
from muxserve.scheduler.state import ReqState


def _unique(entries: Iterable[ReqState]) -> list[ReqState]:
    return list({st.req_id: st for st in entries}.values())


def _join_order(st: ReqState) -> int:
    return st.join_seq


class DecodeGroup:
    def __init__(self, model_id: int, tokens_per_block: int, blocks_per_token_block: int) -> None:
        self.model_id = model_id
        self.tpb = tokens_per_block
        self.g = blocks_per_token_block
        self.members: dict[int, ReqState] = {}  # join order: the newest is the first victim
        self.joiners: list[ReqState] = []  # prefilled since the last step; join at the next one
        self.steps = 0  # decode steps this model completed
        self.in_flight = False  # a decode step of the members is running
        # step -> members due then; entries go stale on preemption (checked when popped)
        self._finish_at: dict[int, list[ReqState]] = {}
        self._row_at: dict[int, list[ReqState]] = {}
        self._sum_prompt = 0
        self._sum_offset = 0  # sum of (gen_base - step_base): the batch's context in O(1)
        self._ids: tuple[int, ...] | None = None  # member_ids() until the membership changes
        self._joins = 0  # joins so far: a member's join_seq orders it like the members dict

    def __len__(self) -> int:
        return len(self.members)

    def generated(self, st: ReqState) -> int:
        if st.in_group:
            return st.gen_base + self.steps - st.step_base
        return st.generated

    def member_ids(self) -> tuple[int, ...]:
        """The members' ids in join order; one tuple shared by the steps of an unchanged batch
        (copying hundreds of ids per step was the one O(batch) cost left in a decode step)."""
        if self._ids is None:
            self._ids = tuple(self.members)
        return self._ids

    def context_tokens(self) -> int:
        """KV tokens the members hold once this step's slots are appended: sum(prompt + gen)."""
        return self._sum_prompt + self._sum_offset + len(self.members) * self.steps

    def add(self, st: ReqState) -> None:
        """A request finished its (re-)prefill; it decodes from the next step on."""
        self.joiners.append(st)

    def remove(self, st: ReqState) -> None:
        """Take a request out (finished, aborted, preempted); its generated count becomes exact."""
        if not st.in_group:
            self.joiners.remove(st)
            return
        st.generated = self.generated(st)
        del self.members[st.req_id]
        self._ids = None
        self._sum_prompt -= st.req.prompt_tokens
        self._sum_offset -= st.gen_base - st.step_base
        st.in_group = False

    def _push(self, table: dict[int, list[ReqState]], step: int, st: ReqState) -> None:
        due = table.get(step)
        if due is None:  # (not setdefault: that builds a throwaway list on every call)
            table[step] = [st]
        else:
            due.append(st)

    def _join(self, st: ReqState, bm: BlockManager) -> None:
        st.gen_base, st.step_base, st.in_group = st.generated, self.steps, True
        st.join_seq = self._joins
        self._joins += 1
        st.kv_cap = bm.blocks_of(st.req_id) // self.g * self.tpb
        self.members[st.req_id] = st
        self._ids = None
        prompt = st.req.prompt_tokens
        self._sum_prompt += prompt
        self._sum_offset += st.gen_base - st.step_base
        self._push(self._finish_at, self.steps + st.max_output_tokens - st.gen_base, st)
        # the step whose new token (position prompt + gen - 1) is the first past kv_cap
        self._push(self._row_at, self.steps + st.kv_cap - prompt - st.gen_base + 1, st)

    def _tokens_after_step(self, st: ReqState) -> int:
        return st.req.prompt_tokens + self.generated(st)

    def _grow(self, st: ReqState, bm: BlockManager) -> None:
        bm.grow_to(st.req_id, self._tokens_after_step(st))
        st.kv_cap += self.tpb
        self._push(self._row_at, self.steps + self.tpb, st)

    def start_step(self, bm: BlockManager,
                   preempt: Callable[[ReqState], None]) -> list[ReqState]:
        """Prepare the next step: joiners join, members whose new token needs a block get one.

        When the pool runs short, the newest members are preempted (``preempt`` must remove
        them from the group and free their blocks), a member needing a block itself last, as in
        vLLM/MuxServe. Returns the preempted requests; the step runs on what remains.
        """
        assert not self.in_flight, "a decode step of this model is already running"
        if self.joiners:
            for st in self.joiners:
                self._join(st, bm)
            self.joiners.clear()
        entries = self._row_at.pop(self.steps, None)
        if not entries:
            return []
        steps = self.steps
        # (generated() and _tokens_after_step() inlined: this runs on every decode step)
        due = [st for st in (_unique(entries) if len(entries) > 1 else entries)
               if st.in_group
               and st.req.prompt_tokens + st.gen_base + steps - st.step_base > st.kv_cap]
        if not due:
            return []
        if len(due) * self.g <= bm.num_free_blocks and bm.quota(self.model_id) is None:
            for st in due:
                self._grow(st, bm)
            return []
        return self._start_step_short(bm, due, preempt)

    def _start_step_short(self, bm: BlockManager, due: list[ReqState],
                          preempt: Callable[[ReqState], None]) -> list[ReqState]:
        """The due members, oldest first, each get their block row; while one does not fit,
        the newest member is preempted (the due member itself when it is the newest).

        O(due log due + victims): the members dict is never walked. (It used to be copied
        into a list and scanned every step, O(batch) per step with the pool full -- the
        steady state of a loaded unit.) The members dict is in join order, so the newest
        member is its last key and join_seq sorts the due ones the same way.
        """
        preempted: list[ReqState] = []
        members = self.members
        for st in sorted(due, key=_join_order):
            if not st.in_group:  # preempted above as the newest member
                continue
            delta = self._tokens_after_step(st) - bm.num_tokens(st.req_id)
            while not bm.can_append(st.req_id, delta):
                victim = members[next(reversed(members))]
                if victim is st:
                    break
                preempt(victim)
                preempted.append(victim)
            if not bm.can_append(st.req_id, delta):
                preempt(st)
                preempted.append(st)
                break
            self._grow(st, bm)
        return preempted

    def end_step(self) -> list[ReqState]:
        """The running step ended: every member got a token. Returns the members that now have
        max_output_tokens (still members: the caller removes them)."""
        self.in_flight = False
        self.steps += 1
        due = self._finish_at.pop(self.steps, None)
        if not due:
            return []
        return [st for st in (_unique(due) if len(due) > 1 else due)
                if st.in_group and self.generated(st) >= st.max_output_tokens]

    def check_integrity(self, bm: BlockManager) -> None:
        assert not set(self.members) & {st.req_id for st in self.joiners}
        assert all(not st.in_group for st in self.joiners)
        prompt = offset = 0
        for st in self.members.values():
            assert st.in_group
            gen = self.generated(st)
            assert 1 <= gen < st.max_output_tokens, f"request {st.req_id}: {gen} tokens"
            assert bm.blocks_of(st.req_id) == st.kv_cap // self.tpb * self.g
            prompt += st.req.prompt_tokens
            offset += st.gen_base - st.step_base
        assert (prompt, offset) == (self._sum_prompt, self._sum_offset), "stale group sums"
        assert self._ids is None or self._ids == tuple(self.members), "stale member ids"
