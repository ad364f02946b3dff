"""Replay of the real traces in ../shared/data/traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from muxserve.sim.traces import (
    from_rate_series,
    load_azure,
    load_burstgpt,
    load_mooncake,
    load_servegen_rates,
    replay,
)
from muxserve.sim.workload import LengthSampler

TRACES = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "traces"


def test_azure_conv_matches_readme_stats() -> None:
    raw = load_azure(TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv")
    assert len(raw) == 19366
    assert raw.arrival_s[0] == 0.0 and np.all(np.diff(raw.arrival_s) >= 0)
    assert raw.arrival_s[-1] == pytest.approx(58 * 60 + 22, abs=2)  # 18:15:46 -> 19:14:08
    assert raw.prompt_tokens.mean() == pytest.approx(1155, abs=1)
    assert raw.output_tokens.mean() == pytest.approx(211, abs=1)


def test_mooncake_and_replay_spread_over_models() -> None:
    raw = load_mooncake(TRACES / "mooncake" / "conversation_trace.jsonl")
    assert len(raw) == 12031
    tr = replay(raw, ["a", "b"], seed=1, weights=[3, 1], time_scale=2.0, duration_s=600.0,
                max_prompt_tokens=2048)
    assert max(r.arrival_s for r in tr) < 600.0
    assert max(r.prompt_tokens for r in tr) == 2048
    share_a = sum(r.model == "a" for r in tr) / len(tr)
    assert share_a == pytest.approx(0.75, abs=0.03)
    assert tr == replay(raw, ["a", "b"], seed=1, weights=[3, 1], time_scale=2.0,
                        duration_s=600.0, max_prompt_tokens=2048)


def test_burstgpt_label_map() -> None:
    raw = load_burstgpt(TRACES / "burstgpt" / "BurstGPT_1_first400.csv")
    assert len(raw) == 400 - 17  # 17 failed rows dropped
    tr = replay(raw, ["small", "big"], seed=0, label_map={"ChatGPT": "small", "GPT-4": "big"})
    assert {r.model for r in tr} == {"small", "big"}
    with pytest.raises(ValueError, match="GPT-4"):
        replay(raw, ["small"], seed=0, label_map={"ChatGPT": "small"})


def test_servegen_rate_series_replay() -> None:
    rates = load_servegen_rates(TRACES / "servegen" / "servegen_model_aggregate_rates.csv",
                                ["language/m-large", "language/m-mid"])
    assert rates["language/m-large"][0] == pytest.approx(212.78)
    assert len(rates["language/m-large"]) == 2016
    tr = from_rate_series(rates, LengthSampler.fixed(10, 5), seed=3, num_windows=2,
                          time_scale=10.0, rate_scale=0.01)
    expected = 0.01 * 600 * sum(float(r[:2].sum()) for r in rates.values())
    assert len(tr) == pytest.approx(expected, rel=0.1)
    assert max(r.arrival_s for r in tr) < 120.0  # two windows of 600 s compressed 10x
    with pytest.raises(ValueError, match="m-huge"):
        load_servegen_rates(TRACES / "servegen" / "servegen_model_aggregate_rates.csv",
                            ["language/m-huge"])
