"""A tiny OpenAI-compatible server with known timings, to test and demo the load generator.

It streams ``max_tokens`` one-word chunks: the first after ``first_token_delay_s``, each next
after ``token_delay_s``, then a usage chunk (when asked) and ``[DONE]``. Models in
``reject_models`` get 429 with Retry-After; models in ``drop_models`` lose the connection after
the first token. It is a real HTTP server (FastAPI + uvicorn on 127.0.0.1), not a mock.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass(frozen=True)
class StubConfig:
    first_token_delay_s: float = 0.05
    token_delay_s: float = 0.01
    reject_models: frozenset[str] = frozenset()  # answered 429
    drop_models: frozenset[str] = frozenset()  # connection dropped after the first token
    served: tuple[str, ...] = ()  # the models /v1/models lists (empty: any name is served)
    api_key: str | None = None  # when set, every route needs "Authorization: Bearer <key>"
    counts: Counter[str] = field(default_factory=Counter)  # requests received per model


def _chunk(model: str, text: str, usage: dict[str, int] | None = None, chat: bool = False
           ) -> str:
    choice: dict[str, Any] = ({"index": 0, "delta": {"content": text}, "finish_reason": None}
                              if chat else {"index": 0, "text": text, "finish_reason": None})
    msg: dict[str, Any] = {"id": "cmpl-stub", "model": model,
                           "object": "chat.completion.chunk" if chat else "text_completion",
                           "choices": [] if usage else [choice]}
    if usage:
        msg["usage"] = usage
    return f"data: {json.dumps(msg)}\n\n"


def make_app(cfg: StubConfig) -> FastAPI:
    app = FastAPI()

    async def check_key(request: Request, call_next: Any) -> Any:
        if request.headers.get("authorization") != f"Bearer {cfg.api_key}":
            return JSONResponse({"error": {"message": "bad api key",
                                           "type": "authentication_error"}}, status_code=401)
        return await call_next(request)

    if cfg.api_key:
        # only then: the middleware wrapper would turn drop_models' cut into a clean end
        app.middleware("http")(check_key)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": m, "object": "model"} for m in cfg.served]}

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> JSONResponse | StreamingResponse:
        return await answer(await request.json(), chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> JSONResponse | StreamingResponse:
        return await answer(await request.json(), chat=True)

    async def answer(body: dict[str, Any], chat: bool) -> JSONResponse | StreamingResponse:
        model, n = str(body.get("model")), int(body.get("max_tokens") or 16)
        cfg.counts[model] += 1
        if cfg.served and model not in cfg.served:
            return JSONResponse({"error": {"message": f"model {model!r} not found",
                                           "type": "invalid_request_error"}}, status_code=404)
        if model in cfg.reject_models:
            return JSONResponse({"error": {"message": "queue full", "type": "rate_limit"}},
                                status_code=429, headers={"Retry-After": "1"})
        prompt = (" ".join(str(m.get("content", "")) for m in body.get("messages") or ())
                  if chat else str(body.get("prompt", "")))
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": n}
        usage["total_tokens"] = usage["prompt_tokens"] + n
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        async def events() -> AsyncIterator[str]:
            await asyncio.sleep(cfg.first_token_delay_s)
            yield _chunk(model, " tok", chat=chat)
            if model in cfg.drop_models:
                raise RuntimeError("stub: dropping the connection on purpose")
            for _ in range(n - 1):
                await asyncio.sleep(cfg.token_delay_s)
                yield _chunk(model, " tok", chat=chat)
            if with_usage:
                yield _chunk(model, "", usage, chat)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StubServer:
    """``with StubServer(cfg) as url:`` runs uvicorn in a thread until the block ends."""

    def __init__(self, cfg: StubConfig, port: int | None = None) -> None:
        import uvicorn

        self.cfg = cfg
        self.port = port or free_port()
        config = uvicorn.Config(make_app(cfg), host="127.0.0.1", port=self.port,
                                log_level="critical", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10.0
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"stub server did not start on port {self.port}")
            time.sleep(0.01)
        return self.url

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5.0)
