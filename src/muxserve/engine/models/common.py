"""Layers shared by the decoder families: weight lookup and fusion, RMSNorm, RoPE, gated MLP.

Weights arrive as a dict in Hugging Face names and layout (`model.layers.0.self_attn.q_proj.weight`
is [out, in]); q/k are in HF's rotate_half RoPE order (the loader undoes GGUF's permutation).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from muxserve.engine import kernels
from muxserve.engine.models.linear import Linear

# HF checkpoints put the decoder under one of these prefixes (multimodal Gemma3 nests it).
_PREFIXES = ("model.", "model.language_model.", "language_model.model.", "")


class Weights:
    """Read-only access to an HF-named state dict, converting to the compute dtype on read."""

    def __init__(self, weights: Mapping[str, torch.Tensor], dtype: torch.dtype) -> None:
        self.weights = weights
        self.dtype = dtype
        probe = "embed_tokens.weight"
        found = [p for p in _PREFIXES if p + probe in weights]
        if not found:
            raise ValueError(f"weights have no embed_tokens.weight under any of the prefixes "
                             f"{[p for p in _PREFIXES if p]}; got keys like {list(weights)[:3]}")
        self.prefix = found[0]

    def raw(self, name: str) -> torch.Tensor:
        try:
            return self.weights[self.prefix + name]
        except KeyError:
            raise ValueError(f"missing weight {self.prefix + name!r}") from None

    def get(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        return self.raw(name).detach().to(dtype or self.dtype).contiguous()

    def cat(self, names: list[str]) -> torch.Tensor:
        """Fuse projections along the output dim (QKV, gate/up): one matmul instead of several."""
        return torch.cat([self.raw(n).detach().to(self.dtype) for n in names], 0).contiguous()

    def cat_bias(self, names: list[str]) -> torch.Tensor | None:
        """Fused biases of the projections `names` (weights' names), or None if they have none
        (Qwen2 has q/k/v biases; Llama, Mistral, SmolLM2 have none)."""
        biases = [n.removesuffix(".weight") + ".bias" for n in names]
        present = [self.prefix + b in self.weights for b in biases]
        if not any(present):
            return None
        if not all(present):
            raise ValueError(f"only some of {biases} have a bias")
        return self.cat(biases)

    def lm_head(self, tied: bool, embed: torch.Tensor) -> torch.Tensor:
        """The output projection: `embed` itself (one tensor, not a second conversion of the
        same weights) when tied or when the checkpoint has no lm_head."""
        if not tied and "lm_head.weight" in self.weights:
            return self.weights["lm_head.weight"].detach().to(self.dtype).contiguous()
        return embed


def embed_tokens(tokens: torch.Tensor, embed: torch.Tensor | None, lm_head: Linear
                 ) -> torch.Tensor:
    """Embedding rows [T, hidden]; with tied weights whose plain table was dropped after the
    lm_head was packed (ModelRunner.pack_weights), the rows come from the lm_head's tiles."""
    if embed is not None:
        return F.embedding(tokens, embed)
    return lm_head.rows(tokens)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim, scaled by weight (same dtype as x).

    torch's kernel accumulates in fp32 for bf16 inputs and rounds once at the end; HF's Llama
    rounds to bf16 before multiplying by the weight: the two differ by one bf16 rounding.
    Gemma passes weight = 1 + w (HF: x * (1 + w) computed in fp32, then cast).
    """
    return F.rms_norm(x, weight.shape, weight, eps)


def add_rms_norm(x: torch.Tensor, y: torch.Tensor | None, weight: torch.Tensor, eps: float,
                 y_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Residual step then the next norm: x += y (or x += rms_norm(y, y_weight), Gemma3's
    sandwich norm), in place on x [T, hidden]; returns rms_norm(x, weight).

    One fused pass when the CPU kernels serve x's dtype, else the same ops in PyTorch.
    """
    k = kernels.ops(x.dtype)
    if k is not None and x.device.type == "cpu":
        return k.add_rms_norm(x, y, y_weight, weight, eps)
    if y is not None:
        x += y if y_weight is None else rms_norm(y, y_weight, eps)
    return rms_norm(x, weight, eps)


ACTIVATIONS = {"silu": 0, "gelu_tanh": 1}  # the fused kernel's codes


def gated_act(gate_up: torch.Tensor, act: str) -> torch.Tensor:
    """act(gate) * up of a fused gate_up projection [T, 2 * I] -> [T, I]."""
    k = kernels.ops(gate_up.dtype)
    if k is not None and gate_up.device.type == "cpu":
        return k.gated_act(gate_up, ACTIVATIONS[act])
    gate, up = gate_up.chunk(2, dim=-1)
    return (silu(gate) if act == "silu" else gelu_tanh(gate)) * up


def rope_inv_freq(head_dim: int, theta: float) -> torch.Tensor:
    """[D/2] fp32 inverse frequencies, computed as HF's default rope does."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin: [T, 1, D] for positions [T], in the compute dtype (as HF casts them)."""
    freqs = positions.float().unsqueeze(-1) * inv_freq          # [T, D/2]
    emb = torch.cat((freqs, freqs), -1).unsqueeze(1)            # [T, 1, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, heads, D] in HF's rotate_half convention; returns a new tensor."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), -1)
    return x * cos + rotated * sin


def gated_mlp(x: torch.Tensor, gate_up: Linear, down: Linear, act: str) -> torch.Tensor:
    """down(act(gate(x)) * up(x)) with gate and up fused: gate_up is [2 * I, hidden]."""
    return down(gated_act(gate_up(x), act))


def silu(x: torch.Tensor) -> torch.Tensor:
    return F.silu(x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")
