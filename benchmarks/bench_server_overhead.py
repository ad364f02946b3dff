"""What the HTTP layer costs: one closed batch of requests run on the unit runtime directly
(``UnitRuntime.run_requests``) and the same batch through ``muxserve serve``'s app (streamed
/v1/completions over real HTTP on 127.0.0.1, from a client in another process), alternately, on
the same warm unit.

    .venv/bin/python benchmarks/bench_server_overhead.py --requests 16 --prompt 64 --output 32

Prints generated tokens/s of each run and the HTTP/direct ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import socket
import threading
import time
from typing import Any

import httpx
import uvicorn

from muxserve.engine.protocol import GenerateRequest
from muxserve.engine.runtime import UnitClient, UnitConfig
from muxserve.server.app import create_app
from muxserve.server.config import ServeConfig, ServerOptions
from muxserve.server.runtime_backend import RuntimeBackend
from muxserve.types import SamplingParams


def prompts(backend: RuntimeBackend, model: str, n: int, length: int) -> list[list[int]]:
    tok = backend.tokenizer(model)
    out = []
    for i in range(n):
        ids = tok.encode(f"Request {i}: " + "the quick brown fox jumps " * length)
        out.append(ids[:length])
    return out


def direct(backend: RuntimeBackend, batch: list[tuple[str, list[int]]], output: int) -> float:
    params = SamplingParams(max_tokens=output, temperature=0.0, ignore_eos=True)
    reqs = [GenerateRequest(f"d{time.monotonic_ns()}-{i}", m, tuple(p), params)
            for i, (m, p) in enumerate(batch)]
    backend.runtime.set_event_handler(None)
    t0 = time.perf_counter()
    outs = backend.runtime.run_requests(reqs, timeout_s=1800)
    wall = time.perf_counter() - t0
    backend.client = UnitClient(backend.runtime)  # the server's client routes events again
    assert all(len(o.token_ids) == output for o in outs), [o.finish_reason for o in outs]
    return len(batch) * output / wall


async def over_http(url: str, batch: list[tuple[str, list[int]]], output: int) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=1800,
                                 limits=httpx.Limits(max_connections=256)) as c:
        async def one(model: str, ids: list[int]) -> int:
            body = {"model": model, "prompt": ids, "max_tokens": output, "temperature": 0,
                    "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
            usage = 0
            async with c.stream("POST", "/v1/completions", json=body) as r:
                assert r.status_code == 200, await r.aread()
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            usage = chunk["usage"]["completion_tokens"]
            return usage
        t0 = time.perf_counter()
        counts = await asyncio.gather(*(one(m, p) for m, p in batch))
        wall = time.perf_counter() - t0
    assert counts == [output] * len(batch), counts
    return len(batch) * output / wall


def _client_proc(url: str, batch: list[tuple[str, list[int]]], output: int, q: Any) -> None:
    q.put(asyncio.run(over_http(url, batch, output)))


def http_in_subprocess(url: str, batch: list[tuple[str, list[int]]], output: int) -> float:
    """The HTTP client in its own process, so it does not share the server's GIL."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_client_proc, args=(url, batch, output, q))
    p.start()
    rate = float(q.get(timeout=1800))
    p.join()
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m")
    ap.add_argument("--requests", type=int, default=16, help="per model")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--output", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    models = {m: m for m in a.models.split(",")}
    backend = RuntimeBackend(UnitConfig.of(models, mode="muxserve"))
    batch = [(m, p) for m in models for p in prompts(backend, m, a.requests, a.prompt)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ServeConfig(models=models, server=ServerOptions(port=port, max_queue=10_000))
    server = uvicorn.Server(uvicorn.Config(create_app(cfg, backend=backend), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    asyncio.run(over_http(url, batch[:2], 4))  # warm up both paths
    direct(backend, batch[:2], 4)
    rows = []
    for r in range(a.rounds):
        d = direct(backend, batch, a.output)
        h = http_in_subprocess(url, batch, a.output)
        rows.append((d, h))
        print(f"round {r}: direct {d:.1f} tok/s, http {h:.1f} tok/s, http/direct {h / d:.3f}",
              flush=True)
    d_mean = sum(x for x, _ in rows) / len(rows)
    h_mean = sum(y for _, y in rows) / len(rows)
    print(f"mean: direct {d_mean:.1f} tok/s, http {h_mean:.1f} tok/s, "
          f"http/direct {h_mean / d_mean:.3f}")
    server.should_exit = True
    thread.join()
    backend.close()


if __name__ == "__main__":
    main()
