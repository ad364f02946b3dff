"""The unit runtime (a unit process with prefill/decode worker processes per model) behind the
server's backend interface: `UnitClient` plus what the server asks besides (context windows,
readiness, diagnostics, shutdown).

The unit restarts its own dead workers. If the unit process itself dies, a watchdog thread
starts a new unit; meanwhile requests fail fast (503) and /ready says 503.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from typing import Any

import torch

from muxserve.engine.loader import load_model
from muxserve.engine.protocol import GenerateRequest, TokenEvent, UnitStats
from muxserve.engine.runtime import UnitClient, UnitConfig, UnitRuntime
from muxserve.engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class RuntimeBackend:
    def __init__(self, config: UnitConfig, start_timeout_s: float = 600.0) -> None:
        # Tokenizers and context windows are read here once (the weights are dropped), so the
        # server can tokenize and check lengths before admission.
        self._tok: dict[str, Tokenizer] = {}
        self._ctx: dict[str, int] = {}
        for spec in config.models:
            loaded = load_model(spec.source, dtype=torch.bfloat16, cache_dir=config.cache_dir)
            self._tok[spec.name], self._ctx[spec.name] = loaded.tokenizer, loaded.arch.max_context
            del loaded
        self.config, self.start_timeout_s = config, start_timeout_s
        self.runtime = UnitRuntime(config).start(timeout_s=start_timeout_s)
        self.client = UnitClient(self.runtime)
        self._last = UnitStats(0, 0, 0.0)
        self.unit_restarts = 0
        self._closing = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="muxserve-unit-watchdog",
                                          daemon=True)
        self._watchdog.start()

    def generate(self, request: GenerateRequest) -> AsyncIterator[TokenEvent]:
        return self.client.generate(request)

    async def abort(self, req_id: str) -> None:
        if not self.runtime.dead:
            await self.client.abort(req_id)

    def stats(self) -> UnitStats:
        """Blocks on a round trip to the unit (call it off the event loop); the last good
        answer when the unit does not reply."""
        try:
            self._last = self.runtime.stats(timeout_s=5.0)
        except Exception as e:  # dead or busy unit: keep serving /metrics
            log.warning("unit stats unavailable: %s", e)
        return self._last

    def models(self) -> list[str]:
        return self.client.models()

    def tokenizer(self, model: str) -> Tokenizer:
        return self._tok[model]

    def max_context(self, model: str) -> int:
        return self._ctx[model]

    def ready(self) -> bool:
        return not self.runtime.dead

    def info(self) -> dict[str, Any]:
        return self.runtime.info(timeout_s=5.0)

    def close(self) -> None:
        self._closing.set()
        self._watchdog.join(timeout=self.start_timeout_s)
        self.runtime.shutdown()

    def _watch(self, poll_s: float = 0.5) -> None:
        while not self._closing.wait(poll_s):
            if not self.runtime.dead:
                continue
            log.error("the unit process died; starting a new one")
            old = self.runtime
            try:
                runtime = UnitRuntime(self.config).start(timeout_s=self.start_timeout_s)
            except Exception as e:  # keep trying: the server stays up, not ready
                log.error("restarting the unit failed: %s", e)
                continue
            self.client, self.runtime = UnitClient(runtime), runtime
            self.unit_restarts += 1
            old.shutdown()
            if self._closing.is_set():
                runtime.shutdown()
