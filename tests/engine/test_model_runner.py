"""ModelRunner's contract: shapes, validation of bad inputs, and the pool it writes to."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest
import torch

from muxserve.config.models import ModelArch
from muxserve.engine.kv_pool import KVPool
from muxserve.engine.model_runner import ModelRunner, SeqInput
from muxserve.kvcache.block_manager import BlockManager

ARCH = ModelArch(name="tiny", family="llama", num_layers=2, hidden_size=32, num_heads=4,
                 num_kv_heads=2, head_dim=8, intermediate_size=48, vocab_size=50,
                 max_context=40, tie_embeddings=True)
BLOCK_NUMEL = 64  # head_dim 8 -> 4 tokens per block


def _weights(arch: ModelArch) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    h, d = arch.hidden_size, arch.head_dim
    shapes = {"self_attn.q_proj": (arch.num_heads * d, h),
              "self_attn.k_proj": (arch.num_kv_heads * d, h),
              "self_attn.v_proj": (arch.num_kv_heads * d, h),
              "self_attn.o_proj": (h, arch.num_heads * d),
              "mlp.gate_proj": (arch.intermediate_size, h),
              "mlp.up_proj": (arch.intermediate_size, h),
              "mlp.down_proj": (h, arch.intermediate_size),
              "input_layernorm": (h,), "post_attention_layernorm": (h,)}
    w = {"model.embed_tokens.weight": torch.randn(arch.vocab_size, h, generator=g),
         "model.norm.weight": torch.ones(h)}
    for i in range(arch.num_layers):
        for name, shape in shapes.items():
            w[f"model.layers.{i}.{name}.weight"] = torch.randn(*shape, generator=g) * 0.2
    return w


@pytest.fixture
def setup() -> tuple[ModelRunner, BlockManager]:
    bm = BlockManager(64, BLOCK_NUMEL)
    layout = bm.register_model(0, ARCH.num_layers, ARCH.num_kv_heads, ARCH.head_dim)
    return ModelRunner(ARCH, _weights(ARCH), KVPool(64, BLOCK_NUMEL), layout), bm


def test_execute_returns_fp32_logits_of_each_last_token(setup) -> None:
    runner, bm = setup
    bm.allocate(0, 0, 6)
    bm.allocate(1, 0, 3)
    out = runner.execute([SeqInput([1, 2, 3, 4, 5, 6], 0, bm.block_table(0)),
                          SeqInput([7, 8, 9], 0, bm.block_table(1))])
    assert out.shape == (2, ARCH.vocab_size) and out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_execute_writes_kv_only_into_the_tables_blocks(setup) -> None:
    runner, bm = setup
    bm.allocate(0, 0, 5)
    runner.execute([SeqInput([1, 2, 3, 4, 5], 0, bm.block_table(0))])
    used = {b for row in bm.block_table(0) for b in row}
    written = {b for b in range(64) if runner.pool.storage[b].abs().sum() > 0}
    assert written == used


def test_seq_input_is_frozen() -> None:
    s = SeqInput([1], 0, [[0, 1, 2, 3]])
    with pytest.raises(FrozenInstanceError):
        s.start_pos = 3  # type: ignore[misc]


@pytest.mark.parametrize("item, match", [
    (SeqInput([], 0, [[0, 1, 2, 3]]), "token_ids is empty"),
    (SeqInput([1], -1, [[0, 1, 2, 3]]), "start_pos"),
    (SeqInput([1] * 5, 0, [[0, 1, 2, 3]]), "needs 2"),
    (SeqInput([1], 0, [[0, 1, 2]]), "num_kv_heads = 4"),
    (SeqInput([1], 0, [[0, 1, 2, 64]]), r"block ids must be in \[0, 64\)"),
    (SeqInput([50], 0, [[0, 1, 2, 3]]), r"token ids must be in \[0, 50\)"),
    (SeqInput([1], 40, [[0, 1, 2, 3]] * 11), "context window of 40"),
])
def test_bad_inputs_get_a_clear_error(setup, item: SeqInput, match: str) -> None:
    runner, _ = setup
    with pytest.raises(ValueError, match=match):
        runner.execute([item])


def test_empty_batch_is_rejected(setup) -> None:
    with pytest.raises(ValueError, match="at least one"):
        setup[0].execute([])


def test_layout_and_dtype_must_match_the_model_and_pool() -> None:
    bm = BlockManager(8, BLOCK_NUMEL)
    other = bm.register_model(1, 3, ARCH.num_kv_heads, ARCH.head_dim)
    with pytest.raises(ValueError, match="does not match"):
        ModelRunner(ARCH, _weights(ARCH), KVPool(8, BLOCK_NUMEL), other)
    ok = bm.register_model(0, ARCH.num_layers, ARCH.num_kv_heads, ARCH.head_dim)
    with pytest.raises(ValueError, match="differs from the pool"):
        ModelRunner(ARCH, _weights(ARCH), KVPool(8, BLOCK_NUMEL), ok, torch.bfloat16)


def test_missing_weight_is_named() -> None:
    bm = BlockManager(8, BLOCK_NUMEL)
    layout = bm.register_model(0, ARCH.num_layers, ARCH.num_kv_heads, ARCH.head_dim)
    w = _weights(ARCH)
    del w["model.layers.1.mlp.down_proj.weight"]
    with pytest.raises(ValueError, match="layers.1.mlp.down_proj.weight"):
        ModelRunner(ARCH, w, KVPool(8, BLOCK_NUMEL), layout)
