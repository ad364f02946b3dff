"""OpenAI streaming chunks (server-sent events) for both endpoints."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from muxserve.server.errors import APIError
from muxserve.server.runs import Job

DONE = "data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that runs `on_close` however the stream ends -- including when the
    client disconnects before the body iterator ever started, which a generator's own
    ``finally`` would miss."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], Awaitable[None]]):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


async def _choice_events(job: Job, base: dict[str, Any], include_usage: bool,
                         choice: Callable[[int, Any], dict[str, Any]]) -> AsyncIterator[str]:
    """The part both endpoints share: one chunk per piece of text or finish, the error body if
    the stream fails, then the usage chunk (when asked) and [DONE]."""
    extra = {"usage": None} if include_usage else {}
    try:
        async for c, ev in job.stream():
            if ev.text or ev.finished:
                yield event({**base, "choices": [choice(c.index, ev)], **extra})
    except APIError as e:
        yield event(e.body())
        return
    if include_usage:
        yield event({**base, "choices": [], "usage": job.usage})
    yield DONE


async def completion_chunks(job: Job, include_usage: bool) -> AsyncIterator[str]:
    base = {"id": f"cmpl-{job.id}", "object": "text_completion", "created": job.created,
            "model": job.prep.model}

    def choice(index: int, ev: Any) -> dict[str, Any]:
        return {"index": index, "text": ev.text, "logprobs": None,
                "finish_reason": ev.finish_reason}

    async for chunk in _choice_events(job, base, include_usage, choice):
        yield chunk


async def chat_chunks(job: Job, include_usage: bool) -> AsyncIterator[str]:
    base = {"id": f"chatcmpl-{job.id}", "object": "chat.completion.chunk",
            "created": job.created, "model": job.prep.model}
    extra = {"usage": None} if include_usage else {}
    for c in job.choices:  # the role comes first, in a chunk of its own
        first = {"index": c.index, "delta": {"role": "assistant", "content": ""},
                 "logprobs": None, "finish_reason": None}
        yield event({**base, "choices": [first], **extra})

    def choice(index: int, ev: Any) -> dict[str, Any]:
        return {"index": index, "delta": {"content": ev.text} if ev.text else {},
                "logprobs": None, "finish_reason": ev.finish_reason}

    async for chunk in _choice_events(job, base, include_usage, choice):
        yield chunk
