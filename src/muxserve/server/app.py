"""The FastAPI app: /v1 routes (routes.py), /health, /ready, /metrics, error bodies, limits.

``create_app(config, backend)`` serves an already-loaded backend (tests);
``create_app(config, load=fn)`` answers /health at once and loads the models in a thread, with
/ready and the /v1 routes saying 503 until they are loaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from muxserve.server.backend import UnitBackend, is_ready
from muxserve.server.config import ServeConfig
from muxserve.server.errors import APIError, install_handlers
from muxserve.server.metrics import ServerMetrics
from muxserve.server.routes import State, build_router

log = logging.getLogger(__name__)


def create_app(config: ServeConfig, backend: UnitBackend | None = None,
               load: Callable[[], UnitBackend] | None = None,
               on_load_error: Callable[[Exception], None] | None = None) -> FastAPI:
    """on_load_error: called (on the event loop) if `load` raises; /ready then reports the
    error."""
    assert (backend is None) != (load is None), "give a backend or a load function"
    metrics = ServerMetrics(lambda: state.last_stats)
    state = State(config.server, metrics)
    state.backend = backend

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = None
        if load is not None:
            task = asyncio.ensure_future(_load(state, load, on_load_error))
        yield
        if task is not None:
            task.cancel()
        close = getattr(state.backend, "close", None)
        if callable(close):
            await asyncio.to_thread(close)

    app = FastAPI(title="muxserve", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible multi-model server (MuxServe).")
    app.state.muxserve = state
    install_handlers(app)
    app.include_router(build_router(state))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "models still loading"}})
    async def ready() -> JSONResponse:
        b = state.backend
        if state.load_error is not None:
            return JSONResponse({"status": "failed", "error": state.load_error},
                                status_code=503)
        if b is None or not is_ready(b):
            return JSONResponse({"status": "loading" if b is None else "unavailable"},
                                status_code=503)
        return JSONResponse({"status": "ready", "models": b.models()})

    @app.get("/metrics", response_class=Response)
    async def metrics_route() -> Response:
        if state.backend is not None:  # a runtime's stats() is a round trip to the unit
            state.last_stats = await asyncio.to_thread(state.backend.stats)
            metrics.unit_restarts.set(getattr(state.backend, "unit_restarts", 0))
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/debug/info", include_in_schema=False)
    async def debug_info() -> JSONResponse:
        """The runtime's diagnostics (unit and worker pids, integrity): for tests and ops."""
        info = getattr(state.backend, "info", None)
        if not callable(info):
            return JSONResponse({"error": "no diagnostics for this backend"}, status_code=404)
        return JSONResponse(await asyncio.to_thread(info))

    app.add_middleware(BodyLimit, max_bytes=config.server.max_body_bytes)  # type: ignore[arg-type]
    return app


async def _load(state: State, load: Callable[[], UnitBackend],
                on_error: Callable[[Exception], None] | None) -> None:
    try:
        state.backend = await asyncio.to_thread(load)
        log.info("models loaded: %s", ", ".join(state.backend.models()))
    except Exception as e:
        log.error("loading the models failed: %s", e)
        state.load_error = f"{type(e).__name__}: {e}"
        if on_error is not None:
            on_error(e)


class BodyLimit:
    """413 for request bodies over `max_bytes` (by Content-Length or as they stream in), so a
    huge prompt cannot exhaust memory before validation."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise APIError(413, f"request body over {self.max_bytes} bytes")
            return msg

        await self.app(scope, limited, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp: Any = APIError(413, f"request body over {self.max_bytes} bytes").response()
        await resp(scope, receive, send)
