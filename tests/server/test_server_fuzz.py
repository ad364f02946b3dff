"""schemathesis against the server's own OpenAPI schema: over 1,000 generated requests (valid
and schema-violating bodies), never a 5xx, and the server still answers correctly afterwards."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from server_helpers import TINY, metric, thread_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

POST_EXAMPLES = 270  # per POST operation and generation mode: 2 x 2 x 270 = 1,080 requests
GET_EXAMPLES = 10


def test_fuzz_never_5xx_and_server_still_correct() -> None:
    with thread_server(max_queue=16, request_timeout_s=30.0) as s:
        golden = {"model": "tiny-llama", "prompt": "stable", "max_tokens": 8, "temperature": 0,
                  "ignore_eos": True}
        before = httpx.post(f"{s.url}/v1/completions", json=golden, timeout=30).json()
        schema = schemathesis.openapi.from_url(f"{s.url}/openapi.json")
        codes: Counter[int] = Counter()
        failures: list[str] = []
        for op in (r.ok() for r in schema.get_all_operations()):
            modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] \
                if op.method == "post" else [GenerationMode.POSITIVE]
            for mode in modes:
                _fuzz(op, mode, s.url, codes, failures)
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


def _fuzz(op: schemathesis.APIOperation, mode: GenerationMode, url: str,
          codes: Counter[int], failures: list[str]) -> None:
    examples = POST_EXAMPLES if op.method == "post" else GET_EXAMPLES

    # Most bodies name a served model (else nearly all would stop at the 404).
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=op.as_strategy(generation_mode=mode), model=st.sampled_from([*TINY, None]))
    def run(case: schemathesis.Case, model: str | None) -> None:
        if model is not None and isinstance(case.body, dict):
            case.body["model"] = model
        r = case.call(base_url=url, timeout=60)
        codes[r.status_code] += 1
        if r.status_code >= 500:
            failures.append(f"{op.method} {op.path} {case.body!r} -> {r.status_code} {r.text}")
        elif r.status_code >= 400 and op.path.startswith("/v1"):
            body = r.json()
            if set(body.get("error", {})) != {"message", "type", "param", "code"}:
                failures.append(f"{op.path} {case.body!r}: not an OpenAI error body: {body}")

    run()
