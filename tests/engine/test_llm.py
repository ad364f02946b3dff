"""MultiModelLLM on small random-weight models: batching, interleaving and preemption change
nothing; sampling options; bad input; no block leaks."""

from __future__ import annotations

import pytest

from muxserve.engine.llm import MultiModelLLM
from muxserve.engine.request import GenerationOutput, GenerationRequest
from muxserve.types import SamplingParams

# Small shapes with a small block_numel, so that sequences span many blocks and the Gemma3
# model's 8-token sliding window is crossed.
LLAMA = ("random:smollm2-135m?num_layers=2&hidden_size=64&num_heads=4&num_kv_heads=2"
         "&intermediate_size=128&vocab_size=300&max_context=256")
GEMMA = ("random:gemma3-270m?num_layers=3&hidden_size=64&num_heads=2&num_kv_heads=1"
         "&head_dim=32&intermediate_size=128&vocab_size=300&max_context=256&sliding_window=8"
         "&sliding_window_pattern=3&query_pre_attn_scalar=32")
MODELS = {"llama": LLAMA, "gemma": GEMMA}
BLOCK_NUMEL = 512  # llama head_dim 16 -> 16 tokens per block; gemma head_dim 32 -> 8


def greedy(n: int = 12, **kw: object) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, **kw)  # type: ignore


def prompt(i: int, length: int) -> list[int]:
    return [(37 * i + 11 * j) % 250 + 3 for j in range(length)]


@pytest.fixture(scope="module")
def llm() -> MultiModelLLM:
    return MultiModelLLM(MODELS, num_blocks=400, block_numel=BLOCK_NUMEL, seed=0)


def alone(llm: MultiModelLLM, req: GenerationRequest) -> GenerationOutput:
    [out] = llm.generate([req])
    return out


def assert_clean(llm: MultiModelLLM) -> None:
    llm.check_integrity()
    assert llm.blocks.used_blocks() == 0
    assert llm.blocks.num_free_blocks == llm.blocks.num_blocks
    assert not llm.has_unfinished()


def test_batch_equals_each_prompt_alone(llm: MultiModelLLM) -> None:
    reqs = [GenerationRequest("llama", prompt(i, n), greedy(10 + i))
            for i, n in enumerate([5, 17, 40, 1, 23])]
    together = llm.generate(reqs)
    assert [o.token_ids for o in together] == [alone(llm, r).token_ids for r in reqs]
    assert [len(o.token_ids) for o in together] == [10, 11, 12, 13, 14]
    assert all(o.finish_reason == "length" for o in together)
    assert_clean(llm)


def test_two_models_interleaved_equal_each_alone(llm: MultiModelLLM) -> None:
    reqs = [GenerationRequest(m, prompt(i, 6 + 7 * i), greedy(20))
            for i in range(4) for m in ("llama", "gemma")]
    together = llm.generate(reqs)
    assert [o.model for o in together] == [r.model for r in reqs]
    solo = [alone(llm, r) for r in reqs]
    assert [o.token_ids for o in together] == [o.token_ids for o in solo]
    # the two models really are different
    assert together[0].token_ids != together[1].token_ids
    assert_clean(llm)


def test_preemption_recomputes_to_the_same_tokens(llm: MultiModelLLM) -> None:
    reqs = [GenerationRequest(m, prompt(i, 20), greedy(40)) for i in range(3)
            for m in ("llama", "gemma")]
    expected = [o.token_ids for o in llm.generate(reqs)]
    # llama: 4 token-blocks of 16 x 4 blocks = 16 blocks for 60 tokens; gemma 8 x 3 = 24:
    # 120 blocks for all six at the end; 60 forces preemptions but fits any one request.
    tiny = MultiModelLLM(MODELS, num_blocks=60, block_numel=BLOCK_NUMEL, seed=0)
    outs = tiny.generate(reqs)
    assert sum(o.num_preemptions for o in outs) > 0
    assert [o.token_ids for o in outs] == expected
    assert_clean(tiny)


def test_same_seed_same_tokens_whatever_the_batch(llm: MultiModelLLM) -> None:
    seeded = GenerationRequest("gemma", prompt(1, 9),
                               SamplingParams(max_tokens=16, temperature=1.0, seed=42,
                                              ignore_eos=True))
    first = alone(llm, seeded).token_ids
    others = [GenerationRequest("gemma", prompt(i, 4 + i), SamplingParams(
        max_tokens=8, temperature=1.0, top_p=0.8, ignore_eos=True)) for i in range(3)]
    mixed = llm.generate([others[0], seeded, *others[1:]])
    assert mixed[1].token_ids == first
    unseeded = SamplingParams(max_tokens=16, temperature=1.0, seed=43, ignore_eos=True)
    assert alone(llm, GenerationRequest("gemma", prompt(1, 9), unseeded)).token_ids != first


def test_stop_token_id_ends_the_request_and_is_kept_out_of_text(llm: MultiModelLLM) -> None:
    base = alone(llm, GenerationRequest("llama", prompt(3, 8), greedy(16)))
    stop_id = base.token_ids[5]
    cut = base.token_ids.index(stop_id)
    params = greedy(16, stop_token_ids=(stop_id,))
    out = alone(llm, GenerationRequest("llama", prompt(3, 8), params))
    assert out.token_ids == base.token_ids[:cut + 1]
    assert out.finish_reason == "stop"
    tok = llm.models["llama"].loaded.tokenizer
    assert out.text == tok.decode(base.token_ids[:cut])


