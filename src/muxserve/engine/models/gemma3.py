"""Gemma3 text decoder: per-head QK RMSNorm, sandwich norms with HF's x * (1 + w) convention,
embeddings scaled by sqrt(hidden), gelu-tanh MLP, 5 sliding-window layers (RoPE base 1e4) per
global layer (RoPE base 1e6), attention scale query_pre_attn_scalar ** -0.5, tied embeddings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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
class Gemma3Layer:
    # norm scales are 1 + w (in the compute dtype)
    input_norm: torch.Tensor  # [hidden]
    qkv: Linear               # [(H_q + 2 H_kv) * D, hidden]
    qk_norm: torch.Tensor     # [H_q + H_kv, D]: q_norm for query heads, k_norm for KV heads
    o: Linear                 # [hidden, H_q * D]
    post_attn_norm: torch.Tensor
    pre_ff_norm: torch.Tensor
    post_ff_norm: torch.Tensor
    gate_up: Linear           # [2 * I, hidden]
    down: Linear              # [hidden, I]
    local: bool               # sliding-window layer

    def linears(self) -> list[Linear]:
        return [self.qkv, self.o, self.gate_up, self.down]


class Gemma3Model:
    def __init__(self, arch: ModelArch, weights: Mapping[str, torch.Tensor],
                 dtype: torch.dtype) -> None:
        w = Weights(weights, dtype)
        self.arch, self.dtype = arch, dtype
        self.embed: torch.Tensor | None = w.get("embed_tokens.weight")  # [vocab, hidden]
        self.lm_head = Linear(w.lm_head(arch.tie_embeddings, self.embed))
        self.tied = self.lm_head.weight is self.embed
        # HF multiplies by sqrt(hidden) rounded to the weight dtype
        self.embed_scale = torch.tensor(arch.hidden_size ** 0.5).to(dtype)
        self.norm = self._scale(w, "norm.weight")
        self.inv_freq_global = rope_inv_freq(arch.head_dim, arch.rope_theta)
        self.inv_freq_local = rope_inv_freq(arch.head_dim, arch.rope_local_theta)
        Hq, Hkv = arch.num_heads, arch.num_kv_heads
        self.layers = []
        for i in range(arch.num_layers):
            p = f"layers.{i}."
            qk_norm = torch.cat((self._scale(w, p + "self_attn.q_norm.weight").expand(Hq, -1),
                                 self._scale(w, p + "self_attn.k_norm.weight").expand(Hkv, -1)))
            self.layers.append(Gemma3Layer(
                input_norm=self._scale(w, p + "input_layernorm.weight"),
                qkv=Linear(w.cat([p + f"self_attn.{n}_proj.weight" for n in "qkv"])),
                qk_norm=qk_norm.contiguous(),
                o=Linear(w.get(p + "self_attn.o_proj.weight")),
                post_attn_norm=self._scale(w, p + "post_attention_layernorm.weight"),
                pre_ff_norm=self._scale(w, p + "pre_feedforward_layernorm.weight"),
                post_ff_norm=self._scale(w, p + "post_feedforward_layernorm.weight"),
                gate_up=Linear(w.cat([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"])),
                down=Linear(w.get(p + "mlp.down_proj.weight")),
                local=arch.is_local_layer(i)))

    @staticmethod
    def _scale(w: Weights, name: str) -> torch.Tensor:
        # HF's Gemma3RMSNorm scales by (1 + w), w stored without the +1 (the loader removes it)
        return (1.0 + w.get(name, torch.float32)).to(w.dtype)

    def forward(self, tokens: torch.Tensor, batch: AttnBatch, attn: PagedAttention
                ) -> torch.Tensor:
        """tokens: [T] new tokens of the batch. Returns fp32 logits [B, vocab] of each last token.

        Modifies the pool: K/V of every new token are written at the batch's slots.
        """
        a = self.arch
        Hq, Hkv, D, eps = a.num_heads, a.num_kv_heads, a.head_dim, a.rms_norm_eps
        T = tokens.shape[0]
        x = embed_tokens(tokens, self.embed, self.lm_head) * self.embed_scale      # [T, hidden]
        fused = attn.can_fuse(batch)
        rope = {}
        for local, inv_freq in ((False, self.inv_freq_global), (True, self.inv_freq_local)):
            cos, sin = rope_cos_sin(batch.positions, inv_freq, self.dtype)  # [T, 1, D]
            rope[local] = (cos.view(T, D).float(), sin.view(T, D).float()) if fused else (cos, sin)
        h = add_rms_norm(x, None, self.layers[0].input_norm, eps)
        for i, w in enumerate(self.layers):
            qkv = w.qkv(h)                                          # [T, (H_q + 2 H_kv) * D]
            cos, sin = rope[w.local]
            if fused:
                o = attn.decode(qkv, i, batch, cos, sin, w.qk_norm,
                                a.sliding_window if w.local else 0, eps)
            else:
                qkv = qkv.view(T, Hq + 2 * Hkv, D)
                qk = _head_norm(qkv[:, :Hq + Hkv], w.qk_norm, eps)  # [T, H_q + H_kv, D]
                qk = apply_rope(qk, cos, sin)
                kv = torch.cat((qk[:, Hq:], qkv[:, Hq + Hkv:]), 1)  # [T, 2 * H_kv, D]
                o = attn(qk[:, :Hq], kv, i, batch, attn.gather_buffer(batch),
                         local=w.local)                             # [T, H_q * D]
            h = add_rms_norm(x, w.o(o), w.pre_ff_norm, eps, y_weight=w.post_attn_norm)
            last = i + 1 == len(self.layers)
            h = add_rms_norm(x, gated_mlp(h, w.gate_up, w.down, "gelu_tanh"),
                             self.norm if last else self.layers[i + 1].input_norm, eps,
                             y_weight=w.post_ff_norm)
        return self.lm_head.logits(h.index_select(0, batch.last_index))  # [B, vocab] fp32


def _head_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-head RMSNorm over D of x [T, heads, D], scaled by scale [heads, D] (q and k differ)."""
    return F.rms_norm(x, (x.shape[-1],), None, eps) * scale
