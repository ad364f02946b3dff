"""KVPool: one storage tensor, equal-byte blocks viewed per head_dim."""

from __future__ import annotations

import pytest
import torch

from muxserve.engine.kv_pool import KVPool, tokens_per_block


def test_view_shapes_share_one_storage() -> None:
    pool = KVPool(10, 8192, torch.bfloat16)
    assert pool.storage.shape == (10, 8192)
    assert pool.nbytes == 10 * 8192 * 2 and pool.block_bytes == 8192 * 2
    smol, gemma = pool.view(64), pool.view(256)
    assert smol.shape == (10, 2, 64, 64) and gemma.shape == (10, 2, 16, 256)
    gemma[3, 1, 15, 255] = 7.0                       # last V element of block 3
    assert pool.storage[3, -1].item() == 7.0 and smol[3, 1, 63, 63].item() == 7.0
    assert smol.data_ptr() == gemma.data_ptr() == pool.storage.data_ptr()


def test_tokens_per_block() -> None:
    assert tokens_per_block(8192, 64) == 64
    assert tokens_per_block(8192, 256) == 16
    with pytest.raises(ValueError, match="not a multiple of 2 \\* head_dim"):
        tokens_per_block(8192, 96 * 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_blocks": 0}, "num_blocks"),
    ({"num_blocks": 4, "block_numel": 7}, "block_numel"),
    ({"num_blocks": 4, "dtype": torch.int32}, "unsupported KV dtype"),
])
def test_bad_pool_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        KVPool(**kwargs)
