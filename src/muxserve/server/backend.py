"""What the HTTP server needs from the engine: the unit client interface.

The server is written only against `UnitBackend` (the runtime's `UnitClient` shape):
``generate`` streams `TokenEvent`s, ``abort`` frees a request's KV blocks, ``stats`` reports
gauges for /metrics, ``models`` and ``tokenizer`` let the server tokenize before admission.

Contract the server relies on: ``generate`` raises ValueError (before its first event) when the
request itself is bad, e.g. it does not fit the KV pool; a later event with finish_reason
"error" is the server's problem (a crashed worker), not the client's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from muxserve.engine.protocol import GenerateRequest, TokenEvent, UnitStats
from muxserve.engine.tokenizer import Tokenizer


class UnitBackend(Protocol):
    def generate(self, request: GenerateRequest) -> AsyncIterator[TokenEvent]: ...

    async def abort(self, req_id: str) -> None: ...

    def stats(self) -> UnitStats: ...

    def models(self) -> list[str]: ...

    def tokenizer(self, model: str) -> Tokenizer: ...


def max_context(backend: UnitBackend, model: str) -> int | None:
    """The model's context window in tokens, when the backend can tell."""
    fn = getattr(backend, "max_context", None)
    return int(fn(model)) if callable(fn) else None


def is_ready(backend: UnitBackend) -> bool:
    fn = getattr(backend, "ready", None)
    return bool(fn()) if callable(fn) else True
