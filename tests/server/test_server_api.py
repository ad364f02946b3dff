"""The HTTP API on a real server (tiny random models, in-process engine): answers match the
offline engine, usage adds up, streaming ends with [DONE], n fans out, API keys, health."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from server_helpers import BLOCK_NUMEL, TINY, Running, metric, thread_server

from muxserve.engine.llm import MultiModelLLM
from muxserve.engine.request import GenerationRequest
from muxserve.types import SamplingParams

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server() -> Iterator[Running]:
    with thread_server(api_key=None) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def offline() -> MultiModelLLM:
    return MultiModelLLM(TINY, num_blocks=400, block_numel=BLOCK_NUMEL, seed=0)


def sse(text: str) -> list[dict | str]:
    out: list[dict | str] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_models_health_ready(client: httpx.Client) -> None:
    ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["tiny-llama", "tiny-gemma"]
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 200 and r.json()["models"] == ids


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gemma"])
def test_greedy_completion_matches_offline_engine(client: httpx.Client, offline: MultiModelLLM,
                                                  model: str) -> None:
    [want] = offline.generate([GenerationRequest(model, "Hello there", SamplingParams(
        max_tokens=12, temperature=0.0, ignore_eos=True))])
    body = {"model": model, "prompt": "Hello there", "max_tokens": 12, "temperature": 0,
            "ignore_eos": True}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["text"] == want.text
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["usage"] == {"prompt_tokens": len(want.prompt_token_ids), "completion_tokens": 12,
                            "total_tokens": len(want.prompt_token_ids) + 12}
    # the same request streamed: same text, usage in the last chunk, then [DONE]
    r = client.post("/v1/completions", json={**body, "stream": True,
                                             "stream_options": {"include_usage": True}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if isinstance(e, dict)]
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == want.text
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == out["usage"]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]][-1] == "length"


def test_chat_stream_and_not(client: httpx.Client, offline: MultiModelLLM) -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    [want] = offline.generate([GenerationRequest("tiny-gemma", "Hi", SamplingParams(
        max_tokens=6, temperature=0.0, ignore_eos=True), chat=True)])
    body = {"model": "tiny-gemma", "messages": msgs, "max_tokens": 6, "temperature": 0,
            "ignore_eos": True}
    out = client.post("/v1/chat/completions", json=body).json()
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"] == {"role": "assistant", "content": want.text}
    assert out["usage"]["prompt_tokens"] == len(want.prompt_token_ids)
    assert out["usage"]["completion_tokens"] == 6
    events = sse(client.post("/v1/chat/completions", json={**body, "stream": True}).text)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if isinstance(e, dict)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "usage" not in chunks[-1]  # not asked for
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == want.text and chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_n_and_prompt_lists_fan_out(client: httpx.Client) -> None:
    body = {"model": "tiny-llama", "prompt": ["ab", "cde"], "n": 2, "max_tokens": 4,
            "temperature": 0, "ignore_eos": True}
    out = client.post("/v1/completions", json=body).json()
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    texts = [c["text"] for c in out["choices"]]
    assert texts[0] == texts[1] and texts[2] == texts[3]  # greedy: n copies agree
    assert out["usage"]["completion_tokens"] == 16
    events = sse(client.post("/v1/completions", json={**body, "stream": True}).text)
    finished = [c["choices"][0]["index"] for c in events[:-1] if c["choices"][0]["finish_reason"]]
    assert sorted(finished) == [0, 1, 2, 3]


def test_token_id_prompt_stop_and_seed(client: httpx.Client) -> None:
    body = {"model": "tiny-llama", "prompt": [5, 6, 7, 8], "max_tokens": 10, "temperature": 1.0,
            "seed": 123, "ignore_eos": True}
    a = client.post("/v1/completions", json=body).json()
    b = client.post("/v1/completions", json=body).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]  # seeded sampling repeats
    # n seeded samples: the first is the n=1 answer, the others differ (seed + k)
    many = client.post("/v1/completions", json={**body, "n": 3}).json()["choices"]
    assert many[0]["text"] == a["choices"][0]["text"]
    assert len({c["text"] for c in many}) == 3
    assert a["usage"]["prompt_tokens"] == 4
    text = a["choices"][0]["text"]
    if len(text) >= 3:
        stop = text[2]
        c = client.post("/v1/completions", json={**body, "stop": [stop]}).json()
        assert c["choices"][0]["text"] == text[:text.index(stop)]
        assert c["choices"][0]["finish_reason"] == "stop"


def test_metrics_count_requests_and_free_blocks(client: httpx.Client) -> None:
    before = metric(client.get("/metrics").text, "muxserve_requests_total",
                    model="tiny-gemma", endpoint="completions", status="200")
    client.post("/v1/completions", json={"model": "tiny-gemma", "prompt": "x", "max_tokens": 3})
    page = client.get("/metrics").text
    assert metric(page, "muxserve_requests_total", model="tiny-gemma", endpoint="completions",
                  status="200") == before + 1
    assert metric(page, "muxserve_time_to_first_token_seconds_count", model="tiny-gemma") >= 1
    assert metric(page, "muxserve_kv_blocks_total") == 400
    assert metric(page, "muxserve_kv_blocks_used_total") == 0


def test_api_key_is_checked_on_v1_only() -> None:
    with thread_server(models={"m": TINY["tiny-llama"]}, api_key="sekret") as s:
        r = httpx.get(f"{s.url}/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        r = httpx.post(f"{s.url}/v1/completions", json={"model": "m", "prompt": "a"},
                       headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = httpx.get(f"{s.url}/v1/models", headers={"Authorization": "Bearer sekret"})
        assert r.status_code == 200
        assert httpx.get(f"{s.url}/health").status_code == 200