def test_stop_string_cuts_the_text(llm: MultiModelLLM) -> None:
    req = GenerationRequest("llama", "Once upon a time", greedy(24))
    base = alone(llm, req)
    text = base.text
    i = next(i for i in range(4, len(text) - 2) if "\ufffd" not in text[i:i + 2])
    stop = text[i:i + 2]
    out = alone(llm, GenerationRequest("llama", "Once upon a time", greedy(24, stop=(stop,))))
    assert out.finish_reason == "stop"
    assert out.text == text[:text.find(stop)]
    assert out.token_ids == base.token_ids[:len(out.token_ids)]
    assert len(out.token_ids) < len(base.token_ids)


def test_text_prompt_and_chat_prompt(llm: MultiModelLLM) -> None:
    out = alone(llm, GenerationRequest("gemma", "Hello", greedy(4)))
    tok = llm.models["gemma"].loaded.tokenizer
    assert out.prompt_token_ids == tok.encode("Hello")
    chat = alone(llm, GenerationRequest("gemma", "Hello", greedy(4), chat=True))
    assert chat.prompt_token_ids == tok.encode_chat([{"role": "user", "content": "Hello"}])
    assert len(chat.prompt_token_ids) > len(out.prompt_token_ids)


def test_step_api_streams_and_abort_frees_blocks(llm: MultiModelLLM) -> None:
    a = llm.add_request(GenerationRequest("llama", prompt(0, 10), greedy(6)))
    b = llm.add_request(GenerationRequest("gemma", prompt(1, 10), greedy(50)))
    got: dict[int, list[int]] = {a: [], b: []}
    final = None
    while final is None:
        for o in llm.step():
            got[o.request_id] += o.new_token_ids
            if o.finished:
                final = o
    assert final.request_id == a and final.output is not None
    assert final.output.token_ids == got[a] and len(got[a]) == 6
    assert llm.has_unfinished() and llm.blocks.used_blocks() > 0
    llm.abort(b)
    assert_clean(llm)


@pytest.mark.parametrize("req, match", [
    (GenerationRequest("nope", "hi"), r"unknown model 'nope'; loaded models: llama, gemma"),
    (GenerationRequest("llama", ""), "prompt is empty"),
    (GenerationRequest("llama", []), "prompt is empty"),
    (GenerationRequest("llama", [5, 300]), r"\[300\] are not in \[0, 300\)"),
    (GenerationRequest("llama", [5] * 256), "256 tokens but llama's context window is 256"),
    (GenerationRequest("gemma", [5] * 100, SamplingParams(max_tokens=150)),
     "needs 96 KV blocks of gemma, but the pool has 60"),
])
def test_bad_input_is_rejected_and_nothing_breaks(req: GenerationRequest, match: str) -> None:
    llm = MultiModelLLM(MODELS, num_blocks=60, block_numel=BLOCK_NUMEL, seed=0)
    good = GenerationRequest("llama", prompt(2, 5), greedy(5))
    with pytest.raises(ValueError, match=match):
        llm.generate([good, req])  # validated before anything is queued
    assert_clean(llm)
    with pytest.raises(ValueError, match=match):
        llm.add_request(req)
    assert len(alone(llm, good).token_ids) == 5
    assert_clean(llm)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="unknown dtype 'float64'; valid: float32, bfloat16"):
        MultiModelLLM([LLAMA], dtype="float64", num_blocks=10)
    with pytest.raises(ValueError, match="not both"):
        MultiModelLLM([LLAMA], num_blocks=10, kv_pool_bytes=2**20)
    with pytest.raises(ValueError, match="listed twice"):
        MultiModelLLM([LLAMA, LLAMA], num_blocks=10)
    with pytest.raises(ValueError, match="did you mean"):
        MultiModelLLM(LLAMA, num_blocks=10)  # type: ignore[arg-type]


def test_sequence_of_sources_serves_them_under_their_own_names() -> None:
    llm = MultiModelLLM([LLAMA], num_blocks=50, block_numel=BLOCK_NUMEL, dtype="bfloat16")
    [out] = llm.generate([GenerationRequest(LLAMA, "abc", greedy(3))])
    assert out.model == LLAMA and len(out.token_ids) == 3


def test_generation_stops_at_the_context_window(llm: MultiModelLLM) -> None:
    out = alone(llm, GenerationRequest("llama", prompt(4, 250), greedy(20)))
    assert len(out.token_ids) == 6 and out.finish_reason == "length"  # 250 + 6 = 256 tokens
    assert_clean(llm)


@pytest.mark.slow
def test_real_models_share_one_pool_and_match_their_solo_runs() -> None:
    llm = MultiModelLLM(["smollm2-135m", "gemma3-270m"], kv_pool_bytes=64 * 2**20)
    texts = ["The capital of France is", "def fibonacci(n):"]
    reqs = [GenerationRequest(m, t, greedy(6)) for t in texts
            for m in ("smollm2-135m", "gemma3-270m")]
    together = llm.generate(reqs)
    assert [o.token_ids for o in together] == [alone(llm, r).token_ids for r in reqs]
    assert "Paris" in together[0].text
    assert_clean(llm)


def test_abort_of_a_waiting_request(llm: MultiModelLLM) -> None:
    rid = llm.add_request(GenerationRequest("gemma", prompt(5, 30), greedy(5)))
    assert llm.has_unfinished()
    llm.abort(rid)
    llm.abort(rid)  # twice, or an unknown id: nothing happens
    assert llm.step() == []
    assert_clean(llm)
