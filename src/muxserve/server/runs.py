"""Running the choices of one HTTP request on the backend.

A `Job` owns the request's choices (prompts x n): it starts them, merges their token events in
arrival order, enforces the server-side deadline, records metrics, and -- whatever way it ends
(finished, client gone, timeout, error) -- aborts every unfinished choice so the engine frees
its KV blocks at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

from muxserve.engine.protocol import GenerateRequest, TokenEvent
from muxserve.server.backend import UnitBackend
from muxserve.server.errors import APIError
from muxserve.server.metrics import ServerMetrics
from muxserve.server.prepare import Prepared
from muxserve.types import SamplingParams

log = logging.getLogger(__name__)
_ids = itertools.count()


@dataclass
class Choice:
    index: int
    req_id: str
    prompt_tokens: int
    events: AsyncIterator[TokenEvent]
    first: TokenEvent | None = None  # primed before the response starts
    text: list[str] = field(default_factory=list)
    completion_tokens: int = 0
    finish_reason: str | None = None
    first_token_s: float = 0.0


class Job:
    """One request's choices. Use as ``async with Job(...) as job:`` then ``job.stream()``."""

    def __init__(self, prep: Prepared, backend: UnitBackend, metrics: ServerMetrics,
                 timeout_s: float) -> None:
        self.prep, self.backend, self.metrics = prep, backend, metrics
        self.id = f"{uuid.uuid4().hex[:16]}{next(_ids)}"
        self.created = int(time.time())
        self.start_s = time.perf_counter()
        self.deadline_s = self.start_s + timeout_s
        self.choices: list[Choice] = []
        self.error: APIError | None = None  # what ended the job early (timeout, backend)
        self._closed = False

    async def __aenter__(self) -> Job:
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _start(self) -> None:
        """Submit every choice and wait for each one's first event (so a request the backend
        rejects becomes a 400 before any byte of the response is sent)."""
        for p, (prompt, params) in enumerate(zip(self.prep.prompts, self.prep.params,
                                                strict=True)):
            for k in range(self.prep.n):
                index = p * self.prep.n + k
                req_id = f"{self.id}-{index}"
                events = aiter(self.backend.generate(GenerateRequest(
                    req_id, self.prep.model, prompt, _nth(params, k), arrival_s=self.start_s)))
                self.choices.append(Choice(index, req_id, len(prompt), events))
        for c in self.choices:
            try:
                c.first = await self._next(c)
            except ValueError as e:
                raise APIError(400, str(e), code="invalid_value") from e
            except APIError:
                raise
            except StopAsyncIteration as e:
                raise APIError(503, "the backend ended the request without output") from e
            except Exception as e:  # the unit is gone (UnitDeadError) or similar
                raise APIError(503, f"the model is unavailable: {e}", code="backend_error",
                               headers={"Retry-After": "5"}) from e
            if _rejected(c.first):
                raise APIError(400, c.first.error or "request rejected", code="invalid_value")

    async def _next(self, c: Choice) -> TokenEvent:
        left = self.deadline_s - time.perf_counter()
        try:
            async with asyncio.timeout(max(left, 0.0)):  # no task per event, unlike wait_for
                ev = await anext(c.events)
        except TimeoutError:
            self.error = APIError(504, "the request timed out on the server", code="timeout")
            raise self.error from None
        self._record(c, ev)
        return ev

    def _record(self, c: Choice, ev: TokenEvent) -> None:
        now = time.perf_counter()
        if ev.token_ids and not c.first_token_s:
            c.first_token_s = now
            self.metrics.ttft.labels(self.prep.model).observe(now - self.start_s)
        c.completion_tokens = ev.completion_tokens or c.completion_tokens + len(ev.token_ids)
        c.prompt_tokens = ev.prompt_tokens or c.prompt_tokens
        c.text.append(ev.text)
        if ev.finished:
            c.finish_reason = ev.finish_reason
            m = self.prep.model
            self.metrics.latency.labels(m).observe(now - self.start_s)
            if c.completion_tokens > 1:
                self.metrics.tpot.labels(m).observe(
                    (now - c.first_token_s) / (c.completion_tokens - 1))
            self.metrics.generation_tokens.labels(m).inc(c.completion_tokens)
            self.metrics.prompt_tokens.labels(m).inc(c.prompt_tokens)

    async def stream(self) -> AsyncIterator[tuple[Choice, TokenEvent]]:
        """(choice, event) in arrival order, starting with the primed first events; raises
        APIError(504) at the deadline and APIError(503) when the backend fails a choice."""
        for c in self.choices:
            assert c.first is not None
            yield c, c.first
            self._raise_if_error(c.first)
        live = [c for c in self.choices if c.finish_reason is None]
        if len(live) == 1:  # the common case: no task per event
            c = live[0]
            while c.finish_reason is None:
                ev = await self._next(c)
                yield c, ev
                self._raise_if_error(ev)
            return
        pending: dict[asyncio.Task[TokenEvent], Choice] = {}
        try:
            for c in live:
                pending[asyncio.ensure_future(self._next(c))] = c
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    c = pending.pop(task)
                    ev = task.result()
                    yield c, ev
                    self._raise_if_error(ev)
                    if not ev.finished:
                        pending[asyncio.ensure_future(self._next(c))] = c
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def _raise_if_error(self, ev: TokenEvent) -> None:
        if ev.finish_reason == "error":
            self.error = APIError(503, f"the model failed this request: "
                                       f"{ev.error or 'unknown error'}", code="backend_error")
            raise self.error

    async def run_to_end(self) -> None:
        async for _ in self.stream():
            pass

    async def close(self) -> None:
        """Abort every unfinished choice (client gone, timeout, error) and close iterators.
        Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.error is not None:
            reason = "timeout" if self.error.status == 504 else "error"
        else:
            reason = "timeout" if time.perf_counter() >= self.deadline_s else "client"
        for c in self.choices:
            if c.finish_reason is None:
                self.metrics.aborted.labels(self.prep.model, reason).inc()
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.backend.abort(c.req_id))
            aclose = getattr(c.events, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(BaseException):
                    await aclose()

    @property
    def usage(self) -> dict[str, int]:
        prompt = sum(c.prompt_tokens for c in self.choices[::self.prep.n])
        completion = sum(c.completion_tokens for c in self.choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}


# An error as a request's first event, with no token, is the unit refusing it -- unless the
# message says a worker or the unit failed while running it.
_FAILURE_WORDS = ("died", "failed", "exited", "gone", "restarted")


def _rejected(ev: TokenEvent) -> bool:
    return (ev.finish_reason == "error" and not ev.token_ids and not ev.completion_tokens
            and not any(w in (ev.error or "") for w in _FAILURE_WORDS))


def _nth(params: SamplingParams, k: int) -> SamplingParams:
    """The k-th of n samples: a seeded request gets seed + k, so its n choices differ but the
    first one equals the same request with n=1."""
    if k == 0 or params.seed is None:
        return params
    return replace(params, seed=(params.seed + k) % 2**63)


