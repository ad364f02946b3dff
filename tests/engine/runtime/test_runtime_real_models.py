"""The runtime on the real smollm2-135m and gemma3-270m: same tokens as MultiModelLLM alone,
and one copy of the weights: each worker's private memory is below its model's weights (a
private copy would add them on top of a bare torch process's ~150 MiB)."""

from __future__ import annotations

import pytest
from runtime_helpers import shutdown_and_check, smaps_rollup

from muxserve.engine.llm import MultiModelLLM
from muxserve.engine.protocol import GenerateRequest
from muxserve.engine.request import GenerationRequest
from muxserve.engine.runtime import UnitConfig, UnitRuntime
from muxserve.types import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(600)]
MODELS = {"smol": "smollm2-135m", "gemma": "gemma3-270m"}
PROMPTS = ["The capital of France is", "def fibonacci(n):"]


def test_real_models_match_alone_and_share_weights() -> None:
    params = SamplingParams(max_tokens=8, temperature=0.0)
    rt = UnitRuntime(UnitConfig.of(MODELS, mode="muxserve", dtype="bfloat16",
                                   kv_pool_bytes=64 * 2**20))
    rt.start()
    try:
        reqs = [GenerateRequest(f"{m}{i}", m, tuple(rt.tokenizer(m).encode(p)), params)
                for m in MODELS for i, p in enumerate(PROMPTS)]
        outs = rt.run_requests(reqs, timeout_s=300)
        info = rt.info()
        mem = {label: smaps_rollup(pid) for label, pid in info["workers"].items()}
    finally:
        shutdown_and_check(rt)
    llm = MultiModelLLM(MODELS, dtype="bfloat16", kv_pool_bytes=64 * 2**20)
    want = [tuple(llm.generate([GenerationRequest(r.model, list(r.prompt_token_ids),
                                                  params)])[0].token_ids) for r in reqs]
    assert [o.token_ids for o in outs] == want
    assert all(o.error is None and o.text for o in outs)
    for label, m in mem.items():
        weights = info["weight_bytes"][label.split("/")[0]]
        private = m["Private_Clean"] + m["Private_Dirty"]
        print(f"{label}: weights {weights / 2**20:.0f} MiB, Rss {m['Rss'] / 2**20:.0f} MiB, "
              f"private {private / 2**20:.0f} MiB, shared "
              f"{(m['Shared_Clean'] + m['Shared_Dirty']) / 2**20:.0f} MiB")
        # the worker touched all of its weights (it ran jobs) yet holds them as shared pages;
        # its private memory is the interpreter + torch (~150 MiB), below even one weight copy
        assert m["Shared_Clean"] + m["Shared_Dirty"] >= weights
        assert private < weights
