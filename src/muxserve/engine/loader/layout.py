"""The weight names and shapes of a model: Hugging Face's LlamaForCausalLM / Gemma3ForCausalLM
state-dict layout, which every loader produces and the forward passes consume."""

from __future__ import annotations

import torch

from muxserve.config.models import ModelArch


def weight_shapes(arch: ModelArch) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight; `lm_head.weight` only when embeddings are not tied."""
    h, hd, inter = arch.hidden_size, arch.head_dim, arch.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (arch.vocab_size, h),
                                          "model.norm.weight": (h,)}
    if not arch.tie_embeddings:
        shapes["lm_head.weight"] = (arch.vocab_size, h)
    for i in range(arch.num_layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (arch.num_heads * hd, h),
            p + "self_attn.k_proj.weight": (arch.num_kv_heads * hd, h),
            p + "self_attn.v_proj.weight": (arch.num_kv_heads * hd, h),
            p + "self_attn.o_proj.weight": (h, arch.num_heads * hd),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        })
        if arch.family == "gemma3":
            shapes.update({
                p + "self_attn.q_norm.weight": (hd,),
                p + "self_attn.k_norm.weight": (hd,),
                p + "pre_feedforward_layernorm.weight": (h,),
                p + "post_feedforward_layernorm.weight": (h,),
            })
    return shapes


def check_weights(weights: dict[str, torch.Tensor], arch: ModelArch, origin: str) -> None:
    """ValueError (naming `origin`) unless `weights` has exactly the expected names and shapes."""
    expected = weight_shapes(arch)
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{origin}: weights do not match a {arch.family} model with "
                         f"{arch.num_layers} layers; missing {missing[:5]}"
                         f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                         f"{'...' if len(unexpected) > 5 else ''}")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(f"{origin}: weight {name} has shape {tuple(weights[name].shape)}, "
                             f"expected {shape}")
