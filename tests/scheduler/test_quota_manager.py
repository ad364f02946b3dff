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
    q, _ = manager(100, [1.0, 3.0])
    assert q.quotas == {0: 25, 1: 75} and (q.seq_cap(0), q.seq_cap(1)) == (25, 50)  # max_num_seqs
    none, _ = manager(100, [1.0, 3.0], mode="none")
    assert none.seq_cap(0) == 50


def test_donor_gives_to_busy_model_with_a_long_queue() -> None:
    q, _ = manager(40, [1.0, 1.0])  # 20 / 20
    for _ in range(4):
        q.record_decode(0, 5)  # util 0.25
        q.record_decode(1, 20)  # util 1.0
    q.adapt({0: 0, 1: 30})
    give = int((0.95 - 0.25) * 20)  # 14
    assert q.quotas == {0: 20 - give, 1: 20 + give}
    assert q.mean_batch(0) == 0.0  # measurements restart after each adaptation


def test_donation_never_drops_below_blocks_in_use() -> None:
    q, bm = manager(40, [1.0, 1.0])
    bm.allocate(1, 0, 32 * 18)  # model 0 holds 18 of its 20 blocks, but decodes little
    q.record_decode(0, 1)
    q.record_decode(1, 20)
    q.adapt({1: 30})
    assert q.quotas == {0: 18, 1: 22}


def test_short_queue_or_low_use_receives_nothing_and_leftover_goes_to_longest_queue() -> None:
    q, _ = manager(60, [1.0, 1.0, 1.0])  # 20 each
    q.record_decode(0, 2)  # util 0.1: donor of int(0.85 * 20) = 17
    q.record_decode(1, 20)  # util 1.0 but queue 5 < 1.1 * 20: no receiver
    q.record_decode(2, 4)  # util 0.2, donor of int(0.75 * 20) = 15, queue 9 is the longest
    q.adapt({0: 0, 1: 5, 2: 9})
    assert q.quotas == {0: 3, 1: 20, 2: 5 + 32}
    q.check_integrity()


def test_no_queue_no_change_and_interval_gating() -> None:
    q, _ = manager(40, [1.0, 1.0], quota_adapt_interval_s=8.0)
    q.record_decode(0, 1)
    assert not q.maybe_adapt(0.0, {})  # first call starts the clock
    assert not q.maybe_adapt(7.9, {0: 3})
    assert q.maybe_adapt(8.0, {})  # adapted, but with no queue nothing moves
    assert q.quotas == {0: 20, 1: 20} and q.num_adaptations == 1
    fixed, _ = manager(40, [1.0, 1.0], mode="fixed")
    assert not fixed.maybe_adapt(0.0, {}) and not fixed.maybe_adapt(100.0, {0: 9})
