"""The unit scheduler's boundary types: what goes in (models, requests, job results), what comes out
(jobs, step events), and its frozen configuration. Pure Python: the real engine and the simulator
both drive the same ``UnitScheduler`` (``muxserve.scheduler.unit``) with these.

A *job* is one iteration of one model: one prefill batch or one decode step. The scheduler names
requests by id and counts tokens; the executor (engine or cost model) owns everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

from muxserve.config.models import ModelArch
from muxserve.types import Phase

POLICIES = ("muxserve", "spatial", "temporal", "round-robin", "fcfs")
COMPUTE_RULES = ("overlap", "sum")


@dataclass(frozen=True)
class UnitModel:
    """One LLM colocated in a unit.

    prefill_share / decode_share: fractions of the unit's compute (in (0, 1]) that this model's
    prefill and decode jobs run on (MuxServe's per-worker MPS percentages). Under the "spatial"
    policy decode_share is the model's fixed partition of the unit.
    max_num_seqs: cap on this model's concurrent sequences (the placement's batch cap).
    tp: tensor-parallel degree of the unit; KV heads are split across its ranks.
    """

    model_id: int
    name: str
    arch: ModelArch
    rate_rps: float = 1.0
    prefill_share: float = 1.0
    decode_share: float = 1.0
    max_num_seqs: int = 256
    tp: int = 1

    def __post_init__(self) -> None:
        for f in ("prefill_share", "decode_share"):
            v = getattr(self, f)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"model {self.name!r}: {f} must be in (0, 1], got {v!r}")
        if self.rate_rps < 0:
            raise ValueError(f"model {self.name!r}: rate_rps must be >= 0, got {self.rate_rps!r}")
        if self.max_num_seqs < 1:
            raise ValueError(f"model {self.name!r}: max_num_seqs must be >= 1, "
                             f"got {self.max_num_seqs!r}")
        if self.tp < 1:
            raise ValueError(f"model {self.name!r}: tp must be >= 1, got {self.tp!r}")

    @property
    def kv_heads_per_rank(self) -> int:
        # fewer KV heads than ranks: each rank holds a replica of one head
        return max(1, self.arch.num_kv_heads // self.tp)


@dataclass(frozen=True)
class Request:
    """One generation request. It finishes after ``max_output_tokens`` generated tokens (the
    prefill yields the first) or earlier when a JobResult names it."""

    req_id: int
    model_id: int
    arrival_s: float
    prompt_tokens: int
    max_output_tokens: int

    def __post_init__(self) -> None:
        if self.prompt_tokens < 1:
            raise ValueError(f"request {self.req_id}: prompt_tokens must be >= 1, "
                             f"got {self.prompt_tokens!r}")
        if self.max_output_tokens < 1:
            raise ValueError(f"request {self.req_id}: max_output_tokens must be >= 1, "
                             f"got {self.max_output_tokens!r}")


@dataclass(frozen=True)
class Job:
    """One iteration to run: one prefill batch or one decode step of one model."""

    job_id: int
    model_id: int
    phase: Phase
    req_ids: tuple[int, ...]
    # prefill: tokens computed in the batch (a recomputed request counts prompt + generated);
    # decode: batch size (one new token per request)
    num_tokens: int
    # KV tokens the job reads: decode = sum of context lengths (new token included);
    # prefill = num_tokens (each prompt attends to itself)
    context_tokens: int
    share: float  # fraction of the unit's compute the job runs on


@dataclass(frozen=True)
class JobResult:
    job_id: int
    finished_req_ids: tuple[int, ...] = ()  # stopped early (EOS/stop string); the engine sets it


@dataclass(frozen=True)
class StepEvents:
    """What update() did, for metrics.

    token_req_ids: every request that got a token from the job, first tokens included.
    preempted_req_ids: requests preempted (blocks freed, to be recomputed) since the previous
    update(); preemption happens inside schedule(), so it is reported at the next update().
    """

    first_token_req_ids: tuple[int, ...] = ()
    token_req_ids: tuple[int, ...] = ()
    finished_req_ids: tuple[int, ...] = ()
    preempted_req_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class SchedulerConfig:
    """How a unit schedules. Frozen: build a new one to change it.

    policy: "muxserve" (ADBS), "spatial", "temporal", "round-robin" or "fcfs"
        (see docs/kvcache-scheduler.md).
    prefill_token_cap: a prefill batch is filled FCFS while its tokens stay <= this (a single
        request longer than the cap still runs, alone).
    compute_rule: how oversubscribing policies (muxserve, round-robin, fcfs) admit a job's
        compute parts (10% each; see compute.py). "overlap" (default, the original MuxServe's
        rule): a new job may share at most ``overload_parts`` parts with running jobs, and no
        part serves more than two jobs; the total is not capped otherwise. "sum": running
        jobs' shares may sum to at most 1 + ``oversubscription`` (this package's earlier rule).
    overload_parts: the overlap rule's bound per new job (2 = the original's
        ``overload_threshold: 2`` in all of the paper's ChatLMSYS configs).
    oversubscription: the "sum" rule's bound (compute counted in parts of 10%).
    quota_adapt_interval_s: how often ADBS moves KV quota between models.
    avg_seq_tokens: average sequence length (prompt + output) used to turn a model's KV block
        quota into a cap on its concurrent sequences (416 = the original's ShareGPT default; set
        it from the workload when known, as the original does).
    adapt_util_threshold / adapt_donate_target / adapt_queue_factor: ADBS adaptation constants
        (0.9, 0.95, 1.1 in MuxServe).
    integrity_checks: run check_integrity() whenever the unit has no running job (tests and
        debugging; it costs O(pool blocks) each time).
    """

    policy: str = "muxserve"
    prefill_token_cap: int = 2048
    compute_rule: str = "overlap"
    overload_parts: int = 2
    oversubscription: float = 0.2
    quota_adapt_interval_s: float = 8.0
    avg_seq_tokens: int = 416
    adapt_util_threshold: float = 0.9
    adapt_donate_target: float = 0.95
    adapt_queue_factor: float = 1.1
    integrity_checks: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown scheduling policy {self.policy!r}; valid: "
                             f"{', '.join(POLICIES)}")
        if self.prefill_token_cap < 1:
            raise ValueError(f"prefill_token_cap must be >= 1, got {self.prefill_token_cap!r}")
        if self.compute_rule not in COMPUTE_RULES:
            raise ValueError(f"unknown compute_rule {self.compute_rule!r}; valid: "
                             f"{', '.join(COMPUTE_RULES)}")
        if not 0 <= self.overload_parts <= 10:
            raise ValueError(f"overload_parts must be in [0, 10], got {self.overload_parts!r}")
        if not 0.0 <= self.oversubscription <= 1.0:
            raise ValueError(f"oversubscription must be in [0, 1], got {self.oversubscription!r}")
        if self.quota_adapt_interval_s <= 0:
            raise ValueError(f"quota_adapt_interval_s must be > 0, "
                             f"got {self.quota_adapt_interval_s!r}")
        if self.avg_seq_tokens < 1:
            raise ValueError(f"avg_seq_tokens must be >= 1, got {self.avg_seq_tokens!r}")


DEFAULT_SCHEDULER_CONFIG = SchedulerConfig()
