"""In-process backend: a `MultiModelLLM` stepped by one background thread, behind the unit
client interface (`server.backend.UnitBackend`).

The engine is not thread-safe, so the event loop never touches it: requests and aborts go to
the engine thread through a queue, and token events come back through
``loop.call_soon_threadsafe``. Stats are a snapshot the thread publishes after each step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from muxserve.engine.llm import MultiModelLLM
from muxserve.engine.protocol import GenerateRequest, ModelStats, TokenEvent, UnitStats
from muxserve.engine.request import GenerationRequest, StepOutput
from muxserve.engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class _Live:
    """A request the engine thread is running: where its events go."""

    req_id: str
    seq_id: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[TokenEvent | Exception]
    prompt_tokens: int
    sent_chars: int = 0
    completion_tokens: int = 0


class InprocBackend:
    """Serves `models` ({served name: source}) from one MultiModelLLM in this process."""

    def __init__(self, models: Mapping[str, str], dtype: str = "float32",
                 kv_pool_bytes: int | None = None, num_blocks: int | None = None,
                 block_numel: int = 8192) -> None:
        self.llm = MultiModelLLM(dict(models), dtype=dtype, kv_pool_bytes=kv_pool_bytes,
                                 num_blocks=num_blocks, block_numel=block_numel)
        self._cmds: queue.Queue[tuple[str, object]] = queue.Queue()
        self._live: dict[str, _Live] = {}
        self._by_seq: dict[int, _Live] = {}
        self._stats = self._snapshot()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="muxserve-inproc", daemon=True)
        self._thread.start()

    # ---- client interface -----------------------------------------------------------------
    def models(self) -> list[str]:
        return list(self.llm.models)

    def tokenizer(self, model: str) -> Tokenizer:
        return self.llm.models[model].loaded.tokenizer

    def max_context(self, model: str) -> int:
        return self.llm.models[model].loaded.arch.max_context

    def stats(self) -> UnitStats:
        return self._stats

    def ready(self) -> bool:
        return self._thread.is_alive()

    async def generate(self, request: GenerateRequest) -> AsyncIterator[TokenEvent]:
        """Token events of `request`; ValueError (before any event) when the engine rejects it.
        Closing the iterator early aborts the request."""
        loop = asyncio.get_running_loop()
        live = _Live(request.req_id, -1, loop, asyncio.Queue(), len(request.prompt_token_ids))
        self._cmds.put(("add", (request, live)))
        finished = False
        try:
            while True:
                item = await live.events.get()
                if isinstance(item, Exception):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            if not finished:
                self._cmds.put(("abort", request.req_id))

    async def abort(self, req_id: str) -> None:
        self._cmds.put(("abort", req_id))

    def close(self) -> None:
        self._stop.set()
        self._cmds.put(("stop", None))
        self._thread.join(timeout=10)

    # ---- engine thread --------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            busy = self.llm.has_unfinished()
            self._drain(block=not busy)
            self._stats = self._snapshot()
            if self.llm.has_unfinished():
                try:
                    outs = self.llm.step()
                except Exception as e:  # a bug in the engine: fail every live request
                    log.exception("engine step failed")
                    self._fail_all(f"engine step failed: {e}")
                    continue
                # Publish before delivering, so a client that saw its request finish also
                # sees its blocks freed in /metrics.
                self._stats = self._snapshot()
                for out in outs:
                    self._deliver(out)

    def _drain(self, block: bool) -> None:
        try:
            cmd = self._cmds.get(timeout=0.5) if block else self._cmds.get_nowait()
        except queue.Empty:
            return
        while True:
            self._handle(*cmd)
            try:
                cmd = self._cmds.get_nowait()
            except queue.Empty:
                return

    def _handle(self, kind: str, arg: object) -> None:
        if kind == "add":
            assert isinstance(arg, tuple)
            self._add(*arg)
        elif kind == "abort":
            live = self._live.pop(str(arg), None)
            if live is not None:
                del self._by_seq[live.seq_id]
                self.llm.abort(live.seq_id)

    def _add(self, request: GenerateRequest, live: _Live) -> None:
        gen = GenerationRequest(request.model, list(request.prompt_token_ids), request.params)
        try:
            live.seq_id = self.llm.add_request(gen)
        except ValueError as e:
            _put(live, e)
            return
        self._live[request.req_id] = live
        self._by_seq[live.seq_id] = live

    def _deliver(self, out: StepOutput) -> None:
        live = self._by_seq.get(out.request_id)
        if live is None:
            return
        live.completion_tokens += len(out.new_token_ids)
        text = out.output.text if out.output is not None else out.text
        piece, live.sent_chars = text[live.sent_chars:], max(live.sent_chars, len(text))
        _put(live, TokenEvent(live.req_id, tuple(out.new_token_ids), piece, out.finish_reason,
                              None, live.prompt_tokens, live.completion_tokens))
        if out.finished:
            del self._by_seq[out.request_id]
            self._live.pop(live.req_id, None)

    def _fail_all(self, message: str) -> None:
        for live in list(self._live.values()):
            self.llm.abort(live.seq_id)
            _put(live, TokenEvent(live.req_id, (), "", "error", message, live.prompt_tokens,
                                  live.completion_tokens))
        self._live.clear()
        self._by_seq.clear()

    def _snapshot(self) -> UnitStats:
        sched, blocks = self.llm.scheduler, self.llm.blocks
        per_model = tuple(
            ModelStats(m.name, waiting=len(sched.waiting[m.model_id]),
                       running=len(sched.running[m.model_id]),
                       kv_blocks_used=blocks.used_blocks(m.model_id))
            for m in self.llm.models.values())
        busy = any(s.running for s in per_model)
        return UnitStats(blocks.num_blocks, blocks.used_blocks(), 1.0 if busy else 0.0,
                         per_model)


def _put(live: _Live, item: TokenEvent | Exception) -> None:
    # RuntimeError: the loop is closed, nobody is listening any more.
    with contextlib.suppress(RuntimeError):
        live.loop.call_soon_threadsafe(live.events.put_nowait, item)
