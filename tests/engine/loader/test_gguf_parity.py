"""The built-in models load bit for bit as transformers loads the same GGUF files (slow)."""

from __future__ import annotations

import pytest
import torch

from muxserve.config.models import MODEL_PRESETS
from muxserve.engine.loader import load_model
from muxserve.engine.loader.cache import cache_root
from muxserve.engine.loader.sources import resolve_source


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_weights_equal_transformers_gguf_loading(name: str) -> None:
    from transformers import AutoModelForCausalLM

    ours = load_model(name)
    path = resolve_source(name, cache_root()).path
    assert path is not None
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32)
    ref = hf.state_dict()
    assert set(ref) - set(ours.weights) == {"lm_head.weight"}  # tied: we keep one copy
    for k, w in ours.weights.items():
        assert torch.equal(w, ref[k]), k
    assert torch.equal(ref["lm_head.weight"], ours.weights["model.embed_tokens.weight"])
    # the architecture read from the file is the preset the planner uses
    preset = MODEL_PRESETS[name]
    assert ours.arch == preset, (ours.arch, preset)
    cfg = hf.config
    assert ours.arch.rms_norm_eps == pytest.approx(cfg.rms_norm_eps, rel=1e-6)
    if name == "gemma3-270m":
        assert ours.arch.query_pre_attn_scalar == cfg.query_pre_attn_scalar
        assert ours.arch.sliding_window == cfg.sliding_window
        assert [ours.arch.is_local_layer(i) for i in range(ours.arch.num_layers)] == \
            [t == "sliding_attention" for t in cfg.layer_types]


@pytest.mark.slow
def test_bf16_is_fp32_rounded() -> None:
    fp32 = load_model("smollm2-135m")
    bf16 = load_model("smollm2-135m", dtype=torch.bfloat16)
    for k, w in bf16.weights.items():
        assert w.dtype == torch.bfloat16 and torch.equal(w, fp32.weights[k].bfloat16()), k
