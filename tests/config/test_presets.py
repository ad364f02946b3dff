"""Model and device presets: numbers checked against the published configs; config-file loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from muxserve.config.devices import DEVICE_PRESETS, Cluster, get_device
from muxserve.config.models import MODEL_PRESETS, get_model_arch, load_model_arch

# Parameter counts of the released checkpoints (model cards / safetensors totals). Ours ignore
# biases (Qwen2.5 has q/k/v biases: ~0.1% of its size), hence the 1% tolerance.
PUBLISHED_PARAMS = {
    "llama-7b": 6.74e9, "llama-13b": 13.02e9, "llama-30b": 32.53e9, "llama-65b": 65.29e9,
    "llama-3-8b": 8.03e9, "llama-3-70b": 70.55e9, "mistral-7b": 7.24e9,
    "qwen2.5-7b": 7.62e9, "qwen2.5-72b": 72.71e9, "smollm2-135m": 134.5e6,
    "gemma3-270m": 268e6,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_counts_match_published(name: str) -> None:
    assert get_model_arch(name).num_params == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)


def test_every_preset_is_checked() -> None:
    assert set(MODEL_PRESETS) == set(PUBLISHED_PARAMS)


def test_kv_bytes_per_token_by_hand() -> None:
    # llama-7b (MHA): 2 (K,V) x 32 layers x 32 heads x 128 dims x 2 bytes = 512 KiB
    assert get_model_arch("llama-7b").kv_bytes_per_token() == 512 * 1024
    # llama-3-8b (GQA, 8 KV heads): a quarter of that
    assert get_model_arch("llama-3-8b").kv_bytes_per_token() == 128 * 1024


def test_device_presets() -> None:
    assert {"a100-80g", "h100-80g", "h200", "l40s", "cpu-2core"} <= set(DEVICE_PRESETS)
    cpu = get_device("cpu-2core")
    assert cpu.kind == "cpu" and cpu.compute_units == 2
    assert 1e9 < cpu.peak_flops < 1e12 and 1e9 < cpu.mem_bandwidth_bps < 1e11
    assert Cluster.parse("1x1xcpu-2core").num_devices == 1
    with pytest.raises(ValueError, match="valid: .*cpu-2core"):
        get_device("tpu")


def test_load_preset_by_name() -> None:
    assert load_model_arch("llama-13b") is MODEL_PRESETS["llama-13b"]


def test_load_hf_config_json_file_and_folder(tmp_path: Path) -> None:
    cfg = {  # HuggingFaceTB/SmolLM2-135M config.json (the fields we read)
        "model_type": "llama", "num_hidden_layers": 30, "hidden_size": 576,
        "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
        "vocab_size": 49152, "max_position_embeddings": 8192, "rope_theta": 100000,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": True}
    folder = tmp_path / "SmolLM2-135M"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    arch = load_model_arch(folder)
    assert arch.name == "SmolLM2-135M"
    assert arch.with_(name="smollm2-135m") == MODEL_PRESETS["smollm2-135m"]
    assert load_model_arch(str(folder / "config.json")).num_params == arch.num_params


def test_load_our_yaml(tmp_path: Path) -> None:
    p = tmp_path / "tiny-llama.yaml"
    p.write_text("family: llama\nnum_layers: 2\nhidden_size: 64\nnum_heads: 4\nnum_kv_heads: 2\n"
                 "head_dim: 16\nintermediate_size: 128\nvocab_size: 1000\n")
    arch = load_model_arch(p)
    assert (arch.name, arch.num_layers, arch.num_kv_heads) == ("tiny-llama", 2, 2)
    assert arch.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 2


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a preset.*llama-7b"):
        load_model_arch("llama-9000b")
    bad = tmp_path / "bad.yaml"
    bad.write_text("family: llama\nnum_layerz: 2\n")
    with pytest.raises(ValueError, match="unknown keys \\['num_layerz'\\]"):
        load_model_arch(bad)
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"family": "llama", "num_layers": 2}))
    with pytest.raises(ValueError, match="missing"):
        load_model_arch(missing)
