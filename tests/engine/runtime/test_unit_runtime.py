"""The unit runtime end to end on tiny random models: real unit and worker processes.

One unit per mode (module-scoped; ~10-20 s to start on a busy 2-core machine). Checks: outputs
under concurrency equal MultiModelLLM alone in all three modes; each mode's concurrency; stop
rules and bad input over the message boundary; one shared KV pool and shared weights; a long
mixed run with aborts and preemptions leaks no block; a killed worker fails only its in-flight
requests, is restarted, and the other model keeps serving.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
from collections.abc import Iterator

import pytest
from runtime_helpers import (
    GEMMA,
    greedy,
    proc_alive,
    prompt,
    reference,
    reference_outputs,
    shared_mappings,
    shutdown_and_check,
    unit_config,
    wait_for,
)

from muxserve.engine.protocol import GenerateRequest, TokenEvent
from muxserve.engine.runtime import UnitClient, UnitConfig, UnitDeadError, UnitRuntime
from muxserve.types import SamplingParams

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module", params=["muxserve", "spatial", "temporal"])
def unit(request: pytest.FixtureRequest) -> Iterator[UnitRuntime]:
    rt = UnitRuntime(unit_config(request.param, integrity_checks=True))
    rt.start()
    try:
        yield rt
    finally:
        shutdown_and_check(rt)


# tests of mode-independent paths run on the muxserve unit only (the same module-scoped unit)
muxserve_only = pytest.mark.parametrize("unit", ["muxserve"], indirect=True)


def mixed_requests(tag: str) -> list[GenerateRequest]:
    return [GenerateRequest(f"{tag}{i}-{m}", m, prompt(i + (m == "gemma"), 3 + 9 * i),
                            greedy(6 + 3 * i))
            for i in range(4) for m in ("llama", "gemma")]


def test_outputs_under_concurrency_equal_outputs_alone(unit: UnitRuntime) -> None:
    reqs = mixed_requests("eq")
    want = reference(reqs)
    outs = unit.run_requests(reqs, timeout_s=120)
    assert {o.req_id: o.token_ids for o in outs} == want
    assert all(o.finish_reason == "length" and o.error is None for o in outs)
    assert [o.prompt_tokens for o in outs] == [len(r.prompt_token_ids) for r in reqs]
    info = unit.info()
    assert info["kv_blocks_used"] == 0 and info["integrity"] == "ok"
    jobs = unit.jobs()
    assert {(j.model, j.phase) for j in jobs} == {(m, p) for m in ("llama", "gemma")
                                                 for p in ("prefill", "decode")}
    assert sum(j.num_tokens for j in jobs if j.phase == "prefill") == sum(
        len(r.prompt_token_ids) for r in reqs)  # no preemption at this size
    assert all(0 < j.compute_s <= j.end_s - j.start_s for j in jobs)
    assert unit.jobs() == []  # collected
    # the mode shapes concurrency: temporal runs one job at a time on all cores, spatial keeps
    # each model on its own core, muxserve overlaps jobs of different models/phases
    overlaps = sum(a.start_s < b.end_s and b.start_s < a.end_s
                   for i, a in enumerate(jobs) for b in jobs[i + 1:])
    cores = {j.model: set() for j in jobs}
    for j in jobs:
        cores[j.model] |= set(j.cores)
    n = len(unit.info()["cores"])
    if unit.config.mode == "temporal":
        assert info["max_running_jobs"] == 1 and overlaps == 0
        assert all(len(j.cores) == n for j in jobs)
    elif unit.config.mode == "muxserve":
        assert info["max_running_jobs"] >= 2 and overlaps > 0
        assert all(len(j.cores) == 1 for j in jobs) or n == 1  # one-core shares by default
    else:
        assert 1 <= info["max_running_jobs"] <= 2  # one job per model at a time
        assert n < 2 or not cores["llama"] & cores["gemma"]
    assert unit.max_context("gemma") == 256


def test_stop_token_seeds_and_bad_input(unit: UnitRuntime) -> None:
    base = GenerateRequest("base", "llama", prompt(5, 20), greedy(10))
    full = reference([base])["base"]
    stop_at = full[3]
    first = full.index(stop_at)
    sampled = SamplingParams(max_tokens=8, temperature=0.8, top_k=50, seed=11)
    reqs = [GenerateRequest("stop", "llama", base.prompt_token_ids,
                            greedy(10, stop_token_ids=(stop_at,))),
            GenerateRequest("s1", "gemma", prompt(2, 9), sampled),
            GenerateRequest("s2", "gemma", prompt(2, 9), sampled),
            GenerateRequest("nomodel", "mistral", (1, 2), greedy()),
            GenerateRequest("vocab", "llama", (1, 300), greedy()),
            GenerateRequest("toolong", "llama", prompt(0, 256), greedy()),
            GenerateRequest("empty", "gemma", (), greedy())]
    outs = {o.req_id: o for o in unit.run_requests(reqs, timeout_s=60)}
    assert outs["stop"].token_ids == full[:first + 1] and outs["stop"].finish_reason == "stop"
    assert outs["s1"].token_ids == outs["s2"].token_ids and len(outs["s1"].token_ids) == 8
    assert "unknown model 'mistral'" in (outs["nomodel"].error or "")
    assert "[300]" in (outs["vocab"].error or "")
    assert "context window is 256" in (outs["toolong"].error or "")
    assert "prompt is empty" in (outs["empty"].error or "")
    assert {outs[k].finish_reason for k in ("nomodel", "vocab", "toolong", "empty")} == {"error"}
    # stop strings, streamed as text deltas: the same tokens, text and reason as MultiModelLLM
    # (random byte-level models: gemma's text has "t;;" in it, llama's is all "|")
    stops = [GenerateRequest("str-g", "gemma", prompt(3, 12), greedy(24, stop=("t;;",))),
             GenerateRequest("str-l", "llama", prompt(0, 12), greedy(24, stop=("|||",)))]
    ref = reference_outputs(stops)
    for o in unit.run_requests(stops, timeout_s=60):
        want_out = ref[o.req_id]
        assert (o.token_ids, o.text, o.finish_reason) == (
            tuple(want_out.token_ids), want_out.text, want_out.finish_reason)
        assert o.finish_reason == "stop" and len(o.token_ids) < 24
    # the seeded draw is the same in every mode: it depends on (seed, step), not on the worker
    again = unit.run_requests([GenerateRequest("s3", "gemma", prompt(2, 9), sampled)])
    assert again[0].token_ids == outs["s1"].token_ids
    assert unit.info()["kv_blocks_used"] == 0


def test_kv_pool_is_one_allocation_and_weights_are_shared(unit: UnitRuntime) -> None:
    info = unit.info()
    assert unit.pid is not None
    pids = [unit.pid, *info["workers"].values()]
    pools = [shared_mappings(p, info["kv_pool_bytes"]) for p in pids]
    common = set.intersection(*pools)
    assert len(common) == 1, f"KV pool mappings per process: {pools}"  # the same shm file
    unit_maps = _file_maps(unit.pid)
    for label, pid in info["workers"].items():
        model = label.split("/")[0]
        shared = sum(size for key, size in _file_maps(pid).items() if key in unit_maps)
        # the worker maps the unit's own storages: pool + at least this model's weights
        assert shared >= info["kv_pool_bytes"] + info["weight_bytes"][model], (label, shared)


def _file_maps(pid: int) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 6 and parts[5].startswith("/dev/shm") or (
                    len(parts) >= 6 and "torch_" in parts[5]):
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                key = (parts[3], int(parts[4]))
                out[key] = max(out.get(key, 0), hi - lo)
    return out


def test_long_mixed_run_with_aborts_leaks_no_block(unit: UnitRuntime) -> None:
    rng = random.Random(7)
    reqs = []
    for i in range(48):
        m = rng.choice(("llama", "gemma"))
        params = greedy(rng.randint(1, 40)) if rng.random() < 0.7 else SamplingParams(
            max_tokens=rng.randint(1, 30), temperature=1.0, top_p=0.9, seed=i,
            stop_token_ids=(rng.randrange(300),))
        reqs.append(GenerateRequest(f"mix{i}", m, prompt(i, rng.randint(1, 120)), params))
    abort_ids = {r.req_id for r in rng.sample(reqs, 12)}
    ends: dict[str, TokenEvent] = {}
    tokens: dict[str, list[int]] = {r.req_id: [] for r in reqs}
    for r in reqs:
        unit.submit(r)
    aborted = 0
    while len(ends) < len(reqs):
        for ev in unit.events(timeout_s=1.0):
            assert ev.req_id not in ends, f"event after the end of {ev.req_id}"
            tokens[ev.req_id].extend(ev.token_ids)
            if ev.finished:
                ends[ev.req_id] = ev
            elif ev.req_id in abort_ids and aborted < len(abort_ids):
                unit.abort(ev.req_id)  # mid-run, after its first tokens
                aborted += 1
        for rid in list(abort_ids - set(ends))[:2]:
            unit.abort(rid)  # some before any token
    wait_for(lambda: unit.info()["live_requests"] == 0, 10, "unit to drain")
    info = unit.info()
    assert info["kv_blocks_used"] == 0 and info["integrity"] == "ok", info
    assert info["preemptions"] > 0  # the pool ran out: preempted requests were recomputed
    assert {e.finish_reason for e in ends.values()} <= {"stop", "length", "abort"}
    assert any(e.finish_reason == "abort" for e in ends.values())
    done = [r for r in reqs if ends[r.req_id].finish_reason == "length" and r.params.greedy]
    want = reference(done)
    assert {r.req_id: tuple(tokens[r.req_id]) for r in done} == want
    stats = unit.stats()
    assert stats.kv_blocks_used == 0 and all(m.running == m.waiting == 0 for m in stats.models)


@muxserve_only
def test_unit_client_streams_and_cancels(unit: UnitRuntime) -> None:
    client = UnitClient(unit)
    req = GenerateRequest("stream", "gemma", prompt(1, 12), greedy(15))
    want = reference([req])["stream"]

    async def main() -> tuple[list[TokenEvent], list[TokenEvent]]:
        evs = [ev async for ev in client.generate(req)]
        cut = []
        async for ev in client.generate(GenerateRequest("cut", "llama", prompt(2, 5),
                                                        greedy(200))):
            cut.append(ev)
            if len(cut) == 3:
                break  # leaving the stream aborts the request
        return evs, cut

    try:
        evs, cut = asyncio.run(main())
        assert tuple(t for e in evs for t in e.token_ids) == want
        assert evs[-1].finish_reason == "length" and evs[-1].completion_tokens == 15
        assert not any(e.finished for e in evs[:-1]) and len(cut) == 3
        # the aborted request's blocks return once its in-flight job ends
        wait_for(lambda: unit.info()["kv_blocks_used"] == 0, 10, "the abort")
        assert unit.info()["live_requests"] == 0
        assert client.models() == ["llama", "gemma"]
        assert client.tokenizer("gemma").decode([104, 105]) == "hi"
        assert client.stats().kv_blocks_used == 0
    finally:
        unit.set_event_handler(None)


@muxserve_only
@pytest.mark.parametrize(("victim", "phase", "other"), [("llama", "decode", "gemma"),
                                                        ("gemma", "prefill", "llama")])
def test_killed_worker_fails_its_requests_restarts_and_others_keep_serving(
        unit: UnitRuntime, victim: str, phase: str, other: str) -> None:
    rt = unit
    label = f"{victim}/{phase}"
    before = {m.model: m.worker_restarts for m in rt.stats().models}
    pid = rt.info()["workers"][label]
    os.kill(pid, signal.SIGSTOP)  # freeze it so that its next job stays in flight
    try:
        victims = [GenerateRequest(f"v{phase}{i}", victim, prompt(i, 10 + i), greedy(30))
                   for i in range(3)]
        others = [GenerateRequest(f"o{phase}{i}", other, prompt(i, 7 + i), greedy(20))
                  for i in range(3)]
        for r in victims + others:
            rt.submit(r)
        wait_for(lambda: rt.info()["inflight"][label] > 0, 30, f"a {label} job")
        in_flight = rt.info()["inflight"][label]
    finally:
        os.kill(pid, signal.SIGKILL)
    ends: dict[str, TokenEvent] = {}
    got: dict[str, list[int]] = {r.req_id: [] for r in victims + others}
    wait_for(lambda: _collect(rt, ends, got) == 6, 60, "all six requests to end")
    failed = [r for r in victims if ends[r.req_id].finish_reason == "error"]
    assert len(failed) == in_flight  # exactly the requests of the job the worker died in
    for r in failed:
        e = ends[r.req_id]
        assert f"worker for model '{victim}' ({phase}) died (killed by SIGKILL)" in (e.error or "")
        # a dead prefill produced no token; a dead decode leaves the prefill's first token
        assert len(got[r.req_id]) == (1 if phase == "decode" else 0)
    survivors = [r for r in victims if r not in failed] + others
    want = reference(survivors)
    assert {r.req_id: tuple(got[r.req_id]) for r in survivors} == want
    info = rt.info()
    assert info["restarts"][label] >= 1 and info["workers"][label] != pid
    assert info["kv_blocks_used"] == 0 and info["integrity"] == "ok"
    after = {m.model: m.worker_restarts for m in rt.stats().models}
    assert after == {victim: before[victim] + 1, other: before[other]}
    again = [GenerateRequest(f"after{phase}", victim, prompt(4, 9), greedy(12))]
    assert rt.run_requests(again, timeout_s=60)[0].token_ids == reference(again)[again[0].req_id]


def _collect(rt: UnitRuntime, ends: dict[str, TokenEvent], got: dict[str, list[int]]) -> int:
    for ev in rt.events(timeout_s=0.2):
        if ev.req_id not in got:
            continue  # a straggler of an earlier test
        got[ev.req_id].extend(ev.token_ids)
        if ev.finished:
            ends[ev.req_id] = ev
    return len(ends)


@pytest.mark.timeout(120)
def test_killed_unit_leaves_no_orphan_workers() -> None:
    rt = UnitRuntime(UnitConfig.of({"gemma": GEMMA}, num_kv_blocks=50, block_numel=512))
    rt.start()
    try:
        pids = list(rt.info()["workers"].values())
        assert rt.pid is not None and len(pids) == 2
        os.kill(rt.pid, signal.SIGKILL)
        # the workers see their pipe close and exit; the client fails what was open
        wait_for(lambda: rt.dead, 10, "the client to notice")
        wait_for(lambda: not any(proc_alive(p) for p in pids), 10, "the workers to exit")
        with pytest.raises(UnitDeadError):
            rt.submit(GenerateRequest("late", "gemma", (1, 2), greedy()))
    finally:
        rt.shutdown()


@pytest.mark.timeout(120)
def test_unit_that_cannot_load_a_model_fails_start_with_its_error() -> None:
    rt = UnitRuntime(UnitConfig.of({"x": "random:no-such-preset"}))
    with pytest.raises(RuntimeError, match="unit failed to start: ValueError: unknown random "
                                           "model 'no-such-preset'"):
        rt.start()
    assert rt.dead and rt.pid is None  # nothing left running


@muxserve_only
def test_run_requests_follows_arrivals_and_aborts_on_timeout(unit: UnitRuntime) -> None:
    reqs = [GenerateRequest(f"arr{i}", "llama", prompt(i, 4), greedy(2), arrival_s=0.3 * i)
            for i in range(4)]
    outs = unit.run_requests(reqs, follow_arrivals=True, timeout_s=60)
    t0 = outs[0].submit_s
    for o, r in zip(outs, reqs, strict=True):
        assert o.submit_s - t0 >= r.arrival_s - 0.02  # not sent before its arrival
        assert o.ttft_s is not None and 0 < o.ttft_s <= o.latency_s
    long = [GenerateRequest("slow", "gemma", prompt(1, 4), greedy(240))]
    with pytest.raises(TimeoutError, match="1 of 1 requests unfinished"):
        unit.run_requests(long, timeout_s=0.05)
    wait_for(lambda: unit.info()["kv_blocks_used"] == 0, 10, "the timed-out request's abort")
    unit.events()  # drop its abort event


@pytest.mark.timeout(240)
def test_workers_with_packed_bf16_weights_give_the_tokens_of_plain_weights() -> None:
    from muxserve.engine.models.linear import bf16_packing_available
    if not bf16_packing_available():
        pytest.skip("this torch build/CPU has no oneDNN bf16 matmul")
    reqs = mixed_requests("pk")[:4]
    want = reference(reqs, dtype="bfloat16", pack_weights=False)
    rt = UnitRuntime(unit_config("muxserve", dtype="bfloat16", pack_weights=True))
    rt.start()
    try:
        outs = rt.run_requests(reqs, timeout_s=120)
    finally:
        shutdown_and_check(rt)
    assert {o.req_id: o.token_ids for o in outs} == want
    assert all(o.error is None for o in outs)
