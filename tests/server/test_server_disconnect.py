"""A client that goes away mid-request gets its request aborted at once: its KV blocks are free
again in /metrics long before the request would have finished."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from server_helpers import LLAMA, metric, thread_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
# A long context, so one request runs for seconds unless it is aborted.
LONG = {"tiny-llama": LLAMA.replace("max_context=64", "max_context=4096")}


def blocks_used(url: str, model: str) -> tuple[float, float]:
    page = httpx.get(f"{url}/metrics").text
    return (metric(page, "muxserve_kv_blocks_used", model=model),
            metric(page, "muxserve_kv_blocks_used_total"))


def wait_for_free(url: str, model: str, timeout_s: float = 10.0) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        used, total = blocks_used(url, model)
        if used == 0 and total == 0:
            return time.monotonic()
        time.sleep(0.02)
    raise AssertionError(f"blocks still used after {timeout_s} s: {blocks_used(url, model)}")


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_frees_kv_blocks(stream: bool) -> None:
    with thread_server(LONG, num_blocks=2000, request_timeout_s=120.0) as s:
        body = {"model": "tiny-llama", "prompt": "abc" * 5, "max_tokens": 4000,
                "ignore_eos": True, "stream": stream}
        aborted0 = metric(httpx.get(f"{s.url}/metrics").text, "muxserve_requests_aborted_total",
                          model="tiny-llama", reason="client")
        with httpx.Client(base_url=s.url, timeout=30) as c:
            if stream:
                with c.stream("POST", "/v1/completions", json=body) as r:
                    assert r.status_code == 200
                    lines = r.iter_lines()
                    first = next(x for x in lines if x.startswith("data: "))
                    assert json.loads(first[6:])["choices"][0]["finish_reason"] is None
                    used, _ = blocks_used(s.url, "tiny-llama")
                    assert used > 0  # it runs and holds blocks...
                # ...and the connection is closed here, mid-stream
            else:
                with pytest.raises(httpx.ReadTimeout):
                    c.post("/v1/completions", json=body, timeout=0.3)
        gone_s = time.monotonic()
        # 4000 tokens take several seconds; the abort frees the blocks well within one
        assert wait_for_free(s.url, "tiny-llama") - gone_s < 1.5
        page = httpx.get(f"{s.url}/metrics").text
        assert metric(page, "muxserve_requests_aborted_total", model="tiny-llama",
                      reason="client") == aborted0 + 1
        assert metric(page, "muxserve_server_requests_in_flight", model="tiny-llama") == 0
