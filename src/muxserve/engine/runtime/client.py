"""The client side of a unit: start it in its own process, send protocol messages, get events.

    rt = UnitRuntime(UnitConfig.of({"a": "smollm2-135m", "b": "gemma3-270m"}, mode="muxserve"))
    rt.start()
    rt.submit(GenerateRequest("r1", "a", tuple(rt.tokenizer("a").encode("Hi")), params))
    for ev in rt.events(timeout_s=1.0): ...
    outs = rt.run_requests([...])          # offline: every request to its end
    rt.shutdown()

A reader thread receives everything the unit sends; TokenEvents go to the handler set with
``set_event_handler`` (UnitClient routes them to asyncio streams) or else to a queue that
``events()`` drains. If the unit process dies, every open request gets an "error" event.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch.multiprocessing as tmp

from muxserve.engine.protocol import AbortRequest, GenerateRequest, TokenEvent, UnitStats
from muxserve.engine.runtime.build import load_tokenizer
from muxserve.engine.runtime.config import UnitConfig
from muxserve.engine.runtime.messages import (
    JobRecord,
    Query,
    Reply,
    Shutdown,
    UnitFailed,
    UnitReady,
)
from muxserve.engine.runtime.results import RequestOutput, ResultAccumulator
from muxserve.engine.runtime.shares import set_worker_env
from muxserve.engine.runtime.unit import unit_main
from muxserve.engine.tokenizer import Tokenizer


class UnitDeadError(RuntimeError):
    pass


class UnitRuntime:
    def __init__(self, config: UnitConfig) -> None:
        self.config = config
        self._proc: Any = None
        self._conn: Any = None
        self._send_lock = threading.Lock()
        self._handler: Callable[[TokenEvent], None] | None = None
        self._events: queue.Queue[TokenEvent] = queue.Queue()
        self._replies: dict[int, queue.Queue[Any]] = {}
        self._qids = itertools.count()
        self._open: set[str] = set()  # submitted, not yet finished
        self._open_lock = threading.Lock()
        self._tokenizers: dict[str, Tokenizer] = {}
        self._ready: UnitReady | None = None
        self._reader: threading.Thread | None = None
        self.dead = False

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self, timeout_s: float = 300.0) -> UnitRuntime:
        """Start the unit process (it loads the models and starts its workers); returns when it
        serves. Raises RuntimeError with the unit's error if it cannot start."""
        assert self._proc is None, "start() called twice"
        set_worker_env()  # before spawning: the unit and its workers inherit it
        ctx = tmp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        # not a daemon: it has worker children of its own; shutdown() (also at exit) stops it
        self._proc = ctx.Process(target=unit_main, args=(self.config, child),
                                 name="muxserve-unit", daemon=False)
        self._proc.start()
        child.close()
        atexit.register(self.shutdown)
        if not self._conn.poll(timeout_s):
            self.shutdown()
            raise RuntimeError(f"unit did not start within {timeout_s} s")
        try:
            msg = self._conn.recv()
        except EOFError:
            msg = UnitFailed(f"unit process exited (code {self._proc.exitcode})")
        if not isinstance(msg, UnitReady):
            self.shutdown()
            raise RuntimeError(f"unit failed to start: {getattr(msg, 'error', msg)}")
        self._ready = msg
        self._reader = threading.Thread(target=self._read, name="muxserve-unit-reader",
                                        daemon=True)
        self._reader.start()
        return self

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop the unit and its workers (idempotent)."""
        if self._proc is None:
            return
        with contextlib.suppress(UnitDeadError, OSError):
            self._send(Shutdown())
        self._proc.join(timeout_s)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(timeout_s)
        self._conn.close()
        if self._reader is not None:
            self._reader.join(timeout_s)
        self._proc = None
        self.dead = True
        atexit.unregister(self.shutdown)

    def __enter__(self) -> UnitRuntime:
        return self if self._proc is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # ---- requests -----------------------------------------------------------------------------
    def set_event_handler(self, handler: Callable[[TokenEvent], None] | None) -> None:
        """Route TokenEvents to handler (called on the reader thread) instead of events()."""
        self._handler = handler

    def submit(self, req: GenerateRequest) -> None:
        """Queue a request in the unit; its events follow (a refused one gets one "error"
        event). Raises UnitDeadError if the unit is gone."""
        with self._open_lock:
            self._open.add(req.req_id)
        self._send(req)

    def abort(self, req_id: str) -> None:
        """Stop a request; it ends with an "abort" event (unknown/finished ids are ignored)."""
        self._send(AbortRequest(req_id))

    def events(self, timeout_s: float | None = 0.0) -> list[TokenEvent]:
        """Events so far; waits up to timeout_s (None: forever) for the first one."""
        out = []
        try:
            out.append(self._events.get(timeout=timeout_s) if timeout_s != 0.0
                       else self._events.get_nowait())
        except queue.Empty:
            return out
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def stats(self, timeout_s: float = 30.0) -> UnitStats:
        value = self._query("stats", timeout_s)
        assert isinstance(value, UnitStats)
        return value

    def info(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Diagnostics: unit and worker pids, shared bytes, KV blocks used, integrity."""
        value = self._query("info", timeout_s)
        assert isinstance(value, dict)
        return value

    def jobs(self, timeout_s: float = 30.0) -> list[JobRecord]:
        """Records of the jobs finished since the previous call (the unit keeps the newest
        million), for measured-vs-simulated analysis."""
        value = self._query("jobs", timeout_s)
        assert isinstance(value, list)
        return value

    def models(self) -> list[str]:
        assert self._ready is not None, "start() the unit first"
        return list(self._ready.models)

    def max_context(self, model: str) -> int:
        """The model's context window in tokens (prompt + output)."""
        assert self._ready is not None, "start() the unit first"
        if model not in self._ready.models:
            raise ValueError(f"unknown model {model!r}; this unit serves "
                             f"{', '.join(self._ready.models)}")
        return self._ready.max_context[self._ready.models.index(model)]

    def tokenizer(self, model: str) -> Tokenizer:
        """The model's tokenizer, loaded in this process from the same source (cached)."""
        if model not in self._tokenizers:
            sources = {s.name: s.source for s in self.config.models}
            if model not in sources:
                raise ValueError(f"unknown model {model!r}; this unit serves "
                                 f"{', '.join(sources)}")
            self._tokenizers[model] = load_tokenizer(sources[model], self.config.cache_dir)
        return self._tokenizers[model]

    def run_requests(self, reqs: Sequence[GenerateRequest], follow_arrivals: bool = False,
                     timeout_s: float | None = None) -> list[RequestOutput]:
        """Submit reqs (at their arrival_s offsets from now if follow_arrivals) and wait for all
        to end; outputs in input order. Uses events(): no event handler may be set."""
        assert self._handler is None, "run_requests reads events(); unset the event handler"
        ids = [r.req_id for r in reqs]
        if len(set(ids)) != len(ids):
            raise ValueError("request ids must be unique within one run_requests call")
        order = sorted(range(len(reqs)), key=lambda i: reqs[i].arrival_s if follow_arrivals
                       else 0.0)
        acc = {r.req_id: ResultAccumulator(r) for r in reqs}
        t0 = time.perf_counter()
        deadline = None if timeout_s is None else t0 + timeout_s
        nxt, done = 0, 0
        while done < len(reqs):
            now = time.perf_counter()
            while nxt < len(order) and (not follow_arrivals
                                        or reqs[order[nxt]].arrival_s <= now - t0):
                r = reqs[order[nxt]]
                acc[r.req_id].submit_s = time.perf_counter()
                self.submit(r)
                nxt += 1
            if deadline is not None and now > deadline:
                for req_id, pending in acc.items():
                    if pending.last is None and pending.submit_s:
                        self.abort(req_id)  # leave nothing running behind the error
                raise TimeoutError(f"{len(reqs) - done} of {len(reqs)} requests unfinished "
                                   f"after {timeout_s} s (aborted)")
            wait_s = 0.05 if nxt >= len(order) else max(
                0.0, min(0.05, reqs[order[nxt]].arrival_s - (now - t0)))
            for ev in self.events(timeout_s=wait_s or 0.0):
                a = acc.get(ev.req_id)
                if a is not None and a.add(ev):
                    done += 1
        return [acc[i].output() for i in ids]

    # ---- plumbing -----------------------------------------------------------------------------
    def _send(self, msg: object) -> None:
        if self.dead or self._conn is None:
            raise UnitDeadError("the unit is not running")
        with self._send_lock:
            try:
                self._conn.send(msg)
            except (BrokenPipeError, OSError) as e:
                raise UnitDeadError(f"the unit is gone: {e}") from e

    def _query(self, kind: str, timeout_s: float) -> Any:
        qid = next(self._qids)
        box: queue.Queue[Any] = queue.Queue()
        self._replies[qid] = box
        try:
            self._send(Query(qid, kind))
            value = box.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"unit did not answer {kind!r} within {timeout_s} s") from None
        finally:
            self._replies.pop(qid, None)
        if isinstance(value, Exception):
            raise value
        return value

    def _read(self) -> None:
        while True:
            try:
                msg = self._conn.recv()
            except (EOFError, OSError):
                break
            if isinstance(msg, list):  # the events of one job
                for ev in msg:
                    self._deliver(ev)
            elif isinstance(msg, TokenEvent):
                self._deliver(msg)
            elif isinstance(msg, Reply):
                box = self._replies.get(msg.query_id)
                if box is not None:
                    box.put(msg.value)
        self.dead = True
        for box in list(self._replies.values()):
            box.put(UnitDeadError("the unit process exited"))
        with self._open_lock:
            orphans, self._open = sorted(self._open), set()
        for req_id in orphans:
            self._deliver(TokenEvent(req_id, (), "", "error", "the unit process exited"),
                          track=False)

    def _deliver(self, ev: TokenEvent, track: bool = True) -> None:
        if track and ev.finished:
            with self._open_lock:
                self._open.discard(ev.req_id)
        handler = self._handler
        if handler is not None:
            handler(ev)
        else:
            self._events.put(ev)
