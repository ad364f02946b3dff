"""The scheduling policies, each a short expression over the unit's building blocks.

A *round* (one schedule() call) is a sequence of passes; a pass walks models in some order and
tries to start a job of the given phases for each. ``PolicySpec`` bundles a round with the
quota mode and the compute rules, so every policy is one line of POLICY_SPECS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from muxserve.scheduler.api import Job, SchedulerConfig, UnitModel
from muxserve.scheduler.compute import PARTS, parts_of
from muxserve.types import Phase

PREFILL, DECODE = Phase.PREFILL, Phase.DECODE


class RoundContext(Protocol):
    """What a round may use (implemented by UnitScheduler)."""

    def run_pass(self, order: Iterable[int], phases: Sequence[Phase],
                 rr_key: str | None) -> list[Job]: ...

    def rr_order(self, rr_key: str) -> list[int]: ...

    def fcfs_order(self) -> list[int]: ...

    def prefill_starved(self) -> bool: ...


def adbs_round(s: RoundContext) -> list[Job]:
    """MuxServe ADBS: prefills first, round-robin; while a prefill waits for compute and none runs,
    hold back new decodes; otherwise decodes round-robin over models whose share fits."""
    jobs = s.run_pass(s.rr_order("prefill"), (PREFILL,), "prefill")
    if s.prefill_starved():
        return jobs
    return jobs + s.run_pass(s.rr_order("decode"), (DECODE,), "decode")


def round_robin_round(s: RoundContext) -> list[Job]:
    """Ablation: plain round-robin over models, each taking a prefill (if it has one) then a
    decode; no prefill priority across models, no hold-back."""
    return s.run_pass(s.rr_order("model"), (PREFILL, DECODE), "model")


def fcfs_round(s: RoundContext) -> list[Job]:
    """Ablation / temporal: FCFS over models (the one ready longest first), prefill first."""
    return s.run_pass(s.fcfs_order(), (PREFILL, DECODE), None)


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
    "round-robin": PolicySpec(round_robin_round, "fixed", "model"),
    "fcfs": PolicySpec(fcfs_round, "fixed", "model"),
    "spatial": PolicySpec(round_robin_round, "fixed", "partition", one_job_per_model=True,
                          oversubscribe=False),
    "temporal": PolicySpec(fcfs_round, "none", "whole", one_job_per_model=True, max_jobs=1,
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
