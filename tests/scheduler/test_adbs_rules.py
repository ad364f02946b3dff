"""ADBS rules, each by a small scenario with exact expected jobs (fake clock, no cost model).

Block arithmetic in these tests: tiny_arch() has head_dim 128 -> 32 tokens per block, and
g = layers * kv_heads blocks per token block.
"""

from __future__ import annotations

from sched_helpers import Loop, req, tiny_arch, unit

from muxserve.scheduler import UnitModel
from muxserve.types import Phase


def two_models(prefill_share: float, decode_share: float, n: int = 2) -> list[UnitModel]:
    return [UnitModel(i, f"m{i}", tiny_arch(), prefill_share=prefill_share,
                      decode_share=decode_share) for i in range(n)]


def test_prefill_goes_before_decode() -> None:
    # prefill 10 parts + decode 5 parts > 12: only one fits, and the prefill wins
    s = unit(two_models(1.0, 0.5), num_blocks=64, avg_seq_tokens=32)
    loop = Loop(s)
    loop.run([req(0, 0, 0.0, out=3), req(1, 1, 0.5, out=2)])
    assert loop.jobs() == [
        (0.0, 0, "prefill", (0,)),
        (1.0, 1, "prefill", (1,)),  # model 0's decode is ready too, but waits
        (2.0, 0, "decode", (0,)),
        (2.0, 1, "decode", (1,)),
        (3.0, 0, "decode", (0,)),
    ]
    assert loop.finished() == [1, 0]


def test_prefills_round_robin_across_models() -> None:
    # a prefill takes 7 parts (two would be 14 > 12): one at a time; prefill cap 10 tokens = 1 req
    models = [UnitModel(i, f"m{i}", tiny_arch(), prefill_share=0.7, decode_share=0.1)
              for i in range(3)]
    s = unit(models, num_blocks=64, avg_seq_tokens=32, prefill_token_cap=10)
    loop = Loop(s)
    # model 0's requests are all older, yet the models take turns
    reqs = [req(3 * m + k, m, 0.1 * m, out=1) for m in range(3) for k in range(3)]
    loop.run(reqs)
    assert [(t, m) for t, m, _, _ in loop.jobs(Phase.PREFILL)] == [
        (0.0, 0), (1.0, 1), (2.0, 2), (3.0, 0), (4.0, 1), (5.0, 2), (6.0, 0), (7.0, 1), (8.0, 2)]
    assert sorted(loop.finished()) == list(range(9))


def test_decodes_round_robin_when_compute_is_short() -> None:
    # decode 6 parts: two of three models decode at once; the third is next in turn
    models = [UnitModel(i, f"m{i}", tiny_arch(), prefill_share=0.1, decode_share=0.6)
              for i in range(3)]
    s = unit(models, num_blocks=64, avg_seq_tokens=32)
    loop = Loop(s)
    loop.run([req(m, m, 0.0, out=4) for m in range(3)])
    decodes = [(t, m) for t, m, _, _ in loop.jobs(Phase.DECODE)]
    assert decodes == [(1.0, 0), (1.0, 1), (2.0, 2), (2.0, 0), (3.0, 1), (3.0, 2),
                       (4.0, 0), (4.0, 1), (5.0, 2)]


def decode_holdback_run(policy: str) -> Loop:
    # prefill 10 parts, decodes 3 parts each: a prefill fits only when no decode runs
    s = unit(two_models(1.0, 0.3), num_blocks=64, avg_seq_tokens=32, policy=policy)
    loop = Loop(s, duration=lambda j: 0.4 if (j.model_id, j.phase) == (1, Phase.DECODE) else 1.0)
    loop.run([req(0, 0, 0.0, out=5), req(1, 1, 0.0, out=8), req(2, 0, 2.5, out=1)])
    return loop


def test_decodes_are_held_back_while_a_prefill_waits() -> None:
    loop = decode_holdback_run("muxserve")
    assert loop.jobs()[:8] == [
        (0.0, 0, "prefill", (0,)),
        (1.0, 1, "prefill", (1,)),
        (2.0, 0, "decode", (0,)),
        (2.0, 1, "decode", (1,)),
        (2.4, 1, "decode", (1,)),
        # 2.5: request 2 arrives; its prefill does not fit beside model 0's decode.
        # 2.8: model 1's decode ends and is NOT restarted: compute frees up for the prefill
        (3.0, 0, "prefill", (2,)),
        (4.0, 0, "decode", (0,)),
        (4.0, 1, "decode", (1,)),
    ]


def test_fcfs_ablation_holds_decodes_back_too() -> None:
    # the original "fcfs": its prefill cannot get compute at 2.5 and 2.8 -> no decode starts
    loop = decode_holdback_run("fcfs")
    assert (3.0, 0, "prefill", (2,)) in loop.jobs()
    assert not [j for j in loop.jobs() if 2.5 <= j[0] < 3.0]


def strict_turn_run(policy: str) -> list[tuple[float, int]]:
    # model 0's prefill takes 10 parts, the others' 3: beside a small prefill (3 + 10 > 12) the
    # big one does not fit, but another small one does
    models = [UnitModel(0, "big", tiny_arch(), prefill_share=1.0, decode_share=0.1),
              UnitModel(1, "a", tiny_arch(), prefill_share=0.3, decode_share=0.1),
              UnitModel(2, "b", tiny_arch(), prefill_share=0.3, decode_share=0.1)]
    s = unit(models, num_blocks=64, avg_seq_tokens=32, policy=policy)
    loop = Loop(s)
    loop.run([req(0, 1, 0.0, out=2), req(1, 0, 0.1, out=2), req(2, 2, 0.2, out=2)])
    return [(t, m) for t, m, _, _ in loop.jobs(Phase.PREFILL)]


