"""Write tiny Llama / Gemma3 GGUF files the way llama.cpp's converter does, for fast loader tests.

`write_tiny_gguf` takes HF-layout weights, applies what the converter applies (Llama: permute
the rows of q/k; Gemma3: store norm weights + 1), quantizes matrices to Q8_0 and writes the file
with tokenizer metadata. The loader must give back the HF weights (after Q8_0 rounding).
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

from muxserve.config.models import ModelArch
from muxserve.engine.loader import weight_shapes
from muxserve.engine.loader.tokenizer_build import bytes_to_unicode

LLAMA_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA_MERGES = ["Ġ t", "h e", "Ġt he"]
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
GEMMA_PIECES = ["\n", "▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "hell", "▁w", "or",
                "▁wor", "▁world", "hello", "  "]

TINY = dict(num_layers=2, hidden_size=64, num_heads=4, num_kv_heads=2, head_dim=16,
            intermediate_size=96, max_context=128, rms_norm_eps=1e-6, tie_embeddings=False)


def tiny_arch(family: str) -> ModelArch:
    if family == "llama":
        return ModelArch(name="tiny", family="llama", vocab_size=262, rope_theta=50000.0,
                         **TINY)
    return ModelArch(name="tiny", family="gemma3", vocab_size=6 + 256 + len(GEMMA_PIECES),
                     rope_theta=1e6, rope_local_theta=1e4, sliding_window=8,
                     sliding_window_pattern=2, query_pre_attn_scalar=16.0,
                     **{**TINY, "tie_embeddings": True})


def tiny_weights(arch: ModelArch, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(s, generator=g) * 0.1 for k, s in weight_shapes(arch).items()}


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
            "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
            "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
            "input_layernorm": "attn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down"}
_FAMILY = {"llama": {"post_attention_layernorm": "ffn_norm"},
           "gemma3": {"post_attention_layernorm": "post_attention_norm",
                      "pre_feedforward_layernorm": "ffn_norm",
                      "post_feedforward_layernorm": "post_ffw_norm"}}


def gguf_name(name: str, family: str) -> str:
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
           "output_norm.weight", "lm_head.weight": "output.weight"}
    if name in top:
        return top[name]
    _, _, layer, rest = name.split(".", 3)
    part = rest.removesuffix(".weight")
    return f"blk.{layer}.{_TO_GGUF.get(part) or _FAMILY[family][part]}.weight"


def q8_roundtrip(w: torch.Tensor) -> torch.Tensor:
    """What a Q8_0 matrix dequantizes to."""
    q = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType.Q8_0)
    return torch.from_numpy(gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).copy())


def write_tiny_gguf(path: Path, arch: ModelArch, weights: dict[str, torch.Tensor],
                    chat_template: str | None = None, sentencepiece: bool = False) -> Path:
    """sentencepiece: give a Llama model a Llama-2-style SentencePiece vocabulary (scores)
    instead of byte-level BPE."""
    w = gguf.GGUFWriter(str(path), arch.family)
    w.add_block_count(arch.num_layers)
    w.add_context_length(arch.max_context)
    w.add_embedding_length(arch.hidden_size)
    w.add_feed_forward_length(arch.intermediate_size)
    w.add_head_count(arch.num_heads)
    w.add_head_count_kv(arch.num_kv_heads)
    w.add_layer_norm_rms_eps(arch.rms_norm_eps)
    w.add_rope_freq_base(arch.rope_theta)
    w.add_key_length(arch.head_dim)
    if arch.family == "gemma3":
        w.add_sliding_window(arch.sliding_window)
        w.add_sliding_window_pattern([arch.is_local_layer(i) for i in range(arch.num_layers)])
        _gemma_tokenizer(w)
    elif sentencepiece:
        _sentencepiece_tokenizer(w)
    else:
        _llama_tokenizer(w)
    if chat_template:
        w.add_chat_template(chat_template)
    for name, t in weights.items():
        a = t.float().numpy()
        if arch.family == "llama" and ".q_proj." in name:
            a = _permute(a, arch.num_heads)
        elif arch.family == "llama" and ".k_proj." in name:
            a = _permute(a, arch.num_kv_heads)
        if arch.family == "gemma3" and name.endswith("norm.weight"):
            a = a + np.float32(1.0)
        if a.ndim == 2:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(gguf_name(name, arch.family), q,
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(gguf_name(name, arch.family), a.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _llama_tokenizer(w: gguf.GGUFWriter) -> None:
    spelling = bytes_to_unicode()
    tokens = LLAMA_SPECIALS + [spelling[b] for b in range(256)] + ["Ġt", "he", "Ġthe"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * 3 + [1] * (len(tokens) - 3))
    w.add_token_merges(LLAMA_MERGES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)


SP_PIECES = ["▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "hell", "▁w", "or", "▁wor",
             "▁world", "hello", "▁hello", "▁h"]
SP_VOCAB = 3 + 256 + len(SP_PIECES)


def _sentencepiece_tokenizer(w: gguf.GGUFWriter) -> None:
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)] + SP_PIECES
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 259 + [-float(i) for i in range(len(SP_PIECES))])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * len(SP_PIECES))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)


def _gemma_tokenizer(w: gguf.GGUFWriter) -> None:
    tokens = GEMMA_SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + GEMMA_PIECES
    types = [3] * 6 + [6] * 256 + [4 if p in ("\n", "  ") else 1 for p in GEMMA_PIECES]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
