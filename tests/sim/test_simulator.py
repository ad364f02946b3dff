"""The discrete-event simulator: golden scenarios, event priority, determinism, conservation."""

from __future__ import annotations

import pytest

from muxserve.config.devices import GIB, get_device
from muxserve.config.models import ModelArch, get_model_arch
from muxserve.costmodel.base import CostModel
from muxserve.scheduler import SchedulerConfig, UnitModel
from muxserve.sim.events import Event, EventKind, EventQueue
from muxserve.sim.simulator import (
    SimConfig,
    Simulator,
    SimUnit,
    isolated_latency_s,
    kv_pool_blocks,
    min_tp,
)
from muxserve.sim.workload import LengthSampler, TraceRequest, synthesize

ARCH = get_model_arch("smollm2-135m")


class ConstCost(CostModel):
    """Every prefill takes prefill_s, every decode step decode_s, whatever the batch or share."""

    def __init__(self, prefill_s: float = 0.1, decode_s: float = 0.01) -> None:
        self.device = get_device("a100-80g")
        self.prefill_s, self.decode_s = prefill_s, decode_s

    def prefill_ms(self, arch: ModelArch, num_seqs: int, num_tokens: int, share: float,
                   tp: int = 1) -> float:
        return self.prefill_s * 1000.0

    def decode_ms(self, arch: ModelArch, batch: int, context_tokens: int, share: float,
                  tp: int = 1) -> float:
        return self.decode_s * 1000.0


def one_unit(n_models: int = 1, kv_blocks: int = 20000) -> list[SimUnit]:
    ms = tuple(UnitModel(i, f"m{i}", ARCH, prefill_share=1.0, decode_share=1.0 / n_models)
               for i in range(n_models))
    return [SimUnit(ms, 1, kv_blocks=kv_blocks)]


def run(trace: list[TraceRequest], policy: str = "muxserve", n_models: int = 1,
        cost: CostModel | None = None, **cfg: object):
    config = SimConfig(scheduler=SchedulerConfig(policy=policy), **cfg)  # type: ignore[arg-type]
    return Simulator(one_unit(n_models), cost or ConstCost(), trace, config).run()


def test_event_queue_orders_by_time_then_priority_then_push() -> None:
    q = EventQueue()
    q.push(Event(1.0, EventKind.SCHEDULE, 0))
    q.push(Event(1.0, EventKind.ARRIVAL, 0, 7))
    q.push(Event(1.0, EventKind.JOB_DONE, 0, 1))
    q.push(Event(0.5, EventKind.SCHEDULE, 1))
    q.push(Event(1.0, EventKind.ARRIVAL, 0, 8))
    got = [(e.time_s, e.kind, e.ref) for e in (q.pop() for _ in range(5))]
    assert got == [(0.5, EventKind.SCHEDULE, -1), (1.0, EventKind.JOB_DONE, 1),
                   (1.0, EventKind.ARRIVAL, 7), (1.0, EventKind.ARRIVAL, 8),
                   (1.0, EventKind.SCHEDULE, -1)]
    with pytest.raises(ValueError, match="SCHEDULE"):
        EventQueue({EventKind.ARRIVAL: 0, EventKind.JOB_DONE: 1})


def test_golden_isolated_requests() -> None:
    # arrivals 10 s apart never overlap: each takes prefill 0.1 + 3 decodes x 0.01 = 0.13 s
    trace = [TraceRequest(i, "m0", 10.0 * i, 8, 4) for i in range(3)]
    res = run(trace)
    assert [r.first_token_s for r in res.records] == pytest.approx([0.1, 10.1, 20.1])
    assert [r.finish_s for r in res.records] == pytest.approx([0.13, 10.13, 20.13])
    assert res.num_jobs == 3 * (1 + 3)
    assert res.unfinished == 0
    assert res.block_managers[0].used_blocks() == 0


