"""schemathesis against the server's own OpenAPI schema: over 1,000 generated requests (valid
and schema-violating bodies), never a 5xx, and the server still answers correctly afterwards."""

from __future__ import annotations

import httpx
import pytest
from fuzz_helpers import fuzz_server
from server_helpers import TINY, metric, thread_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

POST_EXAMPLES = 270  # per POST operation and generation mode: 2 x 2 x 270 = 1,080 requests


def test_fuzz_never_5xx_and_server_still_correct() -> None:
    with thread_server(max_queue=16, request_timeout_s=30.0) as s:
        golden = {"model": "tiny-llama", "prompt": "stable", "max_tokens": 8, "temperature": 0,
                  "ignore_eos": True}
        before = httpx.post(f"{s.url}/v1/completions", json=golden, timeout=30).json()
        codes, failures = fuzz_server(s.url, list(TINY), POST_EXAMPLES)
        assert not failures, failures[:5]
        assert sum(codes.values()) >= 1000, codes
        assert all(code < 500 for code in codes), codes
        assert codes[200] >= 50 and codes[400] >= 100, codes  # both paths were exercised

        after = httpx.post(f"{s.url}/v1/completions", json=golden, timeout=30).json()
        assert after["choices"] == before["choices"]
        page = httpx.get(f"{s.url}/metrics").text
        assert metric(page, "muxserve_kv_blocks_used_total") == 0
        for model in TINY:
            assert metric(page, "muxserve_server_requests_in_flight", model=model) == 0
