"""Llama-family decoder (Llama, SmolLM2, Mistral, Qwen2 with its q/k/v biases): GQA, RoPE,
SiLU-gated MLP, RMSNorm. QKV and gate/up projections are fused at load time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from muxserve.config.models import ModelArch
from muxserve.engine.attention import AttnBatch, PagedAttention
from muxserve.engine.models.common import (
    Weights,
    add_rms_norm,
    apply_rope,
    embed_tokens,
    gated_mlp,
    rope_cos_sin,
    rope_inv_freq,
)
from muxserve.engine.models.linear import Linear


@dataclass(frozen=True)
class LlamaLayer:
    input_norm: torch.Tensor  # [hidden]
    qkv: Linear               # [(H_q + 2 H_kv) * D, hidden], bias (Qwen2) or none
    o: Linear                 # [hidden, H_q * D]
    post_norm: torch.Tensor   # [hidden]
    gate_up: Linear           # [2 * I, hidden]
    down: Linear              # [hidden, I]

    def linears(self) -> list[Linear]:
        return [self.qkv, self.o, self.gate_up, self.down]


class LlamaModel:
    def __init__(self, arch: ModelArch, weights: Mapping[str, torch.Tensor],
                 dtype: torch.dtype) -> None:
        w = Weights(weights, dtype)
        self.arch, self.dtype = arch, dtype
        self.embed: torch.Tensor | None = w.get("embed_tokens.weight")  # [vocab, hidden]
        self.lm_head = Linear(w.lm_head(arch.tie_embeddings, self.embed))  # [vocab, hidden]
        self.tied = self.lm_head.weight is self.embed
        self.norm = w.get("norm.weight")
        self.inv_freq = rope_inv_freq(arch.head_dim, arch.rope_theta)
        self.local = [arch.is_local_layer(i) for i in range(arch.num_layers)]  # Mistral-style
        self.layers = []
        for i in range(arch.num_layers):
            p = f"layers.{i}."
            qkv = [p + f"self_attn.{n}_proj.weight" for n in "qkv"]
            self.layers.append(LlamaLayer(
                input_norm=w.get(p + "input_layernorm.weight"),
                qkv=Linear(w.cat(qkv), w.cat_bias(qkv)),
                o=Linear(w.get(p + "self_attn.o_proj.weight")),
                post_norm=w.get(p + "post_attention_layernorm.weight"),
                gate_up=Linear(w.cat([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"])),
                down=Linear(w.get(p + "mlp.down_proj.weight"))))

    def forward(self, tokens: torch.Tensor, batch: AttnBatch, attn: PagedAttention
                ) -> torch.Tensor:
        """tokens: [T] new tokens of the batch. Returns fp32 logits [B, vocab] of each last token.

        Modifies the pool: K/V of every new token are written at the batch's slots.
        """
        a = self.arch
        Hq, Hkv, D, eps = a.num_heads, a.num_kv_heads, a.head_dim, a.rms_norm_eps
        T = tokens.shape[0]
        x = embed_tokens(tokens, self.embed, self.lm_head)                         # [T, hidden]
        cos, sin = rope_cos_sin(batch.positions, self.inv_freq, self.dtype)  # [T, 1, D]
        fused = attn.can_fuse(batch)
        if fused:
            cos, sin = cos.view(T, D).float(), sin.view(T, D).float()
        h = add_rms_norm(x, None, self.layers[0].input_norm, eps)
        for i, w in enumerate(self.layers):
            qkv = w.qkv(h)                                          # [T, (H_q + 2 H_kv) * D]
            window = a.sliding_window if self.local[i] else 0
            if fused:
                o = attn.decode(qkv, i, batch, cos, sin, None, window, eps)
            else:
                qkv = qkv.view(T, Hq + 2 * Hkv, D)
                qk = apply_rope(qkv[:, :Hq + Hkv], cos, sin)        # [T, H_q + H_kv, D]
                kv = torch.cat((qk[:, Hq:], qkv[:, Hq + Hkv:]), 1)  # [T, 2 * H_kv, D]
                o = attn(qk[:, :Hq], kv, i, batch, attn.gather_buffer(batch),
                         local=self.local[i])                       # [T, H_q * D]
            h = add_rms_norm(x, w.o(o), w.post_norm, eps)
            last = i + 1 == len(self.layers)
            h = add_rms_norm(x, gated_mlp(h, w.gate_up, w.down, "silu"),
                             self.norm if last else self.layers[i + 1].input_norm, eps)
        return self.lm_head.logits(h.index_select(0, batch.last_index))  # [B, vocab] fp32
