"""Unit tests of the head-wise block manager: layout arithmetic, quotas, errors, preemption."""

from __future__ import annotations

import pytest

from muxserve.kvcache import BlockManager, OutOfBlocksError


def test_tokens_per_block_follows_head_dim() -> None:
    bm = BlockManager(num_blocks=100)
    smol = bm.register_model(0, num_layers=30, num_kv_heads=3, head_dim=64)
    gemma = bm.register_model(1, num_layers=18, num_kv_heads=1, head_dim=256)
    llama = bm.register_model(2, num_layers=32, num_kv_heads=32, head_dim=128)
    assert (smol.tokens_per_block, gemma.tokens_per_block, llama.tokens_per_block) == (64, 16, 32)
    assert (smol.blocks_per_token_block, gemma.blocks_per_token_block) == (90, 18)
    assert llama.blocks_per_token_block == 1024


def test_blocks_needed_is_g_times_token_blocks() -> None:
    bm = BlockManager(num_blocks=100)
    bm.register_model(0, num_layers=2, num_kv_heads=3, head_dim=128)  # g=6, tpb=32
    assert bm.blocks_needed(0, 0) == 0
    assert bm.blocks_needed(0, 1) == 6
    assert bm.blocks_needed(0, 32) == 6
    assert bm.blocks_needed(0, 33) == 12
    assert bm.blocks_needed(0, 96) == 18


def test_allocate_append_free_and_table_shape() -> None:
    bm = BlockManager(num_blocks=20)
    bm.register_model(7, num_layers=2, num_kv_heads=2, head_dim=128)  # g=4, tpb=32
    bm.allocate(seq_id=1, model_id=7, num_tokens=40)
    table = bm.block_table(1)
    assert [len(r) for r in table] == [4, 4]
    assert table[0] == [0, 1, 2, 3]  # LIFO free list hands out low ids first
    assert bm.used_blocks(7) == 8 and bm.num_free_blocks == 12
    bm.append(1, 24)  # 64 tokens: still two token blocks
    assert bm.num_tokens(1) == 64 and bm.used_blocks() == 8
    bm.append(1)  # 65th token crosses a boundary: g more blocks
    assert len(bm.block_table(1)) == 3 and bm.used_blocks(7) == 12
    assert bm.model_of(1) == 7 and bm.seqs_of(7) == [1]
    bm.check_integrity()
    bm.free(1)
    assert bm.used_blocks() == 0 and bm.num_free_blocks == 20 and bm.seqs_of(7) == []
    bm.check_integrity()


def test_two_head_dims_share_one_free_list() -> None:
    bm = BlockManager(num_blocks=108)
    bm.register_model(0, num_layers=30, num_kv_heads=3, head_dim=64)  # g=90, tpb=64
    bm.register_model(1, num_layers=18, num_kv_heads=1, head_dim=256)  # g=18, tpb=16
    bm.allocate(10, 0, 64)
    bm.allocate(11, 1, 16)
    assert bm.num_free_blocks == 0
    assert not bm.can_append(10) and not bm.can_append(11)
    bm.free(10)
    assert bm.can_append(11, 16 * 5)  # gemma takes the blocks smollm2 gave back
    bm.append(11, 16 * 5)
    assert bm.used_blocks(1) == 108
    bm.check_integrity()


def test_quota_refuses_growth_but_not_existing_use() -> None:
    bm = BlockManager(num_blocks=100)
    bm.register_model(0, num_layers=1, num_kv_heads=4, head_dim=128, quota_blocks=8)  # g=4
    assert bm.can_allocate(0, 64) and not bm.can_allocate(0, 65)
    bm.allocate(1, 0, 32)
    assert not bm.can_allocate(0, 33)
    bm.allocate(2, 0, 32)
    assert bm.used_blocks(0) == 8 and not bm.can_append(1)
    assert bm.can_append(1, 0)
    with pytest.raises(OutOfBlocksError, match="quota 8"):
        bm.append(1)
    bm.set_quota(0, 4)  # below current use: allowed, nothing is evicted
    assert bm.used_blocks(0) == 8 and not bm.can_allocate(0, 1)
    bm.set_quota(0, None)
    assert bm.can_allocate(0, 32 * 23)
    assert bm.quota(0) is None
    bm.check_integrity()


