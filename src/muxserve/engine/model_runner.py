"""ModelRunner: one model's batched forward steps over the unit's shared paged KV pool.

The caller (the request loop) owns scheduling and the block manager; it hands the runner the
new tokens of each sequence, how many tokens of it are already cached, and its block table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain

import torch

from muxserve.config.models import ModelArch
from muxserve.engine.attention import Layout, PagedAttention, build_attn_batch
from muxserve.engine.kv_pool import KVPool, tokens_per_block
from muxserve.engine.models import build_model


@dataclass(frozen=True)
class SeqInput:
    """One sequence's share of a step.

    token_ids: the NEW tokens: the prompt (or its uncached suffix) for prefill, the last sampled
        token for decode.
    start_pos: tokens of this sequence already in the cache (their K/V are read, not recomputed).
    block_table: `[token_block][layer * num_kv_heads + head]` -> block id (the block manager's
        `block_table(seq_id)`); must cover start_pos + len(token_ids) tokens.
    """

    token_ids: list[int]
    start_pos: int
    block_table: list[list[int]]


class ModelRunner:
    """Runs one model's batch of prefills or decodes (continuous batching: any mix of lengths).

    Weights are converted to `dtype` and fused (QKV, gate/up) at construction; the KV cache
    lives only in `pool`, which other models' runners share through their own block ids.
    """

    def __init__(self, arch: ModelArch, weights: Mapping[str, torch.Tensor], pool: KVPool,
                 layout: Layout, dtype: torch.dtype | None = None) -> None:
        dtype = dtype or pool.dtype
        if dtype != pool.dtype:
            raise ValueError(f"{arch.name}: compute dtype {dtype} differs from the pool's "
                             f"{pool.dtype}; use one dtype per unit")
        got = (layout.num_layers, layout.num_kv_heads, layout.head_dim)
        want = (arch.num_layers, arch.num_kv_heads, arch.head_dim)
        if got != want:
            raise ValueError(f"{arch.name}: layout (layers, kv_heads, head_dim) {got} does not "
                             f"match the architecture's {want}")
        tpb = tokens_per_block(pool.block_numel, arch.head_dim)
        if layout.tokens_per_block != tpb:
            raise ValueError(f"{arch.name}: layout tokens_per_block {layout.tokens_per_block} != "
                             f"{tpb} for block_numel {pool.block_numel}")
        self.arch, self.pool, self.layout, self.dtype = arch, pool, layout, dtype
        self.model = build_model(arch, weights, dtype)
        self.attn = PagedAttention(pool.storage, layout, arch.num_heads, arch.attn_scale)

    def pack_weights(self, amx: bool = True, onednn: bool = True) -> int:
        """Reorder the bf16 projections for a faster matmul: AMX tile order where available
        (amx), else oneDNN's layout (onednn; see `models.linear`). AMX tiles are plain tensors
        (shareable, picklable); oneDNN's copy must be made in the process that runs the model.
        Returns how many projections are packed."""
        m = self.model
        n = sum(lin.pack(amx, onednn) for lin in [m.lm_head]
                + [lin for layer in m.layers for lin in layer.linears()])
        if m.tied and m.lm_head.tiles is not None:
            m.embed = None  # one copy of a tied table: embedding rows come from the tiles
        return n

    @torch.inference_mode()
    def execute(self, items: Sequence[SeqInput]) -> torch.Tensor:
        """Forward the new tokens of every item; returns fp32 logits [len(items), vocab] of
        each item's last new token.

        Modifies the pool: K/V of all new tokens are written into the items' blocks at
        positions start_pos .. start_pos + len(token_ids) - 1.
        """
        if not items:
            raise ValueError("execute() needs at least one SeqInput")
        a = self.arch
        for i, it in enumerate(items):
            if not it.token_ids:
                raise ValueError(f"item {i}: token_ids is empty")
            if it.start_pos < 0:
                raise ValueError(f"item {i}: start_pos must be >= 0, got {it.start_pos}")
            if it.start_pos + len(it.token_ids) > a.max_context:
                raise ValueError(f"item {i}: {it.start_pos + len(it.token_ids)} tokens exceed "
                                 f"{a.name}'s context window of {a.max_context}")
        tokens = torch.tensor(list(chain.from_iterable(it.token_ids for it in items)))
        if int(tokens.min()) < 0 or int(tokens.max()) >= a.vocab_size:
            raise ValueError(f"token ids must be in [0, {a.vocab_size}), got "
                             f"[{int(tokens.min())}, {int(tokens.max())}]")
        num_new = [len(it.token_ids) for it in items]
        batch = build_attn_batch(
            num_new, [it.start_pos for it in items], [it.block_table for it in items],
            self.layout, self.pool.num_blocks, a.sliding_window,
            gather=not self.attn.fusable(num_new))
        return self.model.forward(tokens, batch, self.attn)
