"""The compute-share rule: the original MuxServe's per-job overlap bound ("overlap", default) and
the total cap ("sum"), each by a small scenario with the paper's own shares."""

from __future__ import annotations

import random

import pytest
from sched_helpers import Loop, req, tiny_arch, unit

from muxserve.scheduler import Job, SchedulerConfig, UnitModel
from muxserve.scheduler.compute import PARTS, ComputeLedger
from muxserve.types import Phase

PREFILL, DECODE = Phase.PREFILL, Phase.DECODE


def job(job_id: int, model_id: int, phase: Phase, share: float) -> Job:
    return Job(job_id, model_id, phase, (job_id,), 1, 1, share)


def overlap_ledger(overload_parts: int = 2, seed: int = 0) -> ComputeLedger:
    return ComputeLedger(12, overload_parts=overload_parts, seed=seed)


def test_prefill_100_waits_for_a_running_decode_90() -> None:
    # the paper's condense-2000 unit: llm-11 [100, 90] with llm-6 [90, 30], overload 2 parts
    ledger = overlap_ledger()
    ledger.start(job(0, 0, DECODE, 0.9))
    # 1 free part + at most 2 shared ones = 3 parts: a 100% or 90% prefill cannot start ...
    assert not ledger.can_start(0, PREFILL, 1.0)
    assert not ledger.can_start(1, PREFILL, 0.9)
    # ... but llm-6's 30% decode can (120% in total), and then a 20% job on top of it (140%)
    assert ledger.can_start(1, DECODE, 0.3)
    ledger.start(job(1, 1, DECODE, 0.3))
    assert ledger.can_start(2, DECODE, 0.2) and not ledger.can_start(2, DECODE, 0.3)
    ledger.start(job(2, 2, DECODE, 0.2))
    assert ledger.used_parts == 14
    ledger.check_integrity()
    # the sum rule stops at 120%
    total = ComputeLedger(12)
    total.start(job(0, 0, DECODE, 0.9))
    total.start(job(1, 1, DECODE, 0.3))
    assert not total.can_start(2, DECODE, 0.2) and not total.can_start(2, DECODE, 0.1)


def test_overlap_frees_parts_by_identity() -> None:
    ledger = overlap_ledger()
    ledger.start(job(0, 0, DECODE, 0.9))
    ledger.start(job(1, 1, DECODE, 0.3))  # 1 free part + 2 of job 0's (or its own) parts
    ledger.end(0)
    ledger.check_integrity()
    # job 1's 3 parts stay busy (up to 2 of them counted twice if it overlapped itself)
    assert ledger.used_parts == 3 and PARTS - 3 <= len(ledger._free) <= PARTS - 1
    ledger.end(1)
    assert ledger.used_parts == 0 and sorted(ledger._free) == list(range(PARTS))
    ledger.check_integrity()


def test_overlap_zero_is_the_plain_100_percent_cap() -> None:
    ledger = overlap_ledger(overload_parts=0)
    ledger.start(job(0, 0, DECODE, 0.9))
    assert ledger.can_start(1, DECODE, 0.1) and not ledger.can_start(1, DECODE, 0.2)


@pytest.mark.parametrize("seed", range(5))
def test_overlap_rule_holds_under_random_traffic(seed: int) -> None:
    """can_start equals the rule computed from the parts' use counts; no part serves 3 jobs."""
    rng = random.Random(seed)
    ledger = overlap_ledger(seed=seed)
    running: list[int] = []
    for jid in range(400):
        if running and rng.random() < 0.45:
            ledger.end(running.pop(rng.randrange(len(running))))
        model, share = rng.randrange(6), rng.choice([0.1, 0.2, 0.3, 0.5, 0.9, 1.0])
        free = sum(r == 0 for r in ledger._refs)
        single = sum(r < 2 for r in ledger._refs)
        expect = (not ledger.busy(model, DECODE)
                  and free + min(2, single) >= round(share * PARTS))
        assert ledger.can_start(model, DECODE, share) == expect
        if expect:
            ledger.start(job(jid, model, DECODE, share))
            running.append(jid)
        ledger.check_integrity()


@pytest.mark.parametrize(("rule", "decodes_at_1s"), [("overlap", [0, 1, 2]), ("sum", [0, 1])])
def test_unit_starts_a_third_decode_only_under_the_overlap_rule(rule: str,
                                                                decodes_at_1s: list[int]) -> None:
    shares = [(0.5, 0.9), (0.3, 0.3), (0.2, 0.2)]  # (prefill, decode); the prefills fill 100%
    models = [UnitModel(i, f"m{i}", tiny_arch(), prefill_share=p, decode_share=d)
              for i, (p, d) in enumerate(shares)]
    s = unit(models, num_blocks=64, avg_seq_tokens=32, compute_rule=rule)
    loop = Loop(s)
    loop.run([req(i, i, out=2) for i in range(3)])
    assert [m for t, m, ph, _ in loop.jobs() if t == 0.0 and ph == "prefill"] == [0, 1, 2]
    # decode 90% + 30% = 120%; a 20% decode overlaps 2 parts: the original starts it too
    assert [m for t, m, ph, _ in loop.jobs() if t == 1.0 and ph == "decode"] == decodes_at_1s


@pytest.mark.parametrize("rule", ["overlap", "sum"])
def test_unit_prefill_waits_for_the_running_decode(rule: str) -> None:
    """A 100% prefill arriving while the model's 90% decode runs starts when that step ends;
    the next decode is held back meanwhile (ADBS) -- under both rules, as in the original."""
    models = [UnitModel(0, "llm-11", tiny_arch(), prefill_share=1.0, decode_share=0.9),
              UnitModel(1, "llm-6", tiny_arch(), prefill_share=0.9, decode_share=0.3)]
    s = unit(models, num_blocks=64, avg_seq_tokens=32, compute_rule=rule)
    loop = Loop(s)
    loop.run([req(0, 0, 0.0, out=3), req(1, 0, 1.5, out=1)])
    assert loop.jobs() == [(0.0, 0, "prefill", (0,)), (1.0, 0, "decode", (0,)),
                           (2.0, 0, "prefill", (1,)), (3.0, 0, "decode", (0,))]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"compute_rule": "total"}, "unknown compute_rule 'total'; valid: overlap, sum"),
     ({"overload_parts": 11}, r"overload_parts must be in \[0, 10\], got 11")],
)
def test_bad_compute_rule_config_is_rejected(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SchedulerConfig(**kwargs)  # type: ignore[arg-type]


def test_spatial_and_temporal_do_not_oversubscribe() -> None:
    models = [UnitModel(i, f"m{i}", tiny_arch(), decode_share=0.5) for i in range(2)]
    assert unit(models, num_blocks=64, policy="temporal").ledger.overload_parts is None
    assert unit(models, num_blocks=64, policy="spatial").ledger.overload_parts is None
    assert unit(models, num_blocks=64).ledger.overload_parts == 2
    assert unit(models, num_blocks=64, compute_rule="sum").ledger.overload_parts is None
