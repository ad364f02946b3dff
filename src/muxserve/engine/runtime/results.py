"""What the offline helper returns: one RequestOutput per request, built from its events."""

from __future__ import annotations

import time
from dataclasses import dataclass

from muxserve.engine.protocol import GenerateRequest, TokenEvent


@dataclass(frozen=True)
class RequestOutput:
    """A finished request, as seen by the client (times from its submission, in seconds)."""

    req_id: str
    model: str
    prompt_tokens: int
    token_ids: tuple[int, ...]
    text: str
    finish_reason: str  # "stop" | "length" | "abort" | "error"
    error: str | None
    submit_s: float  # perf_counter() at submission
    ttft_s: float | None  # first token (None if none came)
    latency_s: float


class ResultAccumulator:
    """Accumulates one request's events into a RequestOutput."""

    def __init__(self, req: GenerateRequest) -> None:
        self.req = req
        self.tokens: list[int] = []
        self.text = ""
        self.submit_s = 0.0
        self.first_s: float | None = None
        self.end_s = 0.0
        self.last: TokenEvent | None = None

    def add(self, ev: TokenEvent) -> bool:
        now = time.perf_counter()
        if ev.token_ids and self.first_s is None:
            self.first_s = now
        self.tokens.extend(ev.token_ids)
        self.text += ev.text
        if ev.finished:
            self.end_s, self.last = now, ev
        return ev.finished

    def output(self) -> RequestOutput:
        ev = self.last
        assert ev is not None and ev.finish_reason is not None
        return RequestOutput(
            self.req.req_id, self.req.model, len(self.req.prompt_token_ids), tuple(self.tokens),
            self.text, ev.finish_reason, ev.error, self.submit_s,
            None if self.first_s is None else self.first_s - self.submit_s,
            self.end_s - self.submit_s)
