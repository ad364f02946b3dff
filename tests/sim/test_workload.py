"""Workload generation: popularity, arrival processes, ShareGPT filter, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from muxserve.sim.workload import (
    LengthSampler,
    arrival_times,
    load_sharegpt,
    paper_synthetic_models,
    parse_lengths,
    powerlaw_rates,
    synthesize,
)

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SHAREGPT = DATA / "traces" / "sharegpt" / "sharegpt_v3_first_turn_lengths.csv"


def test_powerlaw_rates_top_model_gets_max_rate() -> None:
    rates = powerlaw_rates(4, alpha=1.0, max_rate_rps=40.0)
    assert rates == pytest.approx([40.0, 20.0, 40 / 3, 10.0])
    assert powerlaw_rates(3, 0.0, 5.0) == [5.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="alpha"):
        powerlaw_rates(3, -1.0, 5.0)


@pytest.mark.parametrize("arrival,cv", [("poisson", 1.0), ("gamma", 3.0), ("gamma", 0.5)])
def test_arrival_rate_and_cv(arrival: str, cv: float) -> None:
    rng = np.random.default_rng(0)
    t = arrival_times(50.0, 2000.0, rng, arrival, cv)
    assert len(t) / 2000.0 == pytest.approx(50.0, rel=0.05)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.1)
    assert (t >= 0).all() and (t < 2000.0).all() and (gaps >= 0).all()


def test_unknown_arrival_names_choices() -> None:
    with pytest.raises(ValueError, match="poisson, gamma"):
        arrival_times(1.0, 10.0, np.random.default_rng(0), "weibull")


def test_sharegpt_filter_matches_paper_rule() -> None:
    s = load_sharegpt(SHAREGPT)
    p, o = np.asarray(s.prompts), np.asarray(s.outputs)
    assert len(p) == 15288  # the README's vLLM-filtered count (same rule)
    assert p.min() >= 4 and o.min() >= 4 and p.max() <= 1024 and (p + o).max() <= 2048
    assert s.mean_prompt_tokens == pytest.approx(242, abs=1)
    assert s.mean_output_tokens == pytest.approx(230, abs=1)
    capped = load_sharegpt(SHAREGPT, cap_output_tokens=64)
    assert len(capped.prompts) == 15288 and max(capped.outputs) == 64


def test_parse_lengths() -> None:
    assert parse_lengths("fixed:8,16", SHAREGPT) == LengthSampler.fixed(8, 16)
    with pytest.raises(ValueError, match="fixed:PROMPT,OUTPUT"):
        parse_lengths("fixed:8", SHAREGPT)
    with pytest.raises(ValueError, match="valid: sharegpt"):
        parse_lengths("uniform", SHAREGPT)


def test_synthesize_is_sorted_seeded_and_rate_faithful() -> None:
    rates = {"a": 10.0, "b": 2.0}
    lengths = LengthSampler((5, 7, 9), (3, 4, 5), "toy")
    tr = synthesize(rates, 500.0, lengths, seed=7)
    assert tr == synthesize(rates, 500.0, lengths, seed=7)
    assert tr != synthesize(rates, 500.0, lengths, seed=8)
    arr = [r.arrival_s for r in tr]
    assert arr == sorted(arr) and [r.req_id for r in tr] == list(range(len(tr)))
    n_a = sum(r.model == "a" for r in tr)
    assert n_a / 500.0 == pytest.approx(10.0, rel=0.1)
    assert (len(tr) - n_a) / 500.0 == pytest.approx(2.0, rel=0.2)
    assert {r.prompt_tokens for r in tr} == {5, 7, 9}
    # adding a model at the end leaves the others' requests unchanged
    tr3 = synthesize({**rates, "c": 1.0}, 500.0, lengths, seed=7)
    key = [(r.model, r.arrival_s, r.prompt_tokens) for r in tr3 if r.model != "c"]
    assert key == [(r.model, r.arrival_s, r.prompt_tokens) for r in tr]


def test_paper_synthetic_models() -> None:
    ms = paper_synthetic_models()
    assert len(ms) == 19 and ms[0] == ("llm-0", "llama-7b") and ms[-1][1] == "llama-65b"
    assert [a for _, a in ms].count("llama-13b") == 4
