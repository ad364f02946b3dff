"""schemathesis over a running server's own OpenAPI schema (shared by the fuzz tests)."""

from __future__ import annotations

from collections import Counter

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode


def fuzz_server(url: str, models: list[str], post_examples: int, get_examples: int = 10,
                ) -> tuple[Counter[int], list[str]]:
    """Status-code counts and failures (a 5xx, or a /v1 4xx without an OpenAI error body) of
    `post_examples` valid and as many schema-violating requests per POST operation, and
    `get_examples` per GET. Most bodies name a served model (else nearly all would stop at the
    404). Derandomized: the same requests every run."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    codes: Counter[int] = Counter()
    failures: list[str] = []
    for op in (r.ok() for r in schema.get_all_operations()):
        post = op.method == "post"
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if post \
            else [GenerationMode.POSITIVE]
        for mode in modes:
            _fuzz_op(op, mode, url, models, post_examples if post else get_examples, codes,
                     failures)
    return codes, failures


def _fuzz_op(op: schemathesis.APIOperation, mode: GenerationMode, url: str, models: list[str],
             examples: int, codes: Counter[int], failures: list[str]) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=op.as_strategy(generation_mode=mode), model=st.sampled_from([*models, None]))
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
