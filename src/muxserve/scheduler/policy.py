"""The scheduling policies, each a short expression over the unit's building blocks.

A *round* (one schedule() call) is a sequence of passes; a pass walks models in some order and
tries to start a job of the given phases for each. ``PolicySpec`` bundles a round with the
quota mode and the compute rules, so every policy is one line of POLICY_SPECS. The ablations
follow the original MuxServe scheduler's "roundrobin" and "fcfs" approaches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from muxserve.scheduler.api import Job, SchedulerConfig, UnitModel
from muxserve.scheduler.compute import PARTS, parts_of
from muxserve.types import Phase

PREFILL, DECODE = Phase.PREFILL, Phase.DECODE
Key = tuple[float, int]  # FCFS key of a request: (arrival_s, req_id)


class RoundContext(Protocol):
    """The primitives a round uses (implemented by UnitScheduler)."""

    model_ids: list[int]
    rr_next: dict[str, int]  # round-robin pointers (index into model_ids), by pass name
    # rotations[i] = model_ids[i:] + model_ids[:i], built once (a round-robin order per round)
    rotations: list[tuple[int, ...]]

    def try_start(self, model_id: int, phase: Phase) -> Job | None: ...

    def blocked_on_compute(self, model_id: int, phase: Phase) -> bool: ...

    def prefill_running(self) -> bool: ...

    def prefill_starved(self) -> bool: ...

    def oldest_waiting(self, model_id: int) -> Key | None: ...

    def oldest_running(self, model_id: int) -> Key | None: ...

    def ready_since_s(self, model_id: int) -> float | None: ...


def run_pass(s: RoundContext, order: Iterable[int], phases: Sequence[Phase],
             rr_key: str | None = None, strict: bool = False) -> list[Job]:
    """Try each model's job(s) in ``order``. A round-robin pass moves its pointer past the last
    model served; a strict pass stops at the first ready job that compute cannot fit (and a
    round-robin pointer then stays on that model: it is still its turn)."""
    jobs = []
    for m in order:
        for phase in phases:
            job = s.try_start(m, phase)
            if job is not None:
                jobs.append(job)
                if rr_key is not None:
                    s.rr_next[rr_key] = (s.model_ids.index(m) + 1) % len(s.model_ids)
            elif strict and s.blocked_on_compute(m, phase):
                if rr_key is not None:
                    s.rr_next[rr_key] = s.model_ids.index(m)
                return jobs
    return jobs


def rr_order(s: RoundContext, rr_key: str) -> Sequence[int]:
    return s.rotations[s.rr_next.get(rr_key, 0)]


def by_key(s: RoundContext, key: Callable[[int], Key | float | None]) -> list[int]:
    """Models that have a key, smallest first (ties: model order)."""
    keyed = [(k, i, m) for i, m in enumerate(s.model_ids) if (k := key(m)) is not None]
    return [m for *_, m in sorted(keyed)]


def adbs_round(s: RoundContext) -> list[Job]:
    """MuxServe ADBS: prefills first, round-robin (a model that cannot start is skipped); while a
    prefill waits for compute and none runs, hold back new decodes; otherwise decodes
    round-robin over models whose share fits."""
    jobs = run_pass(s, rr_order(s, "prefill"), (PREFILL,), "prefill")
    if s.prefill_starved():
        return jobs
    return jobs + run_pass(s, rr_order(s, "decode"), (DECODE,), "decode")


def round_robin_round(s: RoundContext) -> list[Job]:
    """Ablation (the original's "roundrobin"): ADBS's round with strict prefill turns: when the
    model whose turn it is cannot get compute for its prefill, no later model's prefill starts.
    Used without KV quotas (each model capped by its max_num_seqs only)."""
    jobs = run_pass(s, rr_order(s, "prefill"), (PREFILL,), "prefill", strict=True)
    if s.prefill_starved():
        return jobs
    return jobs + run_pass(s, rr_order(s, "decode"), (DECODE,), "decode")


def fcfs_round(s: RoundContext) -> list[Job]:
    """Ablation (the original's "fcfs"): one prefill at a time in the unit, for the model with
    the earliest waiting request; if it cannot get compute, nothing else starts; then decodes
    in order of each model's oldest running request, stopping at the first that does not fit."""
    jobs: list[Job] = []
    if not s.prefill_running():
        first = by_key(s, s.oldest_waiting)[:1]
        jobs = run_pass(s, first, (PREFILL,), strict=True)
        if first and not jobs and s.blocked_on_compute(first[0], PREFILL):
            return jobs
    return jobs + run_pass(s, by_key(s, s.oldest_running), (DECODE,), strict=True)


def temporal_round(s: RoundContext) -> list[Job]:
    """Temporal multiplexing: FCFS over models (the one ready longest first), prefill first
    within a model; with max_jobs=1 exactly one job runs on the whole unit."""
    return run_pass(s, by_key(s, s.ready_since_s), (PREFILL, DECODE))


@dataclass(frozen=True)
class PolicySpec:
    round: Callable[[RoundContext], list[Job]]
    quota_mode: str  # "adaptive" | "fixed" | "none" (see quota.py)
    # "model": the UnitModel's shares; "whole": 1.0; "partition": decode_share, normalised to 1
    shares: str
    one_job_per_model: bool = False  # one vLLM-style engine per model: prefill and decode alternate
    max_jobs: int | None = None  # jobs running at once on the unit
    oversubscribe: bool = True


POLICY_SPECS: dict[str, PolicySpec] = {
    "muxserve": PolicySpec(adbs_round, "adaptive", "model"),
    "round-robin": PolicySpec(round_robin_round, "none", "model"),
    "fcfs": PolicySpec(fcfs_round, "none", "model"),
    # each model alone on its slice, vLLM-like: prefill first, one job at a time
    "spatial": PolicySpec(temporal_round, "fixed", "partition", one_job_per_model=True,
                          oversubscribe=False),
    "temporal": PolicySpec(temporal_round, "none", "whole", one_job_per_model=True, max_jobs=1,
                           oversubscribe=False),
}


def job_shares(spec: PolicySpec, models: Sequence[UnitModel]) -> dict[tuple[int, Phase], float]:
    """Compute share of each (model, phase) job under a policy."""
    out: dict[tuple[int, Phase], float] = {}
    total = sum(m.decode_share for m in models)
    for m in models:
        if spec.shares == "model":
            pre, dec = m.prefill_share, m.decode_share
        elif spec.shares == "whole":
            pre = dec = 1.0
        else:  # spatial: each model keeps its own slice, both phases on it
            pre = dec = m.decode_share / max(1.0, total)
        out[(m.model_id, PREFILL)], out[(m.model_id, DECODE)] = pre, dec
    return out


def capacity_parts(spec: PolicySpec, config: SchedulerConfig,
                   shares: dict[tuple[int, Phase], float]) -> int:
    if spec.shares == "partition":
        # slices never collide: make room for all of them despite rounding up to 10% parts
        return max(PARTS, sum(parts_of(s) for (_, p), s in shares.items() if p is DECODE))
    if not spec.oversubscribe:
        return PARTS
    return round(PARTS * (1.0 + config.oversubscription))


def overload_parts(spec: PolicySpec, config: SchedulerConfig) -> int | None:
    """The overlap rule's per-job bound, or None where the ledger caps the sum instead
    (policies that do not oversubscribe, and compute_rule="sum")."""
    if not spec.oversubscribe or config.compute_rule == "sum":
        return None
    return config.overload_parts
