"""`muxserve simulate` end to end on small inputs; bad files name the bad field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from muxserve.cli import main

WORKLOAD = {
    "cluster": {"nnodes": 1, "ngpus_per_node": 2},
    "models": [{"name": "a", "model": "llama-7b", "rate": 2.0},
               {"name": "b", "model": "/ckpt/huggyllama/llama-7b", "rate": 1.0}],
    "avg_prompt_len": 32, "avg_output_len": 16,
}
PLACEMENT = {
    "policy": "muxserve",
    "units": [{"num_gpus": 1, "models": [
        {"name": "a", "model": "llama-7b", "tensor_parallel_size": 1,
         "mps_percentage": [100, 50], "max_num_seqs": 64},
        {"name": "b", "model": "llama-7b", "tensor_parallel_size": 1,
         "mps_percentage": [100, 50], "max_num_seqs": 64}]}],
}
ARGS = ["--lengths", "fixed:32,16", "--duration-s", "5", "--seed", "1", "--quiet"]


def _write(tmp_path: Path, name: str, data: object) -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_simulate_writes_the_result_schema(tmp_path: Path) -> None:
    w = _write(tmp_path, "w.yaml", WORKLOAD)
    pl = _write(tmp_path, "p.yaml", PLACEMENT)
    out = tmp_path / "r.json"
    assert main(["simulate", w, "--placement", pl, "-o", str(out), "--slo-scale", "5,10",
                 "--plot", str(tmp_path / "figs"), *ARGS]) == 0
    r = json.loads(out.read_text())
    for key in ("policy", "throughput_rps", "rate_weighted_throughput_rps",
                "token_throughput_tps", "slo_attainment", "ttft_s", "tpot_s", "latency_s",
                "per_model"):
        assert key in r
    assert r["policy"] == "muxserve" and set(r["per_model"]) == {"a", "b"}
    assert r["num_finished"] == r["num_requests"] > 0
    assert r["slo_attainment"]["scale"] == 5.0 and "10.0" in r["slo_attainment"]["by_scale"]
    assert r["token_throughput_tps"] == pytest.approx(16 * r["throughput_rps"])
    assert (tmp_path / "figs" / "per_model_muxserve.png").stat().st_size > 1000
    # same seed, same numbers
    out2 = tmp_path / "r2.json"
    main(["simulate", w, "--placement", pl, "-o", str(out2), "--slo-scale", "5,10", *ARGS])
    assert json.loads(out2.read_text())["latency_s"] == r["latency_s"]


def test_sweep_plans_three_policies(tmp_path: Path) -> None:
    w = _write(tmp_path, "w.yaml", WORKLOAD)
    out = tmp_path / "s.json"
    assert main(["simulate", w, "--sweep", "rate-scale=0.5,1", "-o", str(out),
                 "--plot", str(tmp_path), *ARGS]) == 0
    s = json.loads(out.read_text())
    assert [(r["policy"], r["sweep"]["rate-scale"]) for r in s["results"]] == [
        (p, v) for v in (0.5, 1.0) for p in ("muxserve", "spatial", "temporal")]
    assert (tmp_path / "sweep_rate-scale.png").exists()


@pytest.mark.parametrize("field,mutate", [
    ("rate", lambda d: d["models"][0].pop("rate")),
    ("model", lambda d: d["models"][1].pop("model")),
    ("ngpus_per_node", lambda d: d["cluster"].pop("ngpus_per_node")),
])
def test_bad_workload_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      field: str, mutate) -> None:  # type: ignore[no-untyped-def]
    bad = json.loads(json.dumps(WORKLOAD))
    mutate(bad)
    w = _write(tmp_path, "w.yaml", bad)
    assert main(["simulate", w, "-o", str(tmp_path / "r.json"), *ARGS]) == 2
    assert field in capsys.readouterr().err


@pytest.mark.parametrize("field,mutate", [
    ("mps_percentage", lambda d: d["units"][0]["models"][0].pop("mps_percentage")),
    ("num_gpus", lambda d: d["units"][0].pop("num_gpus")),
    ("tensor_parallel_size", lambda d: d["units"][0]["models"][1].update(
        tensor_parallel_size=2)),
])
def test_bad_placement_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       field: str, mutate) -> None:  # type: ignore[no-untyped-def]
    bad = json.loads(json.dumps(PLACEMENT))
    mutate(bad)
    w = _write(tmp_path, "w.yaml", WORKLOAD)
    pl = _write(tmp_path, "p.yaml", bad)
    assert main(["simulate", w, "--placement", pl, "-o", str(tmp_path / "r.json"), *ARGS]) == 2
    assert field in capsys.readouterr().err


def test_bad_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    w = _write(tmp_path, "w.yaml", WORKLOAD)
    assert main(["simulate", w, "--sweep", "beta=1", "-o", str(tmp_path / "r.json")]) == 2
    assert "alpha, rate-scale" in capsys.readouterr().err
    assert main(["simulate", w, "--lengths", "fixed:1", "-o", str(tmp_path / "r.json")]) == 2
    assert "fixed:PROMPT,OUTPUT" in capsys.readouterr().err


def test_replay_a_real_trace(tmp_path: Path) -> None:
    traces = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "traces"
    w = _write(tmp_path, "w.yaml", WORKLOAD)
    pl = _write(tmp_path, "p.yaml", PLACEMENT)
    out = tmp_path / "r.json"
    conv = traces / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"
    assert main(["simulate", w, "--placement", pl, "--trace", f"azure:{conv}",
                 "--duration-s", "20", "--time-scale", "4", "--quiet", "-o", str(out)]) == 0
    r = json.loads(out.read_text())
    # the first 80 s of the trace compressed into 20 s, split 2:1 between a and b
    assert 200 < r["num_requests"] < 600
    assert r["per_model"]["a"]["num_requests"] > r["per_model"]["b"]["num_requests"]
    assert main(["simulate", w, "--trace", "csv:x", "-o", str(out)]) == 2
