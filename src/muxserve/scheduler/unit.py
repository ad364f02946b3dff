"""UnitScheduler: one unit's scheduler, shared by the real engine and the simulator.

It composes small parts: a RequestTable (queues), a QuotaManager (KV quotas -> sequence caps),
the prefill batch builder (FCFS fill), one DecodeGroup per model (lockstep decode steps with
preemption), a ComputeLedger (10% parts, bounded overlap) and a policy round from
POLICY_SPECS. It owns the KV blocks of its requests through the BlockManager: blocks for a prompt
are allocated when its prefill job is scheduled, a decode job's block tables have room for the
token it writes when it starts, and blocks are freed when a request finishes, is aborted or is
preempted.

Block accounting, for the executor: a request that generated n tokens holds prompt + n - 1 KV
tokens between jobs (its newest token is not yet written); a decode job writes that token, so
its block table already has room for position prompt + n - 1 when the job starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from muxserve.kvcache.block_manager import BlockManager
from muxserve.scheduler.api import (
    DEFAULT_SCHEDULER_CONFIG,
    Job,
    JobResult,
    Request,
    SchedulerConfig,
    StepEvents,
    UnitModel,
)
from muxserve.scheduler.batching import build_prefill, prefill_ready
from muxserve.scheduler.compute import ComputeLedger
from muxserve.scheduler.decode_group import DecodeGroup
from muxserve.scheduler.integrity import check_unit
from muxserve.scheduler.policy import POLICY_SPECS, capacity_parts, job_shares, overload_parts
from muxserve.scheduler.quota import QuotaManager
from muxserve.scheduler.state import ReqState, RequestTable, Status
from muxserve.types import Phase

_NO_EARLY: AbstractSet[int] = frozenset()  # update()'s "no request stopped early"
PREFILL, DECODE = Phase.PREFILL, Phase.DECODE


class UnitScheduler:
    """Decides which jobs each colocated model runs, and owns their KV blocks.

    Loop: ``jobs = schedule(now)``; run each job; ``update(job, JobResult(job.job_id), end_s)``.
    Models are registered in ``block_manager`` (or must already be, with the same layout).
    """

    def __init__(self, models: Sequence[UnitModel], block_manager: BlockManager,
                 config: SchedulerConfig = DEFAULT_SCHEDULER_CONFIG) -> None:
        if not models:
            raise ValueError("a unit needs at least one model")
        ids = [m.model_id for m in models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate model_id in {ids}")
        self.models = {m.model_id: m for m in models}
        self.bm = block_manager
        self.config = config
        self.spec = POLICY_SPECS[config.policy]
        for m in models:
            _register(block_manager, m)
        self.table = RequestTable(ids)
        self.quota = QuotaManager(models, block_manager, config, self.spec.quota_mode)
        self._shares = job_shares(self.spec, models)
        self.ledger = ComputeLedger(capacity_parts(self.spec, config, self._shares),
                                    self.spec.one_job_per_model, self.spec.max_jobs,
                                    overload_parts(self.spec, config))
        self.model_ids = ids
        self.rr_next: dict[str, int] = {}
        self.rotations = [tuple(ids[i:] + ids[:i]) for i in range(len(ids))]
        self._next_job_id = 0
        self._last_end_s: dict[int, float] = {}
        self._batches: dict[int, list[ReqState]] = {}  # prefill job_id -> its requests
        self.groups = {m: DecodeGroup(m, block_manager.layout(m).tokens_per_block,
                                      block_manager.layout(m).blocks_per_token_block)
                       for m in ids}
        self._decode_aborts: dict[int, list[ReqState]] = {m: [] for m in ids}
        self._preempted: list[int] = []
        self.num_preemptions = 0

    # ---- requests -------------------------------------------------------------------------
    def add_request(self, req: Request, now_s: float) -> None:
        """Queue a request. Raises ValueError for an unknown model, a duplicate id, or a request
        whose full length could never fit this unit's KV pool."""
        if req.model_id not in self.models:
            raise ValueError(f"request {req.req_id}: unknown model_id {req.model_id}; this unit "
                             f"serves {sorted(self.models)}")
        need = self.bm.blocks_needed(req.model_id, req.prompt_tokens + req.max_output_tokens - 1)
        if need > self.bm.num_blocks:
            raise ValueError(f"request {req.req_id}: {req.prompt_tokens} prompt + "
                             f"{req.max_output_tokens} output tokens need {need} KV blocks, the "
                             f"pool has {self.bm.num_blocks}")
        self.table.add(req)

    def abort(self, req_id: int) -> None:
        """Drop a request. Unknown or already finished ids are ignored (abort races finish).
        A request inside a running job keeps its blocks until that job's update()."""
        st = self.table.states.get(req_id)
        if st is None or st.aborted:
            return
        group = self.groups[st.req.model_id]
        if st.status is Status.PREFILLING or st.in_group and group.in_flight:
            st.aborted = True
            if st.in_group:
                self._decode_aborts[st.req.model_id].append(st)
        elif st.status is Status.WAITING:
            self.table.waiting[st.req.model_id].remove(st)
            self.table.forget(st)
        else:
            self._drop(st)

    # ---- scheduling -----------------------------------------------------------------------
    def schedule(self, now_s: float) -> list[Job]:
        """Jobs to START now (may be empty); their KV blocks are allocated. May preempt."""
        if self.quota.due(now_s):
            self.quota.adapt(self.queue_lens(), {m: len(a) for m, a in self.table.active.items()})
        jobs = self.spec.round(self)
        if self.config.integrity_checks and not self.ledger.running:
            self.check_integrity()
        return jobs

    # ---- primitives of the policy rounds (policy.RoundContext) -----------------------------
    def prefill_running(self) -> bool:
        return self.ledger.any_running(Phase.PREFILL)

    def prefill_starved(self) -> bool:
        """A prefill could start but for compute, and no prefill runs: hold decodes back."""
        if self.ledger.any_running(PREFILL):
            return False
        table, bm, cap = self.table, self.bm, self.quota.seq_cap  # _has_work(m, PREFILL) inlined
        return any(prefill_ready(table, bm, m, cap(m)) for m in self.model_ids)

    def _has_work(self, m: int, phase: Phase) -> bool:
        """A job of (m, phase) could start now if compute allowed it."""
        if phase is Phase.PREFILL:
            return prefill_ready(self.table, self.bm, m, self.quota.seq_cap(m))
        group = self.groups[m]
        return bool(group.members or group.joiners)

    def blocked_on_compute(self, m: int, phase: Phase) -> bool:
        """(m, phase) has work and is not running, but its share does not fit now."""
        return (not self.ledger.busy(m, phase) and self._has_work(m, phase)
                and not self.ledger.has_room(self._shares[(m, phase)]))

    def oldest_waiting(self, m: int) -> tuple[float, int] | None:
        waiting = self.table.waiting[m]
        return waiting[0].key if waiting else None

    def oldest_running(self, m: int) -> tuple[float, int] | None:
        """The decode group's oldest request (by joining: O(1)), if it could decode now."""
        group = self.groups[m]
        if group.in_flight:
            return None
        heads = [group.joiners[0].key] if group.joiners else []
        if group.members:
            heads.append(next(iter(group.members.values())).key)
        return min(heads) if heads else None

    def ready_since_s(self, m: int) -> float | None:
        """When the model became ready for its next job: its oldest pending request's arrival
        or its previous job's end, whichever is later (FCFS over jobs: a model that just ran
        queues behind the others)."""
        keys = [k for k in (self.oldest_waiting(m), self.oldest_running(m)) if k is not None]
        if not keys:
            return None
        oldest = min(keys)[0]
        return max(oldest, self._last_end_s.get(m, oldest))

    def try_start(self, m: int, phase: Phase) -> Job | None:
        prefill = phase is PREFILL
        group = self.groups[m]
        if not self.table.waiting[m] if prefill else not (group.members or group.joiners):
            return None  # nothing to do: the cheap check first, this runs per model per round
        share = self._shares[m, phase]
        if not self.ledger.can_start(m, phase, share):
            return None
        if prefill:
            batch = build_prefill(self.table, self.bm, m, self.config.prefill_token_cap,
                                  self.quota.seq_cap(m))
            if not batch:
                return None
            req_ids = tuple([st.req_id for st in batch])
            tokens = context = sum([st.prefill_tokens for st in batch])
        else:
            preempted = group.start_step(self.bm, self._preempt)
            if preempted:
                self._preempted.extend(st.req_id for st in preempted)
                self.num_preemptions += len(preempted)
            if not group.members:
                return None
            req_ids = group.member_ids()
            tokens, context = len(req_ids), group.context_tokens()
            group.in_flight = True
        job = Job(self._next_job_id, m, phase, req_ids, tokens, context, share)
        self._next_job_id += 1
        self.ledger.start(job)
        if prefill:
            self._batches[job.job_id] = batch
        return job

    def _preempt(self, st: ReqState) -> None:
        """Free a running request's blocks and requeue it; its next prefill recomputes prompt +
        generated tokens."""
        self.groups[st.req.model_id].remove(st)
        self.bm.free(st.req_id)
        self.table.deactivate(st)
        self.table.enqueue(st)
        st.num_preemptions += 1

    # ---- results --------------------------------------------------------------------------
    def update(self, job: Job, result: JobResult | None, now_s: float) -> StepEvents:
        """A job ended at now_s: every live request in it got one token; finished requests
        (max_output_tokens reached, or named by ``result``) free their blocks. ``result=None``
        means no request stopped early (the simulator's case: no per-job result object)."""
        early = _NO_EARLY
        if result is not None:
            if result.job_id != job.job_id:
                raise ValueError(f"result of job {result.job_id} given for job {job.job_id}")
            if result.finished_req_ids:
                early = set(result.finished_req_ids)
                if not early <= set(job.req_ids):
                    raise ValueError(f"job {job.job_id}: finished_req_ids {sorted(early)} name "
                                     f"requests outside the job {job.req_ids}")
        job = self.ledger.end(job.job_id)
        self._last_end_s[job.model_id] = now_s
        if job.phase is PREFILL:
            first, tokens, finished = self._end_prefill(self._batches.pop(job.job_id), early)
        else:
            first, (tokens, finished) = (), self._end_decode(job, early)
            self.quota.record_decode(job.model_id, len(job.req_ids))
        preempted: tuple[int, ...] = ()
        if self._preempted:
            preempted, self._preempted = tuple(self._preempted), []
        return StepEvents(first, tokens, finished, preempted)

    def _end_prefill(self, batch: list[ReqState], early: AbstractSet[int]
                     ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        first: list[int] = []
        tokens: list[int] = []
        finished: list[int] = []
        for st in batch:
            if st.aborted:
                self._drop(st)
                continue
            st.generated += 1
            tokens.append(st.req_id)
            if st.generated == 1:  # not for a recompute
                first.append(st.req_id)
            if st.generated >= st.max_output_tokens or st.req_id in early:
                self._drop(st)
                finished.append(st.req_id)
            else:
                st.status = Status.RUNNING
                self.groups[st.req.model_id].add(st)
        return tuple(first), tuple(tokens), tuple(finished)

    def _end_decode(self, job: Job, early: AbstractSet[int]
                    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Every member got a token (O(1)); only aborted and finishing members are touched.
        Returns (requests that got a token, finished requests)."""
        group = self.groups[job.model_id]
        done = group.end_step()
        tokens = job.req_ids
        aborts = self._decode_aborts[job.model_id]
        if aborts:
            gone = {st.req_id for st in aborts}
            tokens = tuple([r for r in tokens if r not in gone])
            for st in aborts:
                self._drop(st)
            aborts.clear()
        finished = [st for st in done if st.in_group] if done else []
        if early:
            for rid in sorted(early):
                member = group.members.get(rid)
                if member is not None and member not in finished:
                    finished.append(member)
        if not finished:
            return tokens, ()
        for st in finished:
            self._drop(st)
        return tokens, tuple([st.req_id for st in finished])

    def _drop(self, st: ReqState) -> None:
        if st.status is Status.RUNNING:
            self.groups[st.req.model_id].remove(st)
        self.bm.free(st.req_id)
        self.table.deactivate(st)
        self.table.forget(st)

    # ---- introspection --------------------------------------------------------------------
    def has_unfinished(self) -> bool:
        return bool(self.table.states)

    def num_running_jobs(self) -> int:
        return len(self.ledger.running)

    def queue_lens(self) -> dict[int, int]:
        """Waiting (not yet prefilled or preempted) requests per model."""
        return {m: len(q) for m, q in self.table.waiting.items()}

    def num_active(self, model_id: int) -> int:
        """Requests of the model that hold KV blocks."""
        return len(self.table.active[model_id])

    def request_state(self, req_id: int) -> ReqState:
        """The live state (its ``generated`` lags while it decodes: use generated())."""
        return self.table.states[req_id]

    def generated(self, req_id: int) -> int:
        """Tokens the request generated so far."""
        st = self.table.states[req_id]
        return self.groups[st.req.model_id].generated(st)

    def kv_tokens(self, req_id: int) -> int:
        """KV tokens the request's blocks hold now, between jobs (the block manager's count of a
        decoding request may lag behind: DecodeGroup syncs it once per token block)."""
        st = self.table.states[req_id]
        if st.status is Status.WAITING:
            return 0
        busy = st.status is Status.PREFILLING or st.in_group and self.groups[
            st.req.model_id].in_flight
        return st.req.prompt_tokens + self.generated(req_id) - (0 if busy else 1)

    def check_integrity(self) -> None:
        """Queues, groups, blocks, jobs and quotas agree. O(pool); raises AssertionError."""
        check_unit(self)


def _register(bm: BlockManager, m: UnitModel) -> None:
    layers, heads, head_dim = m.arch.num_layers, m.kv_heads_per_rank, m.arch.head_dim
    if m.model_id not in bm.model_ids():
        bm.register_model(m.model_id, layers, heads, head_dim)
        return
    lay = bm.layout(m.model_id)
    if (lay.num_layers, lay.num_kv_heads, lay.head_dim) != (layers, heads, head_dim):
        raise ValueError(f"model {m.name!r}: block manager has model_id {m.model_id} registered "
                         f"with a different layout {lay}")
