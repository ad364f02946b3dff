"""UnitClient: asyncio access to a unit (for the HTTP server).

    client = UnitClient(UnitRuntime(config).start())
    async for ev in client.generate(GenerateRequest(...)):   # TokenEvents until finished
        ...
    await client.abort(req_id)

Events arrive on the runtime's reader thread and are handed to the waiting coroutine's loop
with ``call_soon_threadsafe``. Leaving a generate() loop early (break, cancellation, a client
disconnect) aborts the request in the unit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

from muxserve.engine.protocol import GenerateRequest, TokenEvent, UnitStats
from muxserve.engine.runtime.client import UnitRuntime
from muxserve.engine.tokenizer import Tokenizer


class UnitClient:
    def __init__(self, runtime: UnitRuntime) -> None:
        self.runtime = runtime
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue[TokenEvent]]] = {}
        self._lock = threading.Lock()
        runtime.set_event_handler(self._route)

    async def generate(self, req: GenerateRequest) -> AsyncIterator[TokenEvent]:
        """Submit req and yield its TokenEvents, the last one finished. Raises ValueError for
        a request id that is already streaming in this client."""
        q: asyncio.Queue[TokenEvent] = asyncio.Queue()
        with self._lock:
            if req.req_id in self._streams:
                raise ValueError(f"request id {req.req_id!r} is already streaming")
            self._streams[req.req_id] = (asyncio.get_running_loop(), q)
        finished = False
        try:
            self.runtime.submit(req)
            while not finished:
                ev = await q.get()
                finished = ev.finished
                yield ev
        finally:
            with self._lock:
                self._streams.pop(req.req_id, None)
            if not finished and not self.runtime.dead:
                self.runtime.abort(req.req_id)

    async def abort(self, req_id: str) -> None:
        self.runtime.abort(req_id)

    def stats(self) -> UnitStats:
        return self.runtime.stats()

    async def astats(self) -> UnitStats:
        return await asyncio.to_thread(self.runtime.stats)

    def models(self) -> list[str]:
        return self.runtime.models()

    def max_context(self, model: str) -> int:
        return self.runtime.max_context(model)

    def tokenizer(self, model: str) -> Tokenizer:
        return self.runtime.tokenizer(model)

    def _route(self, ev: TokenEvent) -> None:
        with self._lock:
            target = self._streams.get(ev.req_id)
        if target is None:
            return  # no one listens (an aborted stream's last event)
        loop, q = target
        with contextlib.suppress(RuntimeError):  # that event loop is closed
            loop.call_soon_threadsafe(q.put_nowait, ev)
