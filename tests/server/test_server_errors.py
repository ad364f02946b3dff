"""Bad input gets an OpenAI-style 4xx naming the problem, never a 5xx; overload gets 429."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from server_helpers import TINY, Running, metric, thread_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

M = "tiny-llama"
CASES = [  # (endpoint, raw body, status, words the message must contain)
    ("completions", '{"model": "nope", "prompt": "a"}', 404, ["nope", "tiny-llama", "tiny-gemma"]),
    ("completions", '{"model": "tiny-llama", "prompt": ', 400, ["JSON"]),
    ("completions", "[1, 2]", 400, ["body"]),
    ("completions", '{"prompt": "a"}', 400, ["model"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "max_tokens": "lots"}', 400,
     ["max_tokens"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "max_tokens": 0}', 400,
     ["max_tokens"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "temperature": 7}', 400,
     ["temperature"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "top_p": 0}', 400, ["top_p"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "stop": [""]}', 400, ["stop"]),
    ("completions", '{"model": "tiny-llama", "prompt": ""}', 400, ["empty"]),
    ("completions", '{"model": "tiny-llama", "prompt": [99999]}', 400, ["99999"]),
    ("completions", '{"model": "tiny-llama", "prompt": "' + "x" * 200 + '"}', 400,
     ["context length", "64"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "max_tokens": 500}', 400,
     ["context length"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "n": 100}', 400, ["n"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "presence_penalty": 1}', 400,
     ["presence_penalty"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "seed": 1e30}', 400, ["seed"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "logprobs": 2}', 400, ["logprobs"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "echo": true}', 400, ["echo"]),
    ("completions", '{"model": "tiny-llama", "prompt": "a", "best_of": 3}', 400, ["best_of"]),
    ("chat/completions", '{"model": "tiny-llama", "messages": []}', 400, ["messages"]),
    ("chat/completions", '{"model": "tiny-llama", "messages": [{"role": "robot"}]}', 400,
     ["role"]),
    ("chat/completions", '{"model": "tiny-llama", "messages": "hi"}', 400, ["messages"]),
    ("chat/completions", '{"model": "tiny-llama", "messages": [{"role": "user", "content": 5}]}',
     400, ["content"]),
]


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with thread_server(max_queue=4, request_timeout_s=30.0) as s:
        yield s


@pytest.mark.parametrize(("endpoint", "body", "status", "words"), CASES)
def test_bad_input_is_an_openai_4xx(server: Running, endpoint: str, body: str, status: int,
                                    words: list[str]) -> None:
    r = httpx.post(f"{server.url}/v1/{endpoint}", content=body,
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    for w in words:
        assert w in err["message"], (w, err)


def test_unknown_route_and_method_are_openai_errors(server: Running) -> None:
    r = httpx.get(f"{server.url}/v1/nothing")
    assert r.status_code == 404 and "message" in r.json()["error"]
    r = httpx.get(f"{server.url}/v1/completions")
    assert r.status_code == 405 and "message" in r.json()["error"]


def test_huge_body_is_413_not_memory(server: Running) -> None:
    body = b'{"model": "tiny-llama", "prompt": "' + b"a" * (5 * 2**20) + b'"}'
    r = httpx.post(f"{server.url}/v1/completions", content=body,
                   headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "bytes" in r.json()["error"]["message"]


def test_past_the_queue_bound_429_with_retry_after(server: Running) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as c:
            body = {"model": M, "prompt": "a", "max_tokens": 40, "ignore_eos": True}
            return await asyncio.gather(*(c.post("/v1/completions", json=body)
                                          for _ in range(12)))

    rs = asyncio.run(burst())
    codes = sorted(r.status_code for r in rs)
    assert set(codes) <= {200, 429} and codes.count(200) >= 4 and 429 in codes, codes
    limited = next(r for r in rs if r.status_code == 429)
    assert limited.headers["Retry-After"] == "1"
    assert limited.json()["error"]["type"] == "rate_limit_error"
    # the bound is per model: the other model is not affected by the burst
    ok = httpx.post(f"{server.url}/v1/completions", json={"model": "tiny-gemma", "prompt": "a"})
    assert ok.status_code == 200


def test_server_side_timeout() -> None:
    long = {M: TINY[M].replace("max_context=64", "max_context=4096")}
    with thread_server(long, num_blocks=2000, request_timeout_s=0.5) as s:
        body = {"model": M, "prompt": "a", "max_tokens": 4000, "ignore_eos": True}
        t0 = time.monotonic()
        r = httpx.post(f"{s.url}/v1/completions", json=body, timeout=30)
        assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        assert time.monotonic() - t0 < 3
        assert s.backend is not None
        deadline = time.monotonic() + 5
        while s.backend.stats().kv_blocks_used:
            assert time.monotonic() < deadline, "timed-out request kept its blocks"
            time.sleep(0.02)


def test_request_the_pool_cannot_hold_is_400_not_5xx() -> None:
    with thread_server(num_blocks=4) as s:  # 4 blocks: a few tokens of one model at most
        body = {"model": M, "prompt": "a" * 40, "max_tokens": 20}
        r = httpx.post(f"{s.url}/v1/completions", json=body, timeout=30)
        assert r.status_code == 400 and "KV blocks" in r.json()["error"]["message"]
        r = httpx.post(f"{s.url}/v1/completions", json={**body, "stream": True}, timeout=30)
        assert r.status_code == 400  # the stream had not started: a plain error response


def test_stream_past_the_deadline_ends_with_an_error_event() -> None:
    long = {M: TINY[M].replace("max_context=64", "max_context=4096")}
    with thread_server(long, num_blocks=2000, request_timeout_s=0.5) as s:
        body = {"model": M, "prompt": "abc", "max_tokens": 4000, "ignore_eos": True,
                "stream": True}
        r = httpx.post(f"{s.url}/v1/completions", json=body, timeout=30)
        assert r.status_code == 200
        last = [x for x in r.text.splitlines() if x.startswith("data: ")][-1]
        assert json.loads(last[6:])["error"]["code"] == "timeout"
        page = httpx.get(f"{s.url}/metrics").text  # the outcome, not the HTTP status, counts
        assert metric(page, "muxserve_requests_total", model=M, endpoint="completions",
                      status="504") == 1
        assert metric(page, "muxserve_requests_aborted_total", model=M, reason="timeout") == 1
        assert s.backend is not None
        deadline = time.monotonic() + 5
        while s.backend.stats().kv_blocks_used:
            assert time.monotonic() < deadline, "timed-out request kept its blocks"
            time.sleep(0.02)
