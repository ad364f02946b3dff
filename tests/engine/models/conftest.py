"""Tiny random-weight Llama and Gemma3 models in transformers (the reference) and in muxserve.

Small enough to build in milliseconds; shapes chosen so that tests cross block boundaries
(4 or 8 tokens per block), GQA groups, and Gemma3's sliding window (8 tokens), and the
two models have different head_dim (32, 16) so they exercise the shared equal-byte blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from muxserve.config.models import ModelArch
from muxserve.engine.kv_pool import KVPool
from muxserve.engine.model_runner import ModelRunner, SeqInput
from muxserve.kvcache.block_manager import BlockManager

TINY_BLOCK_NUMEL = 256  # llama head_dim 32 -> 4 tokens per block, gemma3 head_dim 16 -> 8


@dataclass(frozen=True)
class TinyModel:
    arch: ModelArch
    hf: torch.nn.Module  # transformers' own model, eager attention, fp32
    weights: dict[str, torch.Tensor]

    def ref_logits(self, ids: list[int]) -> torch.Tensor:
        """[len(ids), vocab] fp32 logits of transformers on the whole sequence."""
        with torch.inference_mode():
            return self.hf(torch.tensor([ids])).logits[0].float()


def _randomize(model: torch.nn.Module, seed: int) -> None:
    # default init (std 0.02) makes near-uniform logits that hide bugs; use larger weights
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.3 if "norm" in name else 0.15
            p.copy_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture(scope="session")
def tiny_llama() -> TinyModel:
    cfg = LlamaConfig(hidden_size=96, num_attention_heads=6, num_key_value_heads=2, head_dim=32,
                      intermediate_size=160, num_hidden_layers=3, vocab_size=120,
                      tie_word_embeddings=True, rms_norm_eps=1e-5, max_position_embeddings=256,
                      rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    hf = LlamaForCausalLM(cfg).eval()
    hf.config._attn_implementation = "eager"
    _randomize(hf, 0)
    arch = ModelArch(name="tiny-llama", family="llama", num_layers=3, hidden_size=96,
                     num_heads=6, num_kv_heads=2, head_dim=32, intermediate_size=160,
                     vocab_size=120, max_context=256, rope_theta=500.0, rms_norm_eps=1e-5,
                     tie_embeddings=True)
    return TinyModel(arch, hf, dict(hf.state_dict()))


@pytest.fixture(scope="session")
def tiny_gemma3() -> TinyModel:
    cfg = Gemma3TextConfig(
        hidden_size=64, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        intermediate_size=128, num_hidden_layers=3, vocab_size=100, sliding_window=8,
        sliding_window_pattern=3, query_pre_attn_scalar=24, max_position_embeddings=256,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1e6}})
    hf = Gemma3ForCausalLM(cfg).eval()
    hf.config._attn_implementation = "eager"
    _randomize(hf, 1)
    assert cfg.layer_types == ["sliding_attention", "sliding_attention", "full_attention"]
    arch = ModelArch(name="tiny-gemma3", family="gemma3", num_layers=3, hidden_size=64,
                     num_heads=4, num_kv_heads=1, head_dim=16, intermediate_size=128,
                     vocab_size=100, max_context=256, rope_theta=1e6, rope_local_theta=1e4,
                     sliding_window=8, sliding_window_pattern=3, rms_norm_eps=1e-6,
                     tie_embeddings=True, query_pre_attn_scalar=24)
    return TinyModel(arch, hf, dict(hf.state_dict()))


@pytest.fixture(scope="session")
def tiny_qwen2() -> TinyModel:
    """Llama family with q/k/v biases and untied embeddings."""
    cfg = Qwen2Config(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=96, num_hidden_layers=2, vocab_size=90,
                      tie_word_embeddings=False, rms_norm_eps=1e-6, max_position_embeddings=256,
                      rope_parameters={"rope_type": "default", "rope_theta": 1e6})
    hf = Qwen2ForCausalLM(cfg).eval()
    hf.config._attn_implementation = "eager"
    _randomize(hf, 2)
    arch = ModelArch(name="tiny-qwen2", family="llama", num_layers=2, hidden_size=64,
                     num_heads=4, num_kv_heads=2, head_dim=16, intermediate_size=96,
                     vocab_size=90, max_context=256, rope_theta=1e6, rms_norm_eps=1e-6)
    return TinyModel(arch, hf, dict(hf.state_dict()))


@pytest.fixture(params=["tiny_llama", "tiny_gemma3", "tiny_qwen2"])
def tiny(request: pytest.FixtureRequest) -> TinyModel:
    return request.getfixturevalue(request.param)


class Driver:
    """One model's sequences on a (possibly shared) pool and block manager, driven step by step
    the way the request loop drives ModelRunner."""

    def __init__(self, tiny: TinyModel, pool: KVPool, bm: BlockManager, model_id: int = 0,
                 dtype: torch.dtype = torch.float32) -> None:
        a = tiny.arch
        layout = bm.register_model(model_id, a.num_layers, a.num_kv_heads, a.head_dim)
        self.runner = ModelRunner(a, tiny.weights, pool, layout, dtype)
        self.bm, self.model_id = bm, model_id

    def prefill(self, prompts: dict[int, list[int]]) -> torch.Tensor:
        for sid, ids in prompts.items():
            self.bm.allocate(sid, self.model_id, len(ids))
        return self.runner.execute([SeqInput(ids, 0, self.bm.block_table(sid))
                                    for sid, ids in prompts.items()])

    def extend(self, new: dict[int, list[int]]) -> torch.Tensor:
        """Append tokens to cached sequences: decode (1 token) or a continued prefill."""
        items = []
        for sid, ids in new.items():
            start = self.bm.num_tokens(sid)
            self.bm.append(sid, len(ids))
            items.append(SeqInput(ids, start, self.bm.block_table(sid)))
        return self.runner.execute(items)


@pytest.fixture
def make_driver():
    def make(tiny: TinyModel, num_blocks: int = 600, dtype: torch.dtype = torch.float32,
             block_numel: int = TINY_BLOCK_NUMEL) -> Driver:
        pool = KVPool(num_blocks, block_numel, dtype)
        return Driver(tiny, pool, BlockManager(num_blocks, block_numel), 0, dtype)
    return make