def test_adbs_skips_a_model_that_cannot_start_but_round_robin_waits_its_turn() -> None:
    # 0.1: model 0's turn, its prefill does not fit. ADBS lets model 2 go at 0.2; the
    # round-robin ablation keeps the turn on model 0 (until 1.0), then model 2 (at 2.0)
    assert strict_turn_run("muxserve") == [(0.0, 1), (0.2, 2), (1.2, 0)]
    assert strict_turn_run("round-robin") == [(0.0, 1), (1.0, 0), (2.0, 2)]


def test_prefill_token_cap_and_lone_long_prompt() -> None:
    s = unit(two_models(1.0, 0.2, n=1), num_blocks=64, avg_seq_tokens=32, prefill_token_cap=100)
    loop = Loop(s)
    loop.run([req(0, prompt=40, out=1), req(1, prompt=40, out=1), req(2, prompt=40, out=1),
              req(3, prompt=150, out=1), req(4, prompt=10, out=1)])
    prefills = [(t, j.req_ids, j.num_tokens) for t, j in loop.started]
    assert prefills == [(0.0, (0, 1), 80), (1.0, (2,), 40), (2.0, (3,), 150), (3.0, (4,), 10)]


def test_quota_adaptation_moves_blocks_to_the_starving_model() -> None:
    # 8 blocks, g = 1, 32-token sequences -> 1 block each: quotas 4/4 -> caps of 4 sequences.
    # model 0 runs one long request (utilisation 1/4); model 1 has 16 requests queued.
    s = unit(two_models(0.5, 0.1), num_blocks=8, avg_seq_tokens=32)
    assert s.quota.quotas == {0: 4, 1: 4} and s.quota.seq_cap(1) == 4
    loop = Loop(s)
    loop.run([req(0, 0, prompt=4, out=28)] + [req(k, 1, prompt=4, out=20) for k in range(1, 21)],
             until_s=8.0)
    assert (0.0, 1, "prefill", (1, 2, 3, 4)) in loop.jobs()
    assert max(len(j.req_ids) for _, j in loop.started if j.model_id == 1) == 4
    # at 8 s: model 0 (util 0.25) offers int((0.95 - 0.25) * 4) = 2 blocks; model 1 (util 1.0,
    # 16 waiting + 4 running >= 1.1 x 4) grows by max(1, 10% of its batch) = 1 sequence = 1 block
    assert s.quota.quotas == {0: 3, 1: 5} and s.quota.seq_cap(1) == 5
    assert (8.0, 1, "prefill", (5,)) in loop.jobs()
    assert sum(s.quota.quotas.values()) == 8


def test_ablations_do_not_use_kv_quotas() -> None:
    # the original's round-robin and fcfs cap each model by max_num_seqs only
    for policy in ("round-robin", "fcfs"):
        s = unit(two_models(0.5, 0.1), num_blocks=8, avg_seq_tokens=32, policy=policy)
        loop = Loop(s)
        loop.run([req(0, 0, prompt=4, out=28)]
                 + [req(k, 1, prompt=4, out=20) for k in range(1, 21)], until_s=9.0)
        assert s.quota.num_adaptations == 0 and s.quota.seq_cap(1) == 256
        assert max(len(j.req_ids) for _, j in loop.started if j.model_id == 1) == 7


def test_initial_quotas_follow_rate_times_g() -> None:
    models = [UnitModel(0, "small", tiny_arch(layers=1), rate_rps=3.0),
              UnitModel(1, "deep", tiny_arch(layers=4), rate_rps=1.0),
              UnitModel(2, "idle", tiny_arch(layers=2), rate_rps=0.0)]
    s = unit(models, num_blocks=700)
    # weights 3*1 : 1*4 : 0*2 -> 300 : 400 : 0
    assert s.quota.quotas == {0: 300, 1: 400, 2: 0}
    assert s.quota.seq_cap(2) == 1  # a model with no quota may still run one request alone


def test_a_prefill_blocked_by_memory_does_not_hold_decodes_back() -> None:
    # 3 blocks: request 0 grows to 69 tokens (3 blocks); request 1's 90-token prompt needs all 3.
    # Holding decodes back for it would deadlock: only request 0's decodes free memory.
    s = unit(two_models(1.0, 0.5, n=1), num_blocks=3, avg_seq_tokens=32)
    loop = Loop(s)
    loop.run([req(0, prompt=30, out=40), req(1, arrival_s=0.5, prompt=90, out=1)])
    decodes = [t for t, _, phase, _ in loop.jobs() if phase == "decode"]
    assert decodes == [float(t) for t in range(1, 40)]
    assert loop.jobs()[-1] == (40.0, 0, "prefill", (1,))
    assert loop.finished() == [0, 1]


def fcfs_vs_rr_run(policy: str) -> list[tuple[float, int]]:
    # prefill 0.7 (7 parts): one prefill at a time; a 10-token cap: one request per prefill
    models = [UnitModel(i, f"m{i}", tiny_arch(), prefill_share=0.7, decode_share=0.1)
              for i in range(2)]
    s = unit(models, num_blocks=64, avg_seq_tokens=32, prefill_token_cap=10, policy=policy)
    loop = Loop(s)
    loop.run([req(0, 0, 0.0, out=1), req(1, 0, 0.0, out=1), req(2, 1, 0.05, out=1)])
    return [(t, m) for t, m, _, _ in loop.jobs()]


def test_fcfs_ablation_serves_the_earliest_request() -> None:
    assert fcfs_vs_rr_run("fcfs") == [(0.0, 0), (1.0, 0), (2.0, 1)]
    # round-robin takes turns: model 1 is next after model 0
    assert fcfs_vs_rr_run("round-robin") == [(0.0, 0), (1.0, 1), (2.0, 0)]
