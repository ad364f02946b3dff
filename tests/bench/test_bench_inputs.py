"""bench inputs without a server: endpoints, rates, traces, prompts, baselines, error counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from muxserve.bench.client import Outcome
from muxserve.bench.report import error_summary, load_baseline, request_baseline_s
from muxserve.bench.targets import (
    completions_url,
    parse_base_urls,
    parse_pairs,
    resolve_targets,
)
from muxserve.bench.workload import (
    cap_lengths,
    rates_from_flags,
    replay_trace,
    servegen_trace,
    synthetic_prompt,
)
from muxserve.sim.traces import load_servegen_rates
from muxserve.sim.workload import LengthSampler, TraceRequest, powerlaw_rates

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_base_urls_default_and_per_model_pairs() -> None:
    urls = parse_base_urls(["http://h:1/", "a=http://h:2", "b=https://h:3/v1"])
    assert urls == {"*": "http://h:1", "a": "http://h:2", "b": "https://h:3/v1"}
    t = resolve_targets(["a", "b", "c"], urls, {"c": "smollm2-135m"})
    assert t.url("a") == "http://h:2/v1/completions"
    assert t.url("b") == "https://h:3/v1/completions"  # a /v1 base is not doubled
    assert t.url("c") == "http://h:1/v1/completions"
    assert t.served_name == {"a": "a", "b": "b", "c": "smollm2-135m"}
    assert completions_url("http://x?k=v=w") == "http://x?k=v=w/v1/completions"
    assert resolve_targets(["a", "b"], urls, api="chat").url("a") == (
        "http://h:2/v1/chat/completions")
    with pytest.raises(ValueError, match="unknown api 'grpc'; valid: completions, chat"):
        resolve_targets(["a", "b"], urls, api="grpc")


@pytest.mark.parametrize("specs, match", [
    ([], "at least one"),
    (["localhost:8000"], "http://"),
    (["http://a", "http://b"], "twice"),
    (["=http://a"], "empty model"),
])
def test_bad_base_urls_are_named(specs: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_base_urls(specs)


def test_every_model_needs_an_endpoint_and_typos_are_errors() -> None:
    with pytest.raises(ValueError, match="'b' has no endpoint"):
        resolve_targets(["a", "b"], {"a": "http://h:1"})
    with pytest.raises(ValueError, match=r"\['x'\].*not in the workload"):
        resolve_targets(["a"], {"*": "http://h", "x": "http://h:2"})


def test_rates_from_flags() -> None:
    assert rates_from_flags(["a", "b", "c"], None, 1.0, 6.0) == pytest.approx(
        dict(zip("abc", powerlaw_rates(3, 1.0, 6.0), strict=True)))
    assert rates_from_flags(["a", "b"], None, None, 2.0, rate_scale=0.5) == {"a": 1.0, "b": 1.0}
    assert rates_from_flags(None, parse_pairs("a=2,b=0.5", "--model-rates"), None, None) == {
        "a": 2.0, "b": 0.5}
    with pytest.raises(ValueError, match="needs --max-rate"):
        rates_from_flags(["a"], None, 1.0, None)
    with pytest.raises(ValueError, match="rate of 'a' must be a number"):
        rates_from_flags(None, {"a": "fast"}, None, None)
    with pytest.raises(ValueError, match="do not combine"):
        rates_from_flags(["a"], {"a": "1"}, None, None)
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_pairs("a=1,b", "--model-rates")


def test_trace_replay_spreads_requests_by_weight() -> None:
    trace = replay_trace("azure-conv", ["a", "b"], seed=3, weights=[3.0, 1.0],
                         duration_s=300.0, trace_dir=DATA / "traces")
    assert trace and all(r.arrival_s < 300.0 for r in trace)
    share = sum(r.model == "a" for r in trace) / len(trace)
    assert 0.65 < share < 0.85
    again = replay_trace("azure-conv", ["a", "b"], seed=3, weights=[3.0, 1.0],
                         duration_s=300.0, trace_dir=DATA / "traces")
    assert again == trace
    with pytest.raises(ValueError, match="unknown trace 'azure'.*azure-code"):
        replay_trace("azure", ["a"], seed=0)


def test_servegen_maps_models_by_popularity_and_scales_rates() -> None:
    trace, series = servegen_trace(["a", "b"], LengthSampler.fixed(16, 4), seed=1,
                                   duration_s=300.0, rate_scale=0.001,
                                   trace_dir=DATA / "traces")
    assert series == {"a": "language/m-mid", "b": "language/m-small"}
    rates = load_servegen_rates(DATA / "traces" / "servegen" /
                                "servegen_model_aggregate_rates.csv")
    for m, key in series.items():
        want = rates[key][0] * 0.001 * 300.0  # the first 600 s window's rate, 300 s of it
        got = sum(r.model == m for r in trace)
        assert abs(got - want) < 5 * np.sqrt(want) + 1, (m, got, want)
    assert all(r.arrival_s < 300.0 and r.output_tokens == 4 for r in trace)
    with pytest.raises(ValueError, match="has 5 models"):
        servegen_trace(list("abcdef"), LengthSampler.fixed(16, 4), 1, 10.0,
                       trace_dir=DATA / "traces")


def test_caps_clip_lengths_and_none_keeps_the_list() -> None:
    trace = [TraceRequest(0, "a", 0.0, 3000, 500), TraceRequest(1, "a", 1.0, 10, 5)]
    assert cap_lengths(trace, None, None) == trace
    got = cap_lengths(trace, 1024, 128)
    assert [(r.prompt_tokens, r.output_tokens) for r in got] == [(1024, 128), (10, 5)]
    with pytest.raises(ValueError, match="--max-output-tokens"):
        cap_lengths(trace, None, 0)


def test_synthetic_prompt_has_the_word_count_and_differs_per_request() -> None:
    p = synthetic_prompt(100, seed=0, req_id=7)
    assert len(p.split()) == 100
    assert p == synthetic_prompt(100, seed=0, req_id=7)
    assert p != synthetic_prompt(100, seed=0, req_id=8)
    # different first words: no shared prefix for a server's prefix cache to hit
    firsts = {synthetic_prompt(16, 0, i).split()[:3].__repr__() for i in range(50)}
    assert len(firsts) > 45


def test_baseline_file_formats(tmp_path: Path) -> None:
    f = tmp_path / "b.json"
    f.write_text(json.dumps({"a": 1.5, "b": {"ttft_s": 0.2, "tpot_s": 0.05}}))
    base = load_baseline(f)
    assert request_baseline_s(base["a"], 100) == 1.5
    assert request_baseline_s(base["b"], 11) == pytest.approx(0.2 + 10 * 0.05)
    f.write_text(json.dumps({"policy": "bench", "slo_baseline": {
        "source": "measured", "per_model": {"a": {"ttft_s": 0.1, "tpot_s": 0.0}}}}))
    assert load_baseline(f) == {"a": {"ttft_s": 0.1, "tpot_s": 0.0}}
    f.write_text(json.dumps({"a": -1}))
    with pytest.raises(ValueError, match="model 'a' must map"):
        load_baseline(f)
    with pytest.raises(FileNotFoundError):
        load_baseline(tmp_path / "missing.json")


def test_error_summary_counts_per_kind_and_model() -> None:
    outs = [Outcome(0, "a", 0.0, error="http_429", detail="HTTP 429"),
            Outcome(1, "a", 0.0, 0.1, 0.2, output_tokens=3),
            Outcome(2, "b", 0.0, error="timeout"), Outcome(3, "a", 0.0, error="http_429")]
    s = error_summary(["a", "b", "c"], outs)
    assert s["total"] == 3 and s["by_kind"]["http_429"] == 2 and s["by_kind"]["timeout"] == 1
    assert s["per_model"]["a"]["total"] == 2 and s["per_model"]["c"]["total"] == 0
    assert s["samples"]["http_429"] == ["a: HTTP 429", "a: "]
    assert int(np.sum(list(s["by_kind"].values()))) == s["total"]