def test_failed_allocate_changes_nothing() -> None:
    bm = BlockManager(num_blocks=10)
    bm.register_model(0, num_layers=1, num_kv_heads=4, head_dim=128)
    bm.allocate(1, 0, 64)
    with pytest.raises(OutOfBlocksError, match="needs 8 more blocks: 2 free"):
        bm.allocate(2, 0, 64)
    with pytest.raises(OutOfBlocksError):
        bm.append(1, 64)
    assert bm.num_free_blocks == 2 and bm.num_tokens(1) == 64 and not bm.has_seq(2)
    bm.check_integrity()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda bm: bm.register_model(0, 1, 1, 128), "already registered"),
        (lambda bm: bm.register_model(1, 1, 1, 96), "2 \\* head_dim must divide block_numel"),
        (lambda bm: bm.register_model(1, 0, 1, 128), "num_layers must be a positive integer"),
        (lambda bm: bm.layout(5), r"unknown model_id 5; registered: \[0\]"),
        (lambda bm: bm.allocate(1, 5, 3), "unknown model_id 5"),
        (lambda bm: bm.allocate(9, 0, 3), "seq_id 9 already holds blocks"),
        (lambda bm: bm.append(4), "unknown seq_id 4"),
        (lambda bm: bm.free(4), "unknown seq_id 4"),
        (lambda bm: bm.set_quota(0, -1), "quota_blocks must be an integer >= 0 or None"),
        (lambda bm: bm.blocks_needed(0, -1), "num_tokens must be >= 0"),
        (lambda bm: bm.append(9, -2), "num_new_tokens must be >= 0"),
    ],
)
def test_bad_input_gets_clear_errors(call, match) -> None:  # type: ignore[no-untyped-def]
    bm = BlockManager(num_blocks=10)
    bm.register_model(0, 1, 1, 128)
    bm.allocate(9, 0, 3)
    with pytest.raises(ValueError, match=match):
        call(bm)
    bm.check_integrity()
    assert bm.used_blocks() == 1


def test_constructor_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_blocks must be an integer >= 0"):
        BlockManager(-1)
    with pytest.raises(ValueError, match="block_numel must be a positive integer"):
        BlockManager(4, block_numel=0)


def test_preemption_victims_newest_first() -> None:
    bm = BlockManager(num_blocks=100)
    bm.register_model(0, 1, 2, 128)  # g=2
    bm.register_model(1, 1, 3, 128)  # g=3
    bm.allocate(1, 0, 32)  # 2 blocks
    bm.allocate(2, 1, 64)  # 6 blocks
    bm.allocate(3, 0, 64)  # 4 blocks
    bm.allocate(4, 1, 1)  # 3 blocks
    assert bm.preemption_victims(None, 3) == [4]
    assert bm.preemption_victims(None, 4) == [4, 3]
    assert bm.preemption_victims(0, 5) == [3, 1]
    assert bm.preemption_victims(1, 7) == [4, 2]
    assert bm.preemption_victims(0, 0) == []
    assert bm.preemption_victims(0, 99) == [3, 1]  # not enough: all candidates, caller checks
    bm.free(2)
    bm.allocate(2, 1, 1)  # reallocated: now the newest
    assert bm.seqs_of(1) == [4, 2]
    assert bm.preemption_victims(None, 1) == [2]


def test_check_integrity_catches_corruption() -> None:
    bm = BlockManager(num_blocks=8)
    bm.register_model(0, 1, 2, 128)
    bm.allocate(1, 0, 10)
    # free = returned ids (_free) + never-used ids [_fresh, n)
    bm._free.append(bm._seqs[1].table[0][0])  # a block both free and owned
    bm._fresh += 1  # (keep the counts right, so that the id check is what fails)
    with pytest.raises(AssertionError, match="also free"):
        bm.check_integrity()
    bm._free.pop()
    bm._fresh -= 1
    bm.check_integrity()
    bm._fresh += 1  # a block neither free nor owned
    with pytest.raises(AssertionError, match="disagree"):
        bm.check_integrity()
    bm._num_free -= 1
    with pytest.raises(AssertionError, match="leaked"):
        bm.check_integrity()


