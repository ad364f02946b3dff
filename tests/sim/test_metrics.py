"""Metrics and the shared result schema, on hand-computed records."""

from __future__ import annotations

import json

import pytest

from muxserve.sim.metrics import RequestRecord, build_result, max_rate_meeting

R = RequestRecord
RECORDS = [
    # model a: latencies 2 and 4 s; b: 1 s and one unfinished request
    R(0, "a", 0.0, 10, 5, first_token_s=1.0, finish_s=2.0),   # ttft 1, tpot 0.25
    R(1, "a", 1.0, 10, 3, first_token_s=2.0, finish_s=5.0),   # ttft 1, tpot 1.5
    R(2, "b", 2.0, 4, 1, first_token_s=3.0, finish_s=3.0),    # 1 token: no tpot
    R(3, "b", 3.0, 4, 2, first_token_s=None, finish_s=None),  # never served
]


def test_totals_and_schema() -> None:
    res = build_result(RECORDS, "muxserve", slo_baseline_s={"a": 1.0, "b": 1.0},
                       slo_scales=(2.0, 4.0))
    for key in ("policy", "throughput_rps", "rate_weighted_throughput_rps",
                "token_throughput_tps", "slo_attainment", "ttft_s", "tpot_s", "latency_s",
                "per_model"):
        assert key in res
    assert res["span_s"] == 5.0  # last finish 5 - first arrival 0
    assert res["throughput_rps"] == pytest.approx(3 / 5)
    assert res["token_throughput_tps"] == pytest.approx((5 + 3 + 1) / 5)
    # latencies 2, 4, 1 (+ one miss): <= 2 s -> 2 of 4; <= 4 s -> 3 of 4
    assert res["slo_attainment"] == {"scale": 2.0, "attainment": 0.5,
                                     "by_scale": {"2.0": 0.5, "4.0": 0.75}}
    assert res["latency_s"]["p50"] == pytest.approx(2.0)
    assert res["tpot_s"]["p50"] == pytest.approx((0.25 + 1.5) / 2)
    assert res["ttft_s"]["p99"] == pytest.approx(1.0)
    # per model over its own span: a from 0 to 5, b from 2 to 3
    assert res["per_model"]["a"]["throughput_rps"] == pytest.approx(2 / 5)
    assert res["per_model"]["b"]["span_s"] == 1.0
    assert res["per_model"]["b"]["throughput_rps"] == pytest.approx(1.0)
    assert res["per_model"]["b"]["num_finished"] == 1
    # observed-count weights: (2 * 0.4 + 2 * 1.0) / 4
    assert res["rate_weighted_throughput_rps"] == pytest.approx(0.7)
    json.dumps(res)  # serialisable


def test_rate_weights_and_goodput() -> None:
    res = build_result(RECORDS, "x", rates_rps={"a": 3.0, "b": 1.0}, span_s=10.0,
                       ttft_slo_s=1.0, tpot_slo_s=1.0)
    assert res["rate_weighted_throughput_rps"] == pytest.approx((3 * 0.2 + 1 * 0.1) / 4)
    # good: req 0 (ttft 1, tpot .25) and req 2 (1 token); req 1 tpot 1.5 fails; req 3 unfinished
    assert res["goodput_rps"] == pytest.approx(2 / 10)
    assert res["ttft_tpot_attainment"] == pytest.approx(0.5)
    assert res["slo_attainment"]["attainment"] is None  # no baselines given


def test_per_request_baseline_overrides_model() -> None:
    recs = [R(0, "a", 0.0, 1, 1, 1.0, 3.0, slo_baseline_s=1.0),
            R(1, "a", 0.0, 1, 1, 1.0, 3.0, slo_baseline_s=0.5)]
    res = build_result(recs, "x", slo_scales=(3.0,))
    assert res["slo_attainment"]["attainment"] == 0.5


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="model 'b'"):
        build_result(RECORDS, "x", slo_baseline_s={"a": 1.0})
    with pytest.raises(ValueError, match="slo_scales"):
        build_result(RECORDS, "x", slo_scales=(0.0,))


def test_empty_and_max_rate_meeting() -> None:
    res = build_result([], "x")
    assert res["throughput_rps"] == 0.0 and res["latency_s"]["p50"] is None
    assert max_rate_meeting([(1.0, 0.99), (2.0, 0.95), (3.0, 0.5)]) == 2.0
    assert max_rate_meeting([(1.0, 0.5)]) is None


def test_window_throughput_counts_finishes_inside() -> None:
    # finishes at 2, 5, 3: inside [1, 4] are 2 and 3 -> 2 requests / 3 s
    res = build_result(RECORDS, "x", window_s=(1.0, 4.0))
    assert res["throughput_rps"] == pytest.approx(2 / 3)
    assert res["token_throughput_tps"] == pytest.approx((5 + 1) / 3)
    assert res["per_model"]["a"]["throughput_rps"] == pytest.approx(1 / 3)
    assert res["window_s"] == [1.0, 4.0]
    with pytest.raises(ValueError, match="window_s"):
        build_result(RECORDS, "x", window_s=(4.0, 1.0))
