"""QuotaManager: initial split, sequence caps, and each branch of the ADBS adaptation step."""

from __future__ import annotations

from sched_helpers import tiny_arch

from muxserve.kvcache import BlockManager
from muxserve.scheduler import SchedulerConfig, UnitModel
from muxserve.scheduler.quota import QuotaManager, proportional_split


def manager(num_blocks: int, rates: list[float], mode: str = "adaptive",
            **cfg: object) -> tuple[QuotaManager, BlockManager]:
    bm = BlockManager(num_blocks)
    models = [UnitModel(i, f"m{i}", tiny_arch(), rate_rps=r, max_num_seqs=50)
              for i, r in enumerate(rates)]
    for m in models:
        bm.register_model(m.model_id, 1, 1, 128)  # g = 1, 32 tokens per block
    config = SchedulerConfig(avg_seq_tokens=32, **cfg)  # type: ignore[arg-type]
    return QuotaManager(models, bm, config, mode), bm


def test_proportional_split_is_exact() -> None:
    assert proportional_split(10, {0: 1.0, 1: 1.0, 2: 1.0}) == {0: 4, 1: 3, 2: 3}
    assert proportional_split(7, {0: 0.0, 1: 0.0}) == {0: 4, 1: 3}
    assert proportional_split(100, {5: 1.0, 9: 3.0}) == {5: 25, 9: 75}


def test_seq_caps_from_quotas() -> None:
    q, _ = manager(100, [1.0, 3.0])  # max_num_seqs 50: ADBS replaces it by the quota's cap
    assert q.quotas == {0: 25, 1: 75} and (q.seq_cap(0), q.seq_cap(1)) == (25, 75)
    fixed, _ = manager(100, [1.0, 3.0], mode="fixed")
    assert (fixed.seq_cap(0), fixed.seq_cap(1)) == (25, 50)
    none, _ = manager(100, [1.0, 3.0], mode="none")
    assert none.seq_cap(0) == 50


def test_donor_gives_to_busy_model_with_a_long_queue() -> None:
    q, _ = manager(40, [1.0, 1.0])  # 20 / 20 blocks = 20 / 20 sequences
    for _ in range(4):
        q.record_decode(0, 5)  # util 0.25: offers int(0.7 * 20) = 14
        q.record_decode(1, 20)  # util 1.0
    q.adapt({1: 30}, {1: 20})  # demand 50 >= 22: grows by min(max(1, 2), 30) = 2 sequences
    assert q.quotas == {0: 18, 1: 22}
    assert q.mean_batch(0) == 0.0  # measurements restart after each adaptation


def test_offer_never_includes_blocks_in_use() -> None:
    q, bm = manager(40, [1.0, 1.0])
    bm.allocate(1, 0, 32 * 19)  # model 0 holds 19 of its 20 blocks, but decodes little
    q.record_decode(0, 1)
    q.record_decode(1, 20)
    q.adapt({1: 30}, {1: 20})  # model 1 wants 2, model 0 can give only 1
    assert q.quotas == {0: 19, 1: 21}


def test_no_receiver_no_move() -> None:
    q, _ = manager(60, [1.0, 1.0, 1.0])  # 20 each
    q.record_decode(0, 2)  # util 0.1: a donor
    q.record_decode(1, 20)  # util 1.0 but demand 5 < 1.1 * 20: no receiver
    q.record_decode(2, 4)  # util 0.2: a donor
    q.adapt({1: 5, 2: 9}, {})
    assert q.quotas == {0: 20, 1: 20, 2: 20}
    q.check_integrity()


def test_fragments_go_to_the_longest_waiting_queue() -> None:
    bm = BlockManager(10)
    bm.register_model(0, 1, 1, 128)  # g = 1: 1 block per 32-token sequence
    bm.register_model(1, 3, 1, 128)  # g = 3: 3 blocks per sequence
    models = [UnitModel(i, f"m{i}", tiny_arch(), rate_rps=1.0) for i in range(2)]
    q = QuotaManager(models, bm, SchedulerConfig(avg_seq_tokens=32), "adaptive")
    assert q.quotas == {0: 2, 1: 8}  # rate x g = 1 : 3; model 1's 8 blocks hold 2 sequences
    q.adapt({0: 5}, {})  # the 2 spare blocks of model 1 become 2 sequences of model 0
    assert q.quotas == {0: 4, 1: 6} and (q.seq_cap(0), q.seq_cap(1)) == (4, 2)
    q.check_integrity()


def test_interval_gating() -> None:
    q, _ = manager(40, [1.0, 1.0], quota_adapt_interval_s=8.0)
    assert not q.due(0.0)  # the first call starts the clock
    assert not q.due(7.9)
    assert q.due(8.0) and not q.due(8.1) and q.due(16.0)
    fixed, _ = manager(40, [1.0, 1.0], mode="fixed")
    assert not fixed.due(0.0) and not fixed.due(100.0)
