"""What a user submits to the engine, what comes back, and the engine's per-request state."""

from __future__ import annotations

import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from enum import Enum

import torch

from muxserve.engine.stop import IncrementalText
from muxserve.types import SamplingParams

FINISH_REASONS = ("stop", "length")


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to generate.

    model: a served model name of the engine. prompt: text, or token ids used as they are.
    chat: treat a text prompt as one user message and apply the model's chat template.
    """

    model: str
    prompt: str | Seq[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    chat: bool = False


@dataclass(frozen=True)
class GenerationOutput:
    """The finished result of one request.

    token_ids: generated ids, including the EOS / stop token id that ended it (if any).
    text: decoded generated text without special tokens, cut before a stop string; the text of a
    stop token id is not included. finish_reason: "stop" (EOS, stop token id or stop string) or
    "length" (max_tokens or the model's context window).
    """

    request_id: int
    model: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finish_reason: str
    num_preemptions: int = 0  # times its KV blocks were taken back and recomputed
    first_token_s: float = 0.0  # seconds from add_request to the first generated token
    latency_s: float = 0.0  # seconds from add_request to the end


@dataclass(frozen=True)
class StepOutput:
    """Progress of one request in one engine step (for streaming).

    text is the text so far that is safe to show (no partial stop string at its end).
    """

    request_id: int
    model: str
    new_token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None = None
    output: GenerationOutput | None = None  # the final result, when finished


class SeqStatus(Enum):
    WAITING = "waiting"  # no KV blocks: needs a prefill (first time or after a preemption)
    RUNNING = "running"  # holds blocks for all tokens but the last sampled one
    FINISHED = "finished"


class Sequence:
    """Engine-side state of one request. Its id doubles as the block manager's seq_id, and
    larger ids arrived later (the scheduler preempts the largest first)."""

    def __init__(self, seq_id: int, model: str, model_id: int, prompt_ids: list[int],
                 params: SamplingParams, text: IncrementalText,
                 generator: torch.Generator | None) -> None:
        self.seq_id = seq_id
        self.model = model
        self.model_id = model_id
        self.prompt_ids = prompt_ids
        self.output_ids: list[int] = []
        self.params = params
        self.text = text
        self.generator = generator
        self.status = SeqStatus.WAITING
        self.finish_reason: str | None = None
        self.num_preemptions = 0
        self.arrival_s = time.perf_counter()
        self.first_token_s = 0.0
        self.finish_s = 0.0

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def to_output(self) -> GenerationOutput:
        assert self.finish_reason in FINISH_REASONS, self.finish_reason
        return GenerationOutput(
            request_id=self.seq_id, model=self.model, prompt_token_ids=list(self.prompt_ids),
            token_ids=list(self.output_ids), text=self.text.text,
            finish_reason=self.finish_reason, num_preemptions=self.num_preemptions,
            first_token_s=self.first_token_s - self.arrival_s,
            latency_s=self.finish_s - self.arrival_s)
