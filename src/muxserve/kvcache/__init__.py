"""muxserve.kvcache: the head-wise paged KV block manager (pure Python over integer block ids)."""

from muxserve.kvcache.block_manager import (
    DEFAULT_BLOCK_NUMEL,
    BlockManager,
    KVLayout,
    OutOfBlocksError,
)

__all__ = ["DEFAULT_BLOCK_NUMEL", "BlockManager", "KVLayout", "OutOfBlocksError"]
