"""`muxserve compare` end to end on two tiny random models: every mode gets simulate's schema plus
the simulator's `predicted`, and every request is accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from muxserve.cli import main
from muxserve.cli.compare import parse_modes, table_rows
from muxserve.cli.compare_setup import popularity_rates, read_config
from muxserve.costmodel import ProfileEntry, save_profile

SMOL = ("random:smollm2-135m?num_layers=2&hidden_size=64&num_heads=4&num_kv_heads=2"
        "&intermediate_size=128&vocab_size=512")
GEMMA = ("random:gemma3-270m?num_layers=2&hidden_size=64&num_heads=2&num_kv_heads=1"
         "&head_dim=32&intermediate_size=128&vocab_size=512")
SCHEMA = {"policy", "throughput_rps", "rate_weighted_throughput_rps", "token_throughput_tps",
          "slo_attainment", "ttft_s", "tpot_s", "latency_s", "num_requests", "num_finished",
          "span_s", "per_model"}


def _profile(path: Path) -> None:
    """A made-up table in the profile format (the prediction's accuracy is not tested here)."""
    entries = [ProfileEntry(m, 1, sm, b, s, 1.0 + 0.01 * b * s * 100 / sm,
                            0.5 + 0.02 * b * 100 / sm)
               for m in ("smollm2-135m", "gemma3-270m") for sm in (50, 100)
               for b in (1, 4, 16) for s in (32, 128)]
    save_profile(path, entries, meta={"device": "made up"})


@pytest.mark.slow
@pytest.mark.e2e
def test_compare_two_tiny_models_all_modes(tmp_path: Path) -> None:
    cfg = tmp_path / "unit.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "tiny-a", "source": SMOL},
                                              {"name": "tiny-b", "source": GEMMA}],
                                   "kv_pool_mib": 16}))
    prof = tmp_path / "p.json"
    _profile(prof)
    out = tmp_path / "r.json"
    rc = main(["compare", str(cfg), "-o", str(out), "--profile", str(prof), "--alpha", "1",
               "--max-rate", "4", "--duration-s", "3", "--drain-s", "6",
               "--lengths", "fixed:16,8", "--seed", "1", "--quiet"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [r["policy"] for r in res["results"]] == ["muxserve", "spatial", "temporal"]
    n = res["results"][0]["num_requests"]
    assert n >= 3
    for r in res["results"]:
        assert set(r) >= SCHEMA and set(r["predicted"]) >= SCHEMA
        assert r["num_requests"] == r["predicted"]["num_requests"] == n  # same request list
        reasons = r["engine"]["finish_reasons"]
        assert sum(reasons.values()) == n  # every request accounted for
        assert r["num_finished"] == reasons.get("length", 0)
        assert r["num_finished"] == n  # tiny models keep up with 4 req/s
        assert r["engine"]["unit"]["kv_blocks_used"] == 0  # nothing leaked
        assert set(r["per_model"]) == {"tiny-a", "tiny-b"}
    assert len(table_rows(res["results"])) == 6


def test_parse_modes_rejects_unknown() -> None:
    assert parse_modes("spatial,muxserve") == ["spatial", "muxserve"]
    with pytest.raises(ValueError, match="valid: muxserve, spatial, temporal"):
        parse_modes("muxserve,vllm")


def test_default_set_rates_follow_popularity_rank() -> None:
    cfg = read_config(None)
    assert [m["name"] for m in cfg["models"]] == ["smollm2-a", "gemma3-b", "gemma3-a",
                                                  "smollm2-b"]
    rates = popularity_rates(cfg, 1.0, 1.2)
    assert list(rates) == ["smollm2-a", "gemma3-a", "smollm2-b", "gemma3-b"]  # rank order
    assert rates["smollm2-a"] == pytest.approx(1.2) and rates["gemma3-b"] == pytest.approx(0.3)


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "u.yaml"
    cfg.write_text(yaml.safe_dump({"models": [{"name": "a", "source": SMOL, "share": 1}]}))
    with pytest.raises(ValueError, match="unknown keys \\['share'\\]"):
        read_config(str(cfg))
    assert main(["compare", str(cfg), "-o", str(tmp_path / "r.json")]) == 2


def test_core_share_cost_time_slices_below_one_core(tmp_path: Path) -> None:
    from muxserve.cli.compare_setup import CoreShareCost
    from muxserve.config.models import MODEL_PRESETS
    from muxserve.costmodel import ProfileCostModel

    prof = tmp_path / "p.json"
    _profile(prof)
    inner = ProfileCostModel(prof, device="cpu-2core")
    cost = CoreShareCost(inner, num_cores=2)
    arch = MODEL_PRESETS["smollm2-135m"]
    one_core = inner.decode_ms(arch, 4, 4 * 128, 0.5)
    assert cost.decode_ms(arch, 4, 4 * 128, 0.5) == one_core
    assert cost.decode_ms(arch, 4, 4 * 128, 0.25) == pytest.approx(2 * one_core)  # 2 per core
    assert cost.decode_ms(arch, 4, 4 * 128, 0.6) == one_core  # rounds to one core, as granted
    assert cost.prefill_ms(arch, 1, 128, 1.0) == inner.prefill_ms(arch, 1, 128, 1.0)
