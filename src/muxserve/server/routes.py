"""The /v1 routes: models, completions, chat completions."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from muxserve.engine.protocol import UnitStats
from muxserve.server.backend import UnitBackend
from muxserve.server.config import ServerOptions
from muxserve.server.errors import APIError
from muxserve.server.metrics import ServerMetrics
from muxserve.server.prepare import Prepared, prepare_chat, prepare_completion
from muxserve.server.runs import Job
from muxserve.server.schemas import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    ModelList,
)
from muxserve.server.sse import ClosingStreamingResponse, chat_chunks, completion_chunks

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 429, 503, 504)}


class State:
    """What the routes share: the backend (None while loading), options, metrics, and the
    per-model count of admitted choices (the bounded queue)."""

    def __init__(self, opts: ServerOptions, metrics: ServerMetrics) -> None:
        self.opts, self.metrics = opts, metrics
        self.backend: UnitBackend | None = None
        self.in_flight: Counter[str] = Counter()
        self.last_stats = UnitStats(0, 0, 0.0)
        self.load_error: str | None = None
        self.started = int(time.time())

    def ready_backend(self) -> UnitBackend:
        if self.backend is None:
            raise APIError(503, "the models are still loading; retry shortly",
                           code="not_ready", headers={"Retry-After": "5"})
        return self.backend


def build_router(state: State) -> APIRouter:
    async def check_key(request: Request) -> None:  # async: no threadpool hop per request
        key = state.opts.api_key
        if not key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip(), key):
            raise APIError(401, "Incorrect or missing API key; send 'Authorization: Bearer "
                                "<key>'", code="invalid_api_key",
                           type_="invalid_request_error")

    router = APIRouter(prefix="/v1", dependencies=[Depends(check_key)], responses=ERRORS)

    @router.get("/models", response_model=ModelList)
    async def list_models() -> dict[str, Any]:
        backend = state.ready_backend()
        return {"object": "list", "data": [{"id": m, "object": "model", "created": state.started,
                                            "owned_by": "muxserve"} for m in backend.models()]}

    @router.post("/completions", response_model=CompletionResponse)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        backend = state.ready_backend()
        prep = await _counted(state, body.model, "completions",
                              lambda: prepare_completion(body, backend, state.opts))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _serve(state, prep, request, "completions", body.stream,
                            lambda job: completion_chunks(job, include_usage), _completion_body)

    @router.post("/chat/completions", response_model=ChatCompletionResponse)
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        backend = state.ready_backend()
        prep = await _counted(state, body.model, "chat",
                              lambda: prepare_chat(body, backend, state.opts))
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _serve(state, prep, request, "chat", body.stream,
                            lambda job: chat_chunks(job, include_usage), _chat_body)

    return router


async def _counted(state: State, model: str, endpoint: str,
                  fn: Callable[[], Prepared]) -> Prepared:
    """fn() off the event loop (tokenizing a long prompt must not stall other streams); its
    APIErrors are counted."""
    try:
        return await asyncio.to_thread(fn)
    except APIError as e:
        _count(state, model, endpoint, e.status, e.type)
        raise


def _count(state: State, model: str, endpoint: str, status: int, kind: str | None) -> None:
    # Only served names become label values, so a fuzzer cannot grow the registry.
    served = state.backend.models() if state.backend is not None else []
    label = model if model in served else "_unknown"
    state.metrics.requests.labels(label, endpoint, str(status)).inc()
    if kind is not None:
        state.metrics.errors.labels(label, kind).inc()


async def _serve(state: State, prep: Prepared, request: Request, endpoint: str, stream: bool,
                 chunks: Callable[[Job], Any], body: Callable[[Job], dict[str, Any]]) -> Response:
    assert state.backend is not None
    model, k = prep.model, prep.num_choices
    if state.in_flight[model] + k > state.opts.max_queue:
        _count(state, model, endpoint, 429, "rate_limit_error")
        raise APIError(429, f"{model} has {state.in_flight[model]} requests in flight (limit "
                            f"{state.opts.max_queue}); retry later", code="queue_full",
                       headers={"Retry-After": str(state.opts.retry_after_s)})
    state.in_flight[model] += k
    state.metrics.in_flight.labels(model).inc(k)
    released = False

    async def release(status: int, kind: str | None) -> None:
        nonlocal released
        if not released:
            released = True
            state.in_flight[model] -= k
            state.metrics.in_flight.labels(model).dec(k)
            _count(state, model, endpoint, status, kind)

    job = Job(prep, state.backend, state.metrics, state.opts.request_timeout_s)
    try:
        await _until_disconnect(request, job.__aenter__())
        if not stream:
            await _until_disconnect(request, job.run_to_end())
            await job.close()
            await release(200, None)
            return JSONResponse(body(job))
    except APIError as e:
        await job.close()
        await release(e.status, e.type)
        raise
    except ConnectionAbortedError:  # nobody reads the answer; the blocks are already freed
        await job.close()
        await release(499, "client_closed")
        return Response(status_code=499)
    except Exception:
        await job.close()
        await release(500, "server_error")
        raise
    except BaseException:  # cancelled: the connection is gone
        await job.close()
        await release(499, "client_closed")
        raise

    async def on_close() -> None:
        await job.close()
        if job.error is not None:  # sent as the stream's last event
            await release(job.error.status, job.error.type)
        elif all(c.finish_reason is not None for c in job.choices):
            await release(200, None)
        else:
            await release(499, "client_closed")

    return ClosingStreamingResponse(chunks(job), on_close)


async def _until_disconnect(request: Request, work: Awaitable[Any]) -> Any:
    """Await `work`, cancelling it if the client goes away first (non-streaming requests are
    otherwise never told)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.25)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ConnectionAbortedError("client disconnected")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _completion_body(job: Job) -> dict[str, Any]:
    return {"id": f"cmpl-{job.id}", "object": "text_completion", "created": job.created,
            "model": job.prep.model, "usage": job.usage,
            "choices": [{"index": c.index, "text": "".join(c.text), "logprobs": None,
                         "finish_reason": c.finish_reason} for c in job.choices]}


def _chat_body(job: Job) -> dict[str, Any]:
    return {"id": f"chatcmpl-{job.id}", "object": "chat.completion", "created": job.created,
            "model": job.prep.model, "usage": job.usage,
            "choices": [{"index": c.index, "logprobs": None, "finish_reason": c.finish_reason,
                         "message": {"role": "assistant", "content": "".join(c.text)}}
                        for c in job.choices]}