def test_golden_batched_requests() -> None:
    # two requests at t=0 share one prefill batch and then decode together
    trace = [TraceRequest(0, "m0", 0.0, 8, 3), TraceRequest(1, "m0", 0.0, 8, 3)]
    res = run(trace)
    assert [r.first_token_s for r in res.records] == pytest.approx([0.1, 0.1])
    assert [r.finish_s for r in res.records] == pytest.approx([0.12, 0.12])
    assert res.num_jobs == 3


def test_same_time_priority_is_applied() -> None:
    # One job at a time (temporal). Request 0: prefill [0, .1], decodes [.1, .2] and [.2, .3].
    # Request 1 arrives at t=0.2, exactly when the first decode ends. With the stated order
    # (JOB_DONE, ARRIVAL, then SCHEDULE) the decision at t=0.2 sees request 1 waiting; with
    # SCHEDULE first it starts request 0's decode before request 1 is queued.
    trace = [TraceRequest(0, "m0", 0.0, 8, 3), TraceRequest(1, "m0", 0.2, 8, 2)]
    cost = ConstCost(0.1, 0.1)
    default = run(trace, "temporal", cost=cost)
    flipped = run(trace, "temporal", cost=cost, priority={
        EventKind.SCHEDULE: 0, EventKind.JOB_DONE: 1, EventKind.ARRIVAL: 2})
    assert default.records[1].arrival_s == 0.2
    t_default = default.records[1].first_token_s
    t_flipped = flipped.records[1].first_token_s
    assert t_flipped == pytest.approx(0.4)  # waited behind the decode started at 0.2
    assert t_default != pytest.approx(t_flipped)
    assert t_default == pytest.approx(0.3)  # its prefill started at 0.2


def _trace(seed: int) -> list[TraceRequest]:
    return synthesize({"m0": 30.0, "m1": 10.0}, 5.0, LengthSampler((16, 40, 90), (5, 20, 60)),
                      seed=seed)


@pytest.mark.parametrize("policy", ["muxserve", "spatial", "temporal", "round-robin", "fcfs"])
def test_same_seed_same_event_log(policy: str) -> None:
    a = run(_trace(1), policy, n_models=2, record_log=True)
    b = run(_trace(1), policy, n_models=2, record_log=True)
    c = run(_trace(2), policy, n_models=2, record_log=True)
    assert a.log_digest == b.log_digest and a.num_events == b.num_events
    assert a.log_digest != c.log_digest
    # conservation on a drained run: all finished, no KV block held
    assert a.unfinished == 0 and all(r.finish_s is not None for r in a.records)
    assert a.block_managers[0].used_blocks() == 0
    a.block_managers[0].check_integrity()
    for r in a.records:
        assert r.arrival_s <= r.first_token_s <= r.finish_s


def test_conservation_when_cut_short() -> None:
    trace = _trace(3)
    res = run(trace, "muxserve", n_models=2, max_sim_s=2.0, check_every_events=50)
    done = [r for r in res.records if r.finish_s is not None]
    assert 0 < len(done) < len(trace)
    assert len(done) + res.unfinished == len(trace)
    assert all(r.finish_s <= 2.0 for r in done)
    assert res.schedulers[0].has_unfinished()


def test_small_kv_pool_preempts_and_still_finishes() -> None:
    # a pool that holds only a few sequences forces preemption + recompute; nothing may leak.
    # avg_seq_tokens far below the real 300 makes the sequence cap admit too many at once.
    trace = synthesize({"m0": 50.0}, 2.0, LengthSampler.fixed(200, 100), seed=0)
    units = [SimUnit((UnitModel(0, "m0", ARCH),), 1, kv_blocks=90 * 4 * 4)]
    config = SimConfig(scheduler=SchedulerConfig(avg_seq_tokens=16))
    res = Simulator(units, ConstCost(0.01, 0.001), trace, config).run()
    assert res.schedulers[0].num_preemptions > 0
    assert res.unfinished == 0
    assert res.block_managers[0].used_blocks() == 0


