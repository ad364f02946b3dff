"""Request lifecycle: preemption + recompute, early stops, aborts, conservation, policies."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from sched_helpers import Loop, req, tiny_arch, unit

from muxserve.kvcache import BlockManager
from muxserve.scheduler import POLICIES, JobResult, SchedulerConfig, UnitModel, UnitScheduler
from muxserve.scheduler.compute import parts_of
from muxserve.types import Phase


def one_model(**kw: object) -> list[UnitModel]:
    return [UnitModel(0, "m0", tiny_arch(), **kw)]  # type: ignore[arg-type]


def test_preemption_frees_blocks_and_recomputes_prompt_plus_generated() -> None:
    # 3 blocks of 32 tokens; two 30-token prompts each grow past 32 tokens at their 3rd decode
    s = unit(one_model(), num_blocks=3, avg_seq_tokens=32)
    loop = Loop(s)
    loop.run([req(0, prompt=30, out=10), req(1, prompt=30, out=10)])
    jobs = [(t, j.phase.value, j.req_ids, j.num_tokens) for t, j in loop.started]
    assert jobs[:4] == [(0.0, "prefill", (0, 1), 60), (1.0, "decode", (0, 1), 2),
                        (2.0, "decode", (0, 1), 2),
                        (3.0, "decode", (0,), 1)]  # no block for 1's 33rd token: preempted
    preempted = [(t, ev.preempted_req_ids) for t, ev in loop.events if ev.preempted_req_ids]
    assert preempted == [(4.0, (1,))]  # reported by the next update()
    # request 1 generated 3 tokens; it is re-prefilled with 30 + 3 tokens once 0 finishes
    assert (10.0, "prefill", (1,), 33) in jobs
    tokens = Counter(r for _, ev in loop.events for r in ev.token_req_ids)
    firsts = Counter(r for _, ev in loop.events for r in ev.first_token_req_ids)
    assert tokens == {0: 10, 1: 10} and firsts == {0: 1, 1: 1}
    assert loop.finished() == [0, 1] and loop.now_s == 17.0
    assert s.num_preemptions == 1 and s.bm.used_blocks() == 0


def test_decode_preempts_the_newest_requests_first() -> None:
    s = unit(one_model(), num_blocks=4, avg_seq_tokens=32)
    loop = Loop(s)
    # four 32-token prompts fill the pool; at the first decode each needs a second block
    loop.run([req(i, prompt=32, out=2) for i in range(4)], until_s=1.0)
    assert loop.started[-1][1].req_ids == (0, 1)  # 3 then 2 preempted to make room
    assert [s.request_state(i).num_preemptions for i in range(4)] == [0, 0, 1, 1]
    assert s.queue_lens() == {0: 2}
    s.check_integrity()


def test_early_finish_named_by_the_result_frees_blocks() -> None:
    s = unit(one_model(), num_blocks=10, avg_seq_tokens=32)
    s.add_request(req(0, out=50), 0.0)
    s.add_request(req(1, out=50), 0.0)
    (job,) = s.schedule(0.0)
    ev = s.update(job, JobResult(job.job_id, finished_req_ids=(1,)), 1.0)
    assert ev.first_token_req_ids == (0, 1) and ev.finished_req_ids == (1,)
    assert s.bm.used_blocks() == 1 and s.num_active(0) == 1
    with pytest.raises(ValueError, match="outside the job"):
        (job,) = s.schedule(1.0)
        s.update(job, JobResult(job.job_id, finished_req_ids=(7,)), 2.0)


def test_abort_waiting_running_and_in_flight() -> None:
    s = unit(one_model(), num_blocks=10, avg_seq_tokens=160)  # 5 blocks a sequence: cap 2
    for i in range(4):
        s.add_request(req(i, out=5), 0.0)
    (prefill,) = s.schedule(0.0)
    assert prefill.req_ids == (0, 1)
    s.abort(3)  # waiting: simply dropped
    s.abort(1)  # inside the running prefill: blocks stay until the job ends
    assert s.bm.used_blocks() == 2
    ev = s.update(prefill, JobResult(prefill.job_id), 1.0)
    assert ev.token_req_ids == (0,) and s.bm.used_blocks() == 1
    s.abort(0)  # idle running: freed at once
    assert s.bm.used_blocks() == 0
    s.abort(0)  # already gone: ignored
    s.abort(12345)
    (job,) = s.schedule(1.0)
    assert job.req_ids == (2,)
    s.update(job, JobResult(job.job_id), 2.0)
    s.abort(2)
    assert not s.has_unfinished() and s.bm.used_blocks() == 0
    s.check_integrity()


def random_workload(rng: random.Random, n: int, models: int) -> list:
    return [req(i, rng.randrange(models), round(rng.uniform(0, 20), 1),
                prompt=rng.randint(1, 90), out=rng.randint(1, 40)) for i in range(n)]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conservation_under_pressure(policy: str, seed: int) -> None:
    rng = random.Random(seed)
    models = [UnitModel(i, f"m{i}", tiny_arch(layers=1 + i, head_dim=64 << i),
                        rate_rps=1.0 + i, prefill_share=rng.choice([0.3, 0.5, 1.0]),
                        decode_share=rng.choice([0.2, 0.4, 0.6]), max_num_seqs=8)
              for i in range(3)]
    s = unit(models, num_blocks=24, avg_seq_tokens=48, policy=policy,
             quota_adapt_interval_s=3.0, prefill_token_cap=128)
    loop = Loop(s, duration=lambda j: 0.5 if j.phase is Phase.DECODE else 0.3 + j.num_tokens / 200)
    reqs = random_workload(rng, 60, 3)
    cap = s.ledger.capacity_parts

    def on_update(job, ev) -> None:  # type: ignore[no-untyped-def]
        assert s.ledger.used_parts <= cap
        s.check_integrity()

    loop.run(reqs, until_s=15.0, on_update=on_update)
    arrived = {r.req_id for r in reqs if r.arrival_s <= loop.now_s}
    finished = set(loop.finished())
    assert finished | set(s.table.states) == arrived and not finished & set(s.table.states)
    loop.run([r for r in reqs if r.req_id not in arrived], on_update=on_update)  # drain
    tokens = Counter(r for _, ev in loop.events for r in ev.token_req_ids)
    firsts = Counter(r for _, ev in loop.events for r in ev.first_token_req_ids)
    assert sorted(loop.finished()) == list(range(60))
    assert tokens == {r.req_id: r.max_output_tokens for r in reqs}
    assert firsts == dict.fromkeys(range(60), 1)
    assert s.bm.used_blocks() == 0 and not s.has_unfinished() and s.num_running_jobs() == 0
    # no job runs before its requests arrived, and a (model, phase) never runs twice at once
    arrival = {r.req_id: r.arrival_s for r in reqs}
    assert all(arrival[r] <= t for t, j in loop.started for r in j.req_ids)
    s.check_integrity()


def test_temporal_runs_one_job_at_a_time_on_the_whole_unit() -> None:
    models = [UnitModel(i, f"m{i}", tiny_arch(), decode_share=0.3) for i in range(2)]
    s = unit(models, num_blocks=64, avg_seq_tokens=32, policy="temporal")
    loop = Loop(s)
    loop.run([req(0, 0, 0.0, out=3), req(1, 1, 0.1, out=2), req(2, 0, 0.2, out=1)])
    assert loop.jobs() == [(0.0, 0, "prefill", (0,)), (1.0, 1, "prefill", (1,)),
                           (2.0, 0, "prefill", (2,)), (3.0, 1, "decode", (1,)),
                           (4.0, 0, "decode", (0,)), (5.0, 0, "decode", (0,))]
    assert {j.share for _, j in loop.started} == {1.0}


def test_spatial_gives_each_model_its_own_slice() -> None:
    models = [UnitModel(0, "a", tiny_arch(), decode_share=0.75),
              UnitModel(1, "b", tiny_arch(), decode_share=0.25)]
    s = unit(models, num_blocks=64, avg_seq_tokens=32, policy="spatial")
    loop = Loop(s)
    loop.run([req(0, 0, out=3), req(1, 1, out=2), req(2, 0, 0.5, out=1)])
    assert {(j.model_id, j.share) for _, j in loop.started} == {(0, 0.75), (1, 0.25)}
    # one vLLM-style engine per model: model 0's prefill of request 2 waits for its decode
    assert loop.jobs() == [(0.0, 0, "prefill", (0,)), (0.0, 1, "prefill", (1,)),
                           (1.0, 0, "prefill", (2,)), (1.0, 1, "decode", (1,)),
                           (2.0, 0, "decode", (0,)), (3.0, 0, "decode", (0,))]


def test_oversubscription_is_bounded() -> None:
    assert [parts_of(x) for x in (0.05, 0.1, 0.3, 0.31, 1.0)] == [1, 1, 3, 4, 10]
    models = [UnitModel(i, f"m{i}", tiny_arch(), prefill_share=0.4, decode_share=0.4)
              for i in range(4)]
    s = unit(models, num_blocks=64, avg_seq_tokens=32, oversubscription=0.2)
    for i in range(4):
        s.add_request(req(i, i), 0.0)
    jobs = s.schedule(0.0)
    assert [j.model_id for j in jobs] == [0, 1, 2]  # 3 x 4 parts = 12 <= 12; a 4th would be 16
    assert sum(j.share for j in jobs) == pytest.approx(1.2)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SchedulerConfig(policy="lottery"),
         "unknown scheduling policy 'lottery'; valid: muxserve, spatial, temporal"),
        (lambda: SchedulerConfig(oversubscription=-0.1), "oversubscription must be in"),
        (lambda: UnitModel(0, "m", tiny_arch(), decode_share=1.5), "decode_share must be in"),
        (lambda: req(0, prompt=0), "prompt_tokens must be >= 1"),
        (lambda: UnitScheduler([], BlockManager(4)), "at least one model"),
    ],
)
def test_bad_config_is_rejected(make, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_requests_and_results_are_rejected() -> None:
    s = unit(one_model(), num_blocks=4, avg_seq_tokens=32)
    with pytest.raises(ValueError, match=r"unknown model_id 3; this unit serves \[0\]"):
        s.add_request(req(0, model_id=3), 0.0)
    with pytest.raises(ValueError, match="need 5 KV blocks, the pool has 4"):
        s.add_request(req(0, prompt=100, out=40), 0.0)
    s.add_request(req(0), 0.0)
    with pytest.raises(ValueError, match="already queued or running"):
        s.add_request(req(0), 0.0)
    (job,) = s.schedule(0.0)
    s.update(job, JobResult(job.job_id), 1.0)
    with pytest.raises(ValueError, match=f"job {job.job_id} is not running"):
        s.update(job, JobResult(job.job_id), 1.0)
    s.check_integrity()


def test_block_manager_layout_mismatch_is_rejected() -> None:
    bm = BlockManager(16)
    bm.register_model(0, num_layers=3, num_kv_heads=1, head_dim=128)
    with pytest.raises(ValueError, match="different layout"):
        UnitScheduler(one_model(), bm)
