"""Placement files: our YAML, the original per-mesh schema, the paper's JSON; round trips."""

from __future__ import annotations

import pytest
from conftest import CHATLMSYS, AnalyticCostModel

from muxserve.config.devices import Cluster
from muxserve.placement.placement_io import (
    paper_placements,
    placement_from_dict,
    read_placement,
    write_placement,
)
from muxserve.placement.planner import plan
from muxserve.placement.workload_spec import read_workload, synthetic_workload

PAPER = CHATLMSYS / "paper_placements.json"


def test_paper_placements_parse() -> None:
    table = paper_placements(PAPER)
    assert len(table) == 15  # 5 condense factors x flexsm/spatial/temporal
    for (condense, policy), pl in table.items():
        assert len(pl.model_names) == 16, (condense, policy)
        assert pl.num_devices_used <= 32
        assert all(u.node is not None and u.devices for u in pl.units)
        assert all(m.model.startswith("llama-") for u in pl.units for m in u.models)
    mux = table[("2000", "muxserve")]
    assert sorted(u.num_gpus for u in mux.units) == [2, 2, 4, 4, 4, 4, 4, 8]
    unit, m = mux.find("llm-1")
    assert (unit.num_gpus, m.model, m.tensor_parallel_size) == (8, "llama-13b", 8)
    assert (m.prefill_share_pct, m.decode_share_pct, m.max_num_seqs) == (90, 90, 576)
    assert mux.policy == "muxserve" and table[("2000", "temporal")].policy == "temporal"
    assert read_placement(PAPER, condense="500", policy="spatial").policy == "spatial"


def test_paper_reader_errors_name_choices() -> None:
    with pytest.raises(ValueError, match=r"condense.*500.*2000"):
        read_placement(PAPER)
    with pytest.raises(ValueError, match=r"no placement for condense '123'"):
        read_placement(PAPER, condense="123")


def test_hand_written_original_schema() -> None:
    doc = {"num_gpus": 2, "models": [
        {"name": "a", "model": "/ckpt/llama-7b", "tensor_parallel_size": 2,
         "mps_percentage": [80, 40], "max_num_seqs": 64},
        {"name": "b", "model": "llama-13b", "tensor_parallel_size": 2,
         "mps_percentage": [90, 60], "max_num_seqs": 32}]}
    pl = placement_from_dict(doc, cluster=Cluster.parse("1x4xa100-80g"))
    assert len(pl.units) == 1 and pl.units[0].devices == (0, 1)
    assert pl.find("b")[1].decode_share_pct == 60


@pytest.mark.parametrize("bad, match", [
    ({"units": [{"models": []}]}, r"units\[0\]: missing field 'num_gpus'"),
    ({"units": [{"num_gpus": 1}]}, r"units\[0\]: missing field 'models'"),
    ({"units": [{"num_gpus": 1, "models": [{"name": "a", "model": "llama-7b"}]}]},
     r"model 'a': missing field 'mps_percentage'"),
    ({"units": [{"num_gpus": 1, "models": [{"name": "a", "model": "llama-7b",
                                            "mps_percentage": [90]}]}]},
     r"model 'a': field 'mps_percentage' must be \[prefill %, decode %\]"),
    ({"units": [{"num_gpus": 2, "models": [{"name": "a", "model": "llama-7b",
                                            "tensor_parallel_size": 1,
                                            "mps_percentage": [90, 30]}]}]},
     r"model 'a': tensor_parallel_size 1 != the unit's num_gpus 2"),
    ({"units": [{"num_gpus": 1, "models": [{"name": "a", "model": "llama-7b",
                                            "mps_percentage": [90, 130]}]}]},
     r"model 'a': mps_percentage \(decode_share_pct\) must be in \[1, 100\], got 130"),
    ({"policy": "magic", "units": []}, r"unknown policy 'magic'; valid: muxserve"),
    ({"nothing": 1}, r"missing field 'units'"),
])
def test_reader_errors_name_the_field(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        placement_from_dict(bad)


def test_overlapping_devices_rejected() -> None:
    unit = {"num_gpus": 1, "node": 0, "devices": [0],
            "models": [{"name": "a", "model": "llama-7b", "mps_percentage": [90, 30]}]}
    other = {**unit, "models": [{"name": "b", "model": "llama-7b", "mps_percentage": [90, 30]}]}
    with pytest.raises(ValueError, match="both use node 0 device 0"):
        placement_from_dict({"units": [unit, other]})


@pytest.mark.parametrize("policy", ["muxserve", "spatial", "temporal"])
def test_round_trip_write_read_equals(tmp_path, policy: str) -> None:
    w = read_workload(sorted(CHATLMSYS.glob("*condense800*.yaml"))[0])
    pl = plan(w, AnalyticCostModel(), policy=policy, cost_name="analytic")
    path = tmp_path / "p.yaml"
    write_placement(pl, path)
    assert read_placement(path) == pl
    text = path.read_text()
    assert text.startswith("policy: ") and "\nunits:\n" in text and "mps_percentage: [" in text


def test_round_trip_synthetic(tmp_path) -> None:
    pl = plan(synthetic_workload("paper19"), AnalyticCostModel())
    write_placement(pl, tmp_path / "s.yaml")
    assert read_placement(tmp_path / "s.yaml") == pl