def test_lazy_free_list_hands_out_ids_as_an_eager_lifo_stack() -> None:
    # the free list starts as [n-1, ..., 0] (block 0 on top); freed ids go back on top
    bm = BlockManager(num_blocks=12)
    bm.register_model(0, 1, 2, 128)  # g=2 blocks per 32 tokens
    bm.allocate(1, 0, 64)
    bm.allocate(2, 0, 32)
    assert bm.block_table(1) == [[0, 1], [2, 3]] and bm.block_table(2) == [[4, 5]]
    bm.free(1)  # stack top now: 0, 1, 2, 3 pushed in that order -> 3 on top
    bm.allocate(3, 0, 32)
    assert bm.block_table(3) == [[3, 2]]
    bm.allocate(4, 0, 64)  # the returned 1, 0, then the never-used 6, 7
    assert bm.block_table(4) == [[1, 0], [6, 7]]
    bm.free(2)
    bm.allocate(5, 0, 96)  # returned 5, 4, then a row straddling nothing left: 8, 9 / 10, 11
    assert bm.block_table(5) == [[5, 4], [8, 9], [10, 11]]
    assert bm.num_free_blocks == 0
    bm.check_integrity()


def test_big_pool_is_cheap_to_build() -> None:
    bm = BlockManager(num_blocks=50_000_000)  # an eager free list would be 400 MB of ids
    bm.register_model(0, 2, 2, 128)
    bm.allocate(1, 0, 33)
    assert bm.block_table(1) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert bm.num_free_blocks == 50_000_000 - 8


def test_counting_mode_has_no_ids_but_the_same_counts() -> None:
    bm = BlockManager(num_blocks=10, track_block_ids=False)
    bm.register_model(0, 1, 2, 128)  # g=2
    bm.allocate(1, 0, 40)
    assert bm.append_batch([1], 30)
    assert (bm.used_blocks(0), bm.num_free_blocks, bm.blocks_of(1)) == (6, 4, 6)
    with pytest.raises(ValueError, match="without ids"):
        bm.block_table(1)
    assert not bm.can_allocate(0, 65)
    bm.free(1)
    assert bm.num_free_blocks == 10
    bm.check_integrity()


def test_append_batch_is_all_or_nothing() -> None:
    bm = BlockManager(num_blocks=7)
    bm.register_model(0, 1, 2, 128)  # g=2
    bm.register_model(1, 1, 1, 128, quota_blocks=1)  # g=1
    bm.allocate(1, 0, 32)
    bm.allocate(2, 0, 31)
    bm.allocate(3, 1, 32)
    assert bm.append_batch([1, 2])  # 1 crosses a boundary (2 blocks), 2 does not
    assert (bm.num_tokens(1), bm.num_tokens(2), bm.num_free_blocks) == (33, 32, 0)
    assert not bm.append_batch([2, 1], 32)  # 2 needs 2 more blocks: none free
    assert (bm.num_tokens(1), bm.num_tokens(2)) == (33, 32)
    bm.free(2)
    assert not bm.append_batch([3])  # pool has room, model 1's quota does not
    assert bm.append_batch([3], 0) and bm.append_batch([], 5)
    bm.check_integrity()


@pytest.mark.parametrize("track", [True, False])
def test_grow_to_is_append_by_the_difference(track: bool) -> None:
    a, b = BlockManager(64, track_block_ids=track), BlockManager(64, track_block_ids=track)
    for bm in (a, b):
        bm.register_model(0, 1, 2, 128)  # g=2, 32 tokens per block
        bm.allocate(1, 0, 10)
    for target in (10, 32, 33, 100, 100, 129):
        a.append(1, target - a.num_tokens(1))
        b.grow_to(1, target)
        assert (a.num_tokens(1), a.blocks_of(1), a.num_free_blocks) == (
            b.num_tokens(1), b.blocks_of(1), b.num_free_blocks)
    assert b.blocks_of(1) == 10 and b.num_tokens(1) == 129
    with pytest.raises(ValueError, match="num_new_tokens must be >= 0"):
        b.grow_to(1, 128)
    with pytest.raises(OutOfBlocksError):
        b.grow_to(1, 32 * 33)
    assert b.num_tokens(1) == 129 and b.blocks_of(1) == 10  # a failed grow changes nothing
    b.check_integrity()
