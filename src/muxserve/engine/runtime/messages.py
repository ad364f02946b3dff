"""Messages inside a unit: unit process <-> workers, and the client <-> unit control channel.

Only plain values (ints, floats, lists/tuples, strings) and the protocol dataclasses cross a
process boundary; the unit's scheduler and block manager never leave the unit process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from muxserve.engine.runtime.shares import ShareGrant

# ---- unit -> worker -> unit -----------------------------------------------------------------


@dataclass(frozen=True)
class SeqWork:
    """One sequence of a job. token_ids: the NEW tokens (prompt + recomputed output for a
    prefill, the last token for a decode); start_pos: tokens already in its KV blocks;
    block_table: [token_block][layer * kv_heads + head] -> block id of the unit's pool.
    seed: this step's sampling seed (None: the worker's own generator)."""

    token_ids: list[int]
    start_pos: int
    block_table: list[list[int]]
    temperature: float
    top_p: float
    top_k: int
    seed: int | None


@dataclass(frozen=True)
class JobMsg:
    job_id: int
    seqs: tuple[SeqWork, ...]
    grant: ShareGrant


@dataclass(frozen=True)
class JobDone:
    job_id: int
    token_ids: tuple[int, ...]  # one sampled token per sequence, in job order
    compute_s: float  # forward + sampling time inside the worker


@dataclass(frozen=True)
class JobFailed:
    """The job raised inside the worker (the worker lives on)."""

    job_id: int
    error: str


@dataclass(frozen=True)
class WorkerReady:
    pid: int


# ---- client <-> unit (besides GenerateRequest / AbortRequest / TokenEvent / UnitStats) ---------


@dataclass(frozen=True)
class Query:
    """kind: "stats" (-> UnitStats), "info" (-> dict: pids, memory, integrity; for tests and
    diagnostics), "jobs" (-> list[JobRecord] since the previous "jobs" query)."""

    query_id: int
    kind: str


@dataclass(frozen=True)
class Reply:
    query_id: int
    value: Any


@dataclass(frozen=True)
class UnitReady:
    models: tuple[str, ...]
    sources: tuple[str, ...]
    max_context: tuple[int, ...]  # context window of each model, in tokens
    pid: int


@dataclass(frozen=True)
class JobRecord:
    """One finished job, for measured-vs-simulated analysis (times: seconds since unit start).
    compute_s is the worker's forward + sampling time; end_s - start_s adds the messaging."""

    model: str
    phase: str  # "prefill" | "decode"
    batch: int  # requests in the job
    num_tokens: int  # the scheduler's Job.num_tokens
    context_tokens: int
    share: float
    cores: tuple[int, ...]
    start_s: float
    end_s: float
    compute_s: float


@dataclass(frozen=True)
class UnitFailed:
    """The unit could not start (bad model source, ...)."""

    error: str


@dataclass(frozen=True)
class Shutdown:
    pass


def step_seed(seed: int, step: int) -> int:
    """The seed of a seeded request's draw number ``step``. Prefill and decode of one request
    run in different processes, so a request's generator cannot carry state between its draws;
    a seed per step keeps its tokens reproducible whichever worker draws them."""
    return (seed * 1_000_003 + step) % (2**63 - 1)
