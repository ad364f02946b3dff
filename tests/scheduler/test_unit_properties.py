"""Property test: random workloads with random aborts and early stops, under every policy, keep
the scheduler consistent and conserve requests, tokens and KV blocks."""

from __future__ import annotations

import heapq
import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st
from sched_helpers import req, tiny_arch

from muxserve.kvcache import BlockManager
from muxserve.scheduler import POLICIES, JobResult, SchedulerConfig, UnitModel, UnitScheduler


@settings(max_examples=60, deadline=None)
@given(policy=st.sampled_from(POLICIES), seed=st.integers(0, 2**32 - 1),
       num_blocks=st.integers(12, 60), n=st.integers(1, 40), ids=st.booleans())
def test_random_runs_conserve_everything(policy: str, seed: int, num_blocks: int, n: int,
                                         ids: bool) -> None:
    rng = random.Random(seed)
    models = [UnitModel(i, f"m{i}", tiny_arch(layers=1 + i % 2, head_dim=(64, 128, 256)[i]),
                        rate_rps=rng.uniform(0, 3), prefill_share=rng.choice([0.2, 0.5, 1.0]),
                        decode_share=rng.choice([0.1, 0.3, 0.7]), max_num_seqs=rng.randint(1, 6))
              for i in range(3)]
    s = UnitScheduler(models, BlockManager(num_blocks, track_block_ids=ids),
                      SchedulerConfig(policy=policy, avg_seq_tokens=rng.randint(8, 64),
                                      prefill_token_cap=rng.randint(16, 200),
                                      quota_adapt_interval_s=rng.uniform(0.5, 4)))
    reqs = []
    for i in range(n):
        r = req(i, rng.randrange(3), rng.uniform(0, 10), prompt=rng.randint(1, 60),
                out=rng.randint(1, 30))
        if s.bm.blocks_needed(r.model_id, r.prompt_tokens + r.max_output_tokens - 1) <= num_blocks:
            reqs.append(r)
    reqs.sort(key=lambda r: r.arrival_s)
    aborts = {r.req_id: r.arrival_s + rng.uniform(0, 8) for r in reqs if rng.random() < 0.2}
    tokens: Counter[int] = Counter()
    finished: set[int] = set()
    aborted: set[int] = set()
    stopped: set[int] = set()
    running: list = []
    now, i = 0.0, 0
    for _ in range(100_000):
        if i == len(reqs) and not running and not s.has_unfinished():
            break
        times = [reqs[i].arrival_s] if i < len(reqs) else []
        times += [running[0][0]] if running else []
        times += [t for r, t in aborts.items() if t > now and r not in aborted]
        assert times, "stuck: unfinished requests but nothing runs"
        now = min(times)
        while running and running[0][0] <= now:
            _, _, job = heapq.heappop(running)
            stop = tuple(r for r in job.req_ids if r not in aborted and rng.random() < 0.05)
            ev = s.update(job, JobResult(job.job_id, stop), now)
            assert not set(ev.token_req_ids) & (aborted | finished)
            tokens.update(ev.token_req_ids)
            finished.update(ev.finished_req_ids)
            assert set(stop) <= set(ev.finished_req_ids)
            stopped.update(stop)
            s.check_integrity()
        while i < len(reqs) and reqs[i].arrival_s <= now:
            s.add_request(reqs[i], now)
            i += 1
        for r, t in aborts.items():
            if t <= now and r not in aborted and r not in finished and i > r_index(reqs, r):
                s.abort(r)
                aborted.add(r)
        for job in s.schedule(now):
            assert s.ledger.used_parts <= s.ledger.capacity_parts
            heapq.heappush(running, (now + rng.choice([0.5, 1.0, 1.5]), job.job_id, job))
    assert not s.has_unfinished() and s.bm.used_blocks() == 0 and s.num_running_jobs() == 0
    assert finished | aborted == {r.req_id for r in reqs}
    for r in reqs:
        if r.req_id in stopped:
            assert 1 <= tokens[r.req_id] <= r.max_output_tokens
        elif r.req_id in finished:
            assert tokens[r.req_id] == r.max_output_tokens
    s.check_integrity()


def r_index(reqs: list, req_id: int) -> int:
    return next(k for k, r in enumerate(reqs) if r.req_id == req_id)
