"""`muxserve plan` end to end in-process: files in, placement YAML out, errors as exit 2."""

from __future__ import annotations

from pathlib import Path

import yaml

from muxserve.cli import main
from muxserve.placement.placement_io import read_placement

CHATLMSYS = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "traces" / (
    "muxserve_chatlmsys")
WORKLOAD = sorted(CHATLMSYS.glob("*condense2000*.yaml"))[0]


def test_plan_writes_placement_and_prints_table(tmp_path, capsys) -> None:
    out = tmp_path / "p.yaml"
    assert main(["plan", str(WORKLOAD), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "muxserve placement on 4x8xa100-80g" in text and "llm-1 " in text
    assert "rate-weighted mean throughput" in text and "warning" not in text
    pl = read_placement(out)
    assert pl.policy == "muxserve" and len(pl.model_names) == 16
    assert pl.cost_model == "profile" and pl.num_devices_used <= 32
    raw = yaml.safe_load(out.read_text())
    unit = raw["units"][0]
    assert {"num_gpus", "models", "node", "devices"} <= set(unit)
    assert {"name", "model", "tensor_parallel_size", "mps_percentage", "max_num_seqs"} <= set(
        unit["models"][0])


def test_plan_policies_and_synthetic(tmp_path, capsys) -> None:
    for policy in ("spatial", "temporal"):
        out = tmp_path / f"{policy}.yaml"
        assert main(["plan", "--synthetic", "paper19", "--alpha", "1.3", "--policy", policy,
                     "--cost-model", "roofline", "-o", str(out), "--quiet"]) == 0
        pl = read_placement(out)
        assert pl.policy == policy and len(pl.model_names) == 19
    assert "temporal: " in capsys.readouterr().out


def test_plan_evaluates_paper_placement(capsys) -> None:
    assert main(["plan", str(WORKLOAD), "--evaluate", str(CHATLMSYS / "paper_placements.json"),
                 "--condense", "2000", "--quiet"]) == 0
    assert "muxserve: 8 units on 32/32 devices" in capsys.readouterr().out


def test_plan_errors_name_the_problem(tmp_path, capsys) -> None:
    assert main(["plan", str(WORKLOAD), "--cluster", "1x1xa100-80g", "--quiet"]) == 2
    assert "'llm-10' (llama-65b" in capsys.readouterr().err
    assert main(["plan", str(WORKLOAD), "--cluster", "1x1xtpu-v9"]) == 2
    assert "unknown device preset 'tpu-v9'" in capsys.readouterr().err
    bad = tmp_path / "w.yaml"
    bad.write_text("models:\n- {name: x, model: llama-7b, rate: -1}\navg_prompt_len: 1\n"
                   "avg_output_len: 1\n")
    assert main(["plan", str(bad)]) == 2
    assert "model 'x': rate must be >= 0" in capsys.readouterr().err
    assert main(["plan"]) == 2
    assert "missing WORKLOAD" in capsys.readouterr().err
