"""Helpers for server tests: tiny random models, a real uvicorn server on a free port (in a
thread, or `muxserve serve` as a subprocess), and /metrics parsing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from muxserve.server.app import create_app
from muxserve.server.config import ServeConfig, ServerOptions
from muxserve.server.inproc import InprocBackend

# Tiny random-weight models with a 64-token context: generation costs about a millisecond a
# token, so a test can run thousands of requests.
LLAMA = ("random:smollm2-135m?num_layers=2&hidden_size=64&num_heads=4&num_kv_heads=2"
         "&intermediate_size=128&vocab_size=300&max_context=64")
GEMMA = ("random:gemma3-270m?num_layers=2&hidden_size=64&num_heads=2&num_kv_heads=1"
         "&head_dim=32&intermediate_size=128&vocab_size=300&max_context=64&sliding_window=8"
         "&sliding_window_pattern=2&query_pre_attn_scalar=32")
TINY = {"tiny-llama": LLAMA, "tiny-gemma": GEMMA}
BLOCK_NUMEL = 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Running:
    url: str
    backend: InprocBackend | None = None
    pid: int | None = None


@contextmanager
def thread_server(models: dict[str, str] | None = None, num_blocks: int = 400,
                  **opts: object) -> Iterator[Running]:
    """A real uvicorn server on 127.0.0.1 in a thread of this process, stopped on exit."""
    models = models or TINY
    backend = InprocBackend(models, num_blocks=num_blocks, block_numel=BLOCK_NUMEL)
    port = free_port()
    cfg = ServeConfig(models=models, backend="inproc",
                      server=ServerOptions(port=port, **opts))  # type: ignore[arg-type]
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, backend=backend), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield Running(f"http://127.0.0.1:{port}", backend)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive(), "server thread did not stop"


@contextmanager
def subprocess_server(args: list[str], startup_s: float = 240.0,
                      env: dict[str, str] | None = None) -> Iterator[Running]:
    """`muxserve serve ARGS --port P` as a real process; waits for /ready; kills it on exit."""
    port = free_port()
    cmd = [str(Path(sys.executable).parent / "muxserve"), "serve", *args, "--port", str(port),
           "--log-level", "warning"]
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 -- closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"muxserve serve exited {proc.returncode}:\n{log.read()}")
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "muxserve serve did not become ready"
            time.sleep(0.25)
        yield Running(url, pid=proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text page (0.0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = ",".join(sorted((m.group(2) or "{}")[1:-1].split(","))) if m.group(2) else ""
        if got == want:
            return float(m.group(3))
    return 0.0
