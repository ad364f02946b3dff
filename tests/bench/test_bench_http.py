"""bench over real HTTP against the stub OpenAI server on 127.0.0.1 (timings known)."""

from __future__ import annotations

import numpy as np
import pytest

from muxserve.bench.report import bench_result
from muxserve.bench.runner import RunOptions, measure_baseline, run_trace
from muxserve.bench.stub import StubConfig, StubServer, free_port
from muxserve.bench.targets import resolve_targets
from muxserve.sim.workload import LengthSampler, TraceRequest, synthesize

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

FIRST_S, TOKEN_S = 0.05, 0.01


def test_counts_ttft_tokens_and_429s() -> None:
    rates = {"a": 4.0, "b": 3.0, "full": 2.0}
    trace = synthesize(rates, 1.5, LengthSampler.fixed(16, 8), seed=3)
    want = {m: sum(r.model == m for r in trace) for m in rates}
    assert min(want.values()) > 0
    cfg = StubConfig(FIRST_S, TOKEN_S, reject_models=frozenset({"full"}))
    with StubServer(cfg) as url:
        run = run_trace(trace, resolve_targets(list(rates), {"*": url}), RunOptions(seed=3))
    assert dict(cfg.counts) == want  # the server saw exactly the generated workload
    ok = [(r, o) for r, o in zip(trace, run.outcomes, strict=True) if r.model != "full"]
    assert all(o.error is None for _, o in ok)
    assert all(o.output_tokens == r.output_tokens == 8 and o.usage_reported for r, o in ok)
    assert all(o.prompt_tokens == 16 for _, o in ok)  # the stub counts the prompt's words
    ttft = np.asarray([o.first_token_s - r.arrival_s for r, o in ok])
    assert ttft.min() >= FIRST_S - 1e-3
    assert np.median(ttft) < FIRST_S + 0.06  # HTTP + event loop; loose for a busy 2-core CI
    tpot = np.asarray([(o.finish_s - o.first_token_s) / 7 for _, o in ok])
    assert TOKEN_S - 1e-3 <= np.median(tpot) < TOKEN_S + 0.015
    assert max(run.send_lag_s) < 0.25  # the client kept to the schedule

    res = bench_result(trace, run, label="stub", rates_rps=rates, base_url={"*": url},
                       baseline=None, baseline_source=None, slo_scales=[5.0])
    full = res["per_model"]["full"]
    assert full["num_requests"] == want["full"] and full["num_finished"] == 0
    assert res["errors"]["per_model"]["full"]["by_kind"]["http_429"] == want["full"]
    assert res["errors"]["total"] == want["full"]
    assert res["num_finished"] == want["a"] + want["b"]
    assert res["per_model"]["a"]["token_throughput_tps"] == pytest.approx(
        8 * res["per_model"]["a"]["throughput_rps"])
    assert res["slo_attainment"]["attainment"] is None  # no baseline given


def test_timeouts_disconnects_and_refused_connections_are_errors() -> None:
    trace = [TraceRequest(0, "slow", 0.0, 4, 4), TraceRequest(1, "drop", 0.0, 4, 4),
             TraceRequest(2, "closed", 0.0, 4, 4)]
    cfg = StubConfig(first_token_delay_s=0.3, token_delay_s=0.01,
                     drop_models=frozenset({"drop"}))
    with StubServer(cfg) as url:
        targets = resolve_targets(["slow", "drop", "closed"], {
            "*": url, "closed": f"http://127.0.0.1:{free_port()}"})
        # drop streams its first token at 0.3 s, then the server cuts the connection
        run = run_trace(trace, targets, RunOptions(timeout_s=0.6))
        slow = run_trace(trace[:1], targets, RunOptions(timeout_s=0.15))
    assert [o.error for o in run.outcomes] == [None, "disconnect", "connect"]
    assert slow.outcomes[0].error == "timeout"
    assert run.outcomes[1].first_token_s is not None and run.outcomes[1].finish_s is None


def test_max_concurrency_queues_requests_in_the_client() -> None:
    trace = [TraceRequest(i, "a", 0.0, 4, 4) for i in range(3)]
    with StubServer(StubConfig(FIRST_S, TOKEN_S)) as url:
        run = run_trace(trace, resolve_targets(["a"], {"*": url}),
                        RunOptions(max_concurrency=1))
    sends = sorted(o.send_s for o in run.outcomes)
    one = FIRST_S + 3 * TOKEN_S
    assert sends[1] - sends[0] >= one - 0.01 and sends[2] - sends[1] >= one - 0.01
    # latency counts from the scheduled arrival: the third request waited for two others
    assert max(o.finish_s for o in run.outcomes) >= 3 * one


def test_measured_baseline_matches_the_stub_timing() -> None:
    with StubServer(StubConfig(FIRST_S, TOKEN_S, reject_models=frozenset({"full"}))) as url:
        base, failed = measure_baseline({"a": (8, 11), "full": (8, 11)},
                                        resolve_targets(["a", "full"], {"*": url}),
                                        RunOptions(), repeats=2)
    assert set(base) == {"a"} and "http_429" in failed["full"]
    assert FIRST_S - 1e-3 <= base["a"]["ttft_s"] < FIRST_S + 0.05
    assert TOKEN_S - 1e-3 <= base["a"]["tpot_s"] < TOKEN_S + 0.01
    assert base["a"]["output_tokens"] == 11


def test_chat_api_streams_delta_content() -> None:
    trace = [TraceRequest(i, "a", 0.05 * i, 12, 5) for i in range(4)]
    cfg = StubConfig(FIRST_S, TOKEN_S)
    with StubServer(cfg) as url:
        run = run_trace(trace, resolve_targets(["a"], {"*": f"{url}/v1"}, api="chat"),
                        RunOptions())
    assert cfg.counts == {"a": 4}
    for r, o in zip(trace, run.outcomes, strict=True):
        assert o.error is None and o.output_tokens == 5 and o.prompt_tokens == 12
        assert o.first_token_s is not None and o.first_token_s - r.arrival_s >= FIRST_S - 1e-3


def test_api_key_is_sent_as_bearer_token() -> None:
    trace = [TraceRequest(0, "a", 0.0, 4, 3)]
    with StubServer(StubConfig(FIRST_S, TOKEN_S, api_key="sk-test")) as url:
        targets = resolve_targets(["a"], {"*": url})
        good = run_trace(trace, targets, RunOptions(api_key="sk-test"))
        bad = run_trace(trace, targets, RunOptions(api_key="wrong"))
    assert good.outcomes[0].error is None and good.outcomes[0].output_tokens == 3
    assert bad.outcomes[0].error == "http_4xx" and "401" in bad.outcomes[0].detail
