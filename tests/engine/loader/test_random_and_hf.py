"""Random-weight models and Hugging Face folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from muxserve.config.models import MODEL_PRESETS
from muxserve.engine.loader import load_model, weight_shapes

SMALL = "random:gemma3-270m?num_layers=2&vocab_size=300&hidden_size=64&intermediate_size=96"


def test_random_is_deterministic_and_seeded(tmp_path: Path) -> None:
    a = load_model(SMALL, cache_dir=tmp_path)
    b = load_model(SMALL, cache_dir=tmp_path)
    c = load_model(SMALL + "&seed=1", cache_dir=tmp_path)
    assert set(a.weights) == set(weight_shapes(a.arch))
    assert all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)
    emb = "model.embed_tokens.weight"
    assert not torch.equal(a.weights[emb], c.weights[emb])
    assert abs(a.weights[emb].std().item() - 0.02) < 0.002
    # Gemma3 norms are stored as w in x * (1 + w): identity is 0
    assert torch.count_nonzero(a.weights["model.layers.0.input_layernorm.weight"]) == 0


def test_random_overrides_and_presets(tmp_path: Path) -> None:
    m = load_model(SMALL, dtype=torch.bfloat16, cache_dir=tmp_path)
    base = MODEL_PRESETS["gemma3-270m"]
    assert m.name == "gemma3-270m"
    assert (m.arch.num_layers, m.arch.hidden_size, m.arch.vocab_size) == (2, 64, 300)
    assert m.arch.head_dim == 64 // base.num_heads  # follows hidden_size unless given
    assert m.arch.sliding_window == base.sliding_window  # untouched fields keep the preset
    assert all(w.dtype == torch.bfloat16 for w in m.weights.values())
    llama = load_model("random:smollm2-135m?num_layers=1&vocab_size=258&hidden_size=72",
                       cache_dir=tmp_path)
    assert llama.arch.family == "llama" and llama.arch.head_dim == 8
    qwen = load_model("random:qwen2.5-7b?num_layers=1&hidden_size=56&intermediate_size=8"
                      "&vocab_size=300", cache_dir=tmp_path)
    assert qwen.name == "qwen2.5-7b" and qwen.arch.head_dim == 2
    assert torch.all(llama.weights["model.norm.weight"] == 1)


def test_random_from_config_json(tmp_path: Path) -> None:
    cfg = {"model_type": "llama", "num_attention_heads": 4, "num_key_value_heads": 2,
           "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 48,
           "vocab_size": 300, "tie_word_embeddings": False}
    path = tmp_path / "tiny" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    m = load_model(f"random:{path}?seed=5", cache_dir=tmp_path)
    assert m.name == "tiny" and m.arch.num_kv_heads == 2
    assert m.weights["lm_head.weight"].shape == (300, 32)


def test_byte_tokenizer(tmp_path: Path) -> None:
    tok = load_model(SMALL, cache_dir=tmp_path).tokenizer
    assert tok.encode("hé") == [256, 104, 195, 169]
    assert tok.encode("hé", add_special_tokens=False) == [104, 195, 169]
    assert tok.decode([256, 104, 195, 169, 257]) == "hé"
    assert tok.eos_token_ids == {257} and tok.vocab_size == 258
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]) == \
        "user: hi\nassistant: "


@pytest.fixture(scope="module")
def transformers_models() -> dict[str, torch.nn.Module]:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
        num_hidden_layers=2, vocab_size=300, tie_word_embeddings=False))
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(
        hidden_size=32, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        intermediate_size=48, num_hidden_layers=2, vocab_size=300, sliding_window=16,
        query_pre_attn_scalar=16))
    return {"llama": llama, "gemma3": gemma}


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_hf_folder_round_trip(tmp_path: Path, family: str,
                              transformers_models: dict[str, torch.nn.Module]) -> None:
    hf = transformers_models[family]
    folder = tmp_path / f"hf-{family}"
    hf.save_pretrained(folder)
    # a tokenizer folder: our byte tokenizer's tokenizer.json plus an HF tokenizer_config.json
    load_model(SMALL, cache_dir=tmp_path).tokenizer.backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": True,
         "chat_template": "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"}))
    m = load_model(str(folder), cache_dir=tmp_path)
    assert m.name == f"hf-{family}" and m.arch.family == family
    ref = {k: v for k, v in hf.state_dict().items()
           if not (k == "lm_head.weight" and m.arch.tie_embeddings)}
    assert set(m.weights) == set(ref)
    assert all(torch.equal(m.weights[k], ref[k]) for k in ref)
    tok = m.tokenizer
    assert tok.bos_token_id == 256 and tok.encode("a") == [256, 97]
    assert tok.apply_chat_template([{"role": "user", "content": "x"}]) == "[x]"
