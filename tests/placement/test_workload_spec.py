"""Reading the original workload YAMLs and building the paper's synthetic set."""

from __future__ import annotations

import pytest
from conftest import CHATLMSYS

from muxserve.placement.workload_spec import (
    read_workload,
    resolve_arch,
    synthetic_workload,
    workload_from_dict,
)

CONDENSE2000 = ("requests_over_time_models_days_from_day55_to_day55_condense2000_N17_maxrate_32_"
                "avgrate_11.yaml")


def test_reads_every_chatlmsys_workload_as_is() -> None:
    files = sorted(CHATLMSYS.glob("*.yaml"))
    assert len(files) == 5
    for f in files:
        w = read_workload(f)
        assert len(w.models) == 16
        assert w.cluster is not None and (w.cluster.num_nodes, w.cluster.devices_per_node) == (4, 8)
        assert w.cluster.device.name == "a100-80g"
        sizes = sorted(m.arch.name for m in w.models)
        assert sizes.count("llama-7b") == 4 and sizes.count("llama-65b") == 3


def test_condense2000_values() -> None:
    w = read_workload(CHATLMSYS / CONDENSE2000)
    m = w.by_name()["llm-1"]
    assert m.arch.name == "llama-13b"
    assert m.model == "/mnt/afs/share/LLMCKPTs/huggyllama/llama-13b"
    assert m.rate_rps == pytest.approx(32.546296, rel=1e-6)
    assert m.avg_prompt_tokens == pytest.approx(100.172, rel=1e-4)
    assert m.avg_output_tokens == pytest.approx(261.314, rel=1e-4)
    assert w.total_rate_rps == pytest.approx(190.0, abs=0.1)


def test_resolve_arch_forms() -> None:
    assert resolve_arch("/x/huggyllama/llama-30b").name == "llama-30b"
    assert resolve_arch("65b").name == "llama-65b"
    assert resolve_arch("meta/llama-3-70b-instruct").name == "llama-3-70b"
    assert resolve_arch("qwen2.5-7b").name == "qwen2.5-7b"


def _doc(**model: object) -> dict:
    base = {"name": "llm-0", "model": "llama-7b", "rate": 1.0}
    base.update(model)
    return {"cluster": {"nnodes": 1, "ngpus_per_node": 8}, "models": [base],
            "avg_prompt_len": 100, "avg_output_len": 200}


def test_negative_rate_names_model_and_field() -> None:
    with pytest.raises(ValueError, match=r"llm-0.*rate.*-2"):
        workload_from_dict(_doc(rate=-2.0))


def test_unknown_model_lists_presets() -> None:
    with pytest.raises(ValueError, match=r"llm-0.*unknown model 'gpt-9'.*llama-13b.*smollm2-135m"):
        workload_from_dict(_doc(model="gpt-9"))


def test_missing_fields_are_named() -> None:
    d = _doc()
    del d["models"][0]["rate"]
    with pytest.raises(ValueError, match=r"llm-0.*missing field 'rate'"):
        workload_from_dict(d)
    d = _doc()
    del d["avg_output_len"]
    with pytest.raises(ValueError, match=r"missing field 'avg_output_len'"):
        workload_from_dict(d)
    with pytest.raises(ValueError, match=r"missing field 'models'"):
        workload_from_dict({"cluster": {"nnodes": 1, "ngpus_per_node": 1}})
    with pytest.raises(ValueError, match=r"unknown device preset 'tpu'.*a100-80g"):
        workload_from_dict({**_doc(), "cluster": {"nnodes": 1, "ngpus_per_node": 1,
                                                  "device": "tpu"}})


def test_paper19_synthetic() -> None:
    w = synthetic_workload("paper19", alpha=0.9, max_rate_rps=40)
    names = [m.arch.name for m in w.models]
    assert names[:12] == ["llama-7b"] * 12 and names[12:16] == ["llama-13b"] * 4
    assert names[16:] == ["llama-30b", "llama-30b", "llama-65b"]
    assert w.models[0].rate_rps == 40.0
    assert w.models[9].rate_rps == pytest.approx(40 * 10 ** -0.9)
    with pytest.raises(ValueError, match="paper19"):
        synthetic_workload("paper20")
