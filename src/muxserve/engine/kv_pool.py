"""The unit's head-wise paged KV pool: one tensor that every model of the unit draws blocks from.

A block is `block_numel` elements holding K and V of `tokens_per_block` tokens for ONE
(layer, KV head) of ONE model, with `tokens_per_block = block_numel // (2 * head_dim)`.
All blocks have the same byte size whatever the model's head_dim, so models of different
shapes share one free list (kept by the pure-Python `muxserve.kvcache.block_manager`)
without padding or per-model sub-pools. This module only owns the tensor.
"""

from __future__ import annotations

import torch

from muxserve.engine.memory import empty_on_hugepages

DEFAULT_BLOCK_NUMEL = 8192  # one MuxServe block: 32 tokens x head_dim 128 x (K, V)


def tokens_per_block(block_numel: int, head_dim: int) -> int:
    """Tokens per block for this head_dim; 2 * head_dim must divide block_numel."""
    if head_dim <= 0 or block_numel % (2 * head_dim):
        raise ValueError(f"block_numel {block_numel} is not a multiple of 2 * head_dim "
                         f"(head_dim={head_dim}); choose a block_numel divisible by {2 * head_dim}")
    return block_numel // (2 * head_dim)


class KVPool:
    """`storage`: [num_blocks, block_numel] in the unit's dtype, zero-initialised.

    Models never own KV memory: a model views the same storage with its own head_dim and
    reads/writes only the block ids its block tables name.
    """

    def __init__(self, num_blocks: int, block_numel: int = DEFAULT_BLOCK_NUMEL,
                 dtype: torch.dtype = torch.float32) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be > 0, got {num_blocks}")
        if block_numel <= 0 or block_numel % 2:
            raise ValueError(f"block_numel must be a positive even number, got {block_numel}")
        if dtype not in (torch.float32, torch.bfloat16, torch.float16):
            raise ValueError(f"unsupported KV dtype {dtype}; valid: float32, bfloat16, float16")
        self.num_blocks = num_blocks
        self.block_numel = block_numel
        self.dtype = dtype
        # huge pages: every decode step streams the context's blocks (see engine.memory)
        self.storage = empty_on_hugepages((num_blocks, block_numel), dtype).zero_()

    def view(self, head_dim: int) -> torch.Tensor:
        """The pool as [num_blocks, 2, tokens_per_block, head_dim] (index 0 = K, 1 = V); no copy."""
        tpb = tokens_per_block(self.block_numel, head_dim)
        return self.storage.view(self.num_blocks, 2, tpb, head_dim)

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    @property
    def block_bytes(self) -> int:
        return self.block_numel * self.storage.element_size()

    def __repr__(self) -> str:
        return (f"KVPool(num_blocks={self.num_blocks}, block_numel={self.block_numel}, "
                f"dtype={self.dtype}, nbytes={self.nbytes})")
