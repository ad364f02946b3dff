"""Messages between a unit and the rest of the system.

A unit (its scheduler, workers, KV pool) talks to the outside only through these frozen,
picklable values: requests in, token events and stats out. Nothing else crosses the boundary,
so a unit can run in another process, or as a Ray actor on another node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from muxserve.types import SamplingParams


@dataclass(frozen=True)
class GenerateRequest:
    """One completion request for one served model. prompt_token_ids are already tokenized."""

    req_id: str
    model: str
    prompt_token_ids: tuple[int, ...]
    params: SamplingParams
    arrival_s: float = 0.0


@dataclass(frozen=True)
class AbortRequest:
    req_id: str


@dataclass(frozen=True)
class TokenEvent:
    """New output of one request since its previous event.

    text is the newly decoded text (stop strings already cut); finish_reason is None while the
    request runs, then "stop" | "length" | "abort" | "error" (with error set to a message).
    """

    req_id: str
    token_ids: tuple[int, ...]
    text: str
    finish_reason: str | None = None
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class ModelStats:
    """Per-model gauges a unit reports (for /metrics and the planner's feedback)."""

    model: str
    waiting: int = 0
    running: int = 0
    kv_blocks_used: int = 0
    prefill_share: float = 0.0
    decode_share: float = 0.0
    worker_restarts: int = 0


@dataclass(frozen=True)
class UnitStats:
    kv_blocks_total: int
    kv_blocks_used: int
    compute_share_in_use: float
    models: tuple[ModelStats, ...] = field(default_factory=tuple)