def test_request_longer_than_the_pool_is_rejected_not_fatal() -> None:
    # pool of 90 blocks = one token block (64 tokens) of smollm2: a 100-token prompt never fits
    trace = [TraceRequest(0, "m0", 0.0, 100, 4), TraceRequest(1, "m0", 0.0, 8, 4)]
    units = [SimUnit((UnitModel(0, "m0", ARCH),), 1, kv_blocks=90)]
    res = Simulator(units, ConstCost(), trace).run()
    assert res.rejected == [0] and res.unfinished == 1
    assert res.records[1].finish_s == pytest.approx(0.13)


def test_routing_errors_name_the_model() -> None:
    with pytest.raises(ValueError, match="'ghost'"):
        Simulator(one_unit(), ConstCost(), [TraceRequest(0, "ghost", 0.0, 4, 4)])
    twice = [SimUnit((UnitModel(0, "m0", ARCH),), 1, kv_blocks=10)] * 2
    with pytest.raises(ValueError, match="two units"):
        Simulator(twice, ConstCost(), [])
    with pytest.raises(ValueError, match="tp"):
        SimUnit((UnitModel(0, "m0", ARCH, tp=1),), 2)


def test_kv_pool_and_baseline_helpers() -> None:
    cost = ConstCost()
    llama7 = get_model_arch("llama-7b")
    unit = SimUnit((UnitModel(0, "a", llama7),), 1, memory_fraction=0.9)
    expected = int((0.9 * 80 * GIB - llama7.weight_bytes()) // (8192 * 2))
    assert kv_pool_blocks(unit, cost, 8192) == expected
    big = UnitModel(0, "b", get_model_arch("llama-65b"), tp=4)
    assert min_tp(cost, UnitModel(0, "a", llama7)) == 1 and min_tp(cost, big) == 4
    base = isolated_latency_s(cost, {"a": UnitModel(0, "a", llama7)}, {"a": 1})
    assert base(TraceRequest(0, "a", 0.0, 10, 5)) == pytest.approx(0.1 + 4 * 0.01)


@pytest.mark.parametrize("policy", ["muxserve", "spatial", "fcfs"])
def test_block_id_tracking_does_not_change_the_run(policy: str) -> None:
    # the simulator counts blocks (track_block_ids=False) for speed; naming them, as the engine
    # does, must give the very same run: same event log, same times, same preemptions. A
    # llama-7b pool of 40 token blocks forces preemptions; the profile cost model makes job
    # times depend on batch and context, so any difference in decisions would show.
    from muxserve.costmodel.profile import ProfileCostModel

    llama7 = get_model_arch("llama-7b")
    units = [SimUnit(tuple(UnitModel(i, f"m{i}", llama7, prefill_share=1.0, decode_share=0.5)
                           for i in range(2)), 1, kv_blocks=1024 * 40)]
    trace = _trace(4)
    cost = ProfileCostModel()
    out = []
    for track in (True, False):
        # avg_seq_tokens far below the real length: the sequence caps admit too many -> preempt
        config = SimConfig(scheduler=SchedulerConfig(policy=policy, avg_seq_tokens=16),
                           record_log=True, track_block_ids=track, check_every_events=97)
        out.append(Simulator(units, cost, trace, config).run())
    tracked, counted = out
    assert tracked.block_managers[0].track_block_ids
    assert not counted.block_managers[0].track_block_ids
    assert tracked.log_digest == counted.log_digest
    assert tracked.num_events == counted.num_events and tracked.num_jobs == counted.num_jobs
    assert tracked.records == counted.records
    assert tracked.schedulers[0].num_preemptions == counted.schedulers[0].num_preemptions
    assert counted.unfinished == 0 and counted.schedulers[0].num_preemptions > 0


def test_paused_gc_restores_the_collector_state() -> None:
    import gc

    from muxserve.sim.simulator import paused_gc

    was = gc.isenabled()
    try:
        gc.enable()
        with paused_gc():
            assert not gc.isenabled()
        assert gc.isenabled()
        with pytest.raises(RuntimeError), paused_gc():
            raise RuntimeError("boom")
        assert gc.isenabled()  # restored after an error too
        gc.disable()
        with paused_gc():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        (gc.enable if was else gc.disable)()
