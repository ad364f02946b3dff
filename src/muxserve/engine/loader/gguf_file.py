"""Read a GGUF file: architecture, dequantized weights in Hugging Face layout, tokenizer.

Weights come out under the names and in the layout of transformers' LlamaForCausalLM /
Gemma3ForCausalLM state dicts, bit for bit what `from_pretrained(folder, gguf_file=...)` gives:

- llama.cpp's converter permutes the rows of Llama's attn_q / attn_k (it interleaves the two
  RoPE halves of each head); we undo that, so q_proj/k_proj rotate by halves as in HF.
- Gemma3's GGUF norm weights already include the +1 of Gemma's RMSNorm (llama.cpp computes
  x * w). HF's Gemma3RMSNorm computes x * (1 + w), so we subtract 1 (in fp32, like transformers).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from muxserve.config.models import ModelArch
from muxserve.engine.chat_templates import FALLBACK_TEMPLATES
from muxserve.engine.loader.gguf_format import GGUFFile, read_gguf
from muxserve.engine.loader.tokenizer_build import build_gguf_backend
from muxserve.engine.tokenizer import Tokenizer

SUPPORTED_ARCHS = ("llama", "gemma3")
GGUF_MAGIC = b"GGUF"

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm", "attn_norm": "input_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
# the norm around the MLP is named differently per family (Gemma3 has four norms per layer)
_FAMILY_LAYER_NAMES = {
    "llama": {"ffn_norm": "post_attention_layernorm"},
    "gemma3": {"post_attention_norm": "post_attention_layernorm",
               "ffn_norm": "pre_feedforward_layernorm",
               "post_ffw_norm": "post_feedforward_layernorm"},
}
_BLK = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")


def check_gguf_header(path: Path) -> None:
    """FileNotFoundError if `path` is missing, ValueError if it does not start like a GGUF."""
    if not path.is_file():
        raise FileNotFoundError(f"GGUF file not found: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ValueError(f"{path} is not a GGUF file (starts with {magic!r}, expected b'GGUF')")


def open_gguf(path: Path) -> GGUFFile:
    """Open and validate a GGUF file; a missing file raises FileNotFoundError, anything that is
    not a complete GGUF file a ValueError, both naming the file."""
    check_gguf_header(path)
    try:
        return read_gguf(path)
    except ValueError:
        raise
    except Exception as e:  # e.g. numpy reshape errors on inconsistent sizes
        raise ValueError(f"{path} is a corrupt GGUF file: {e}") from e


def field_value(reader: GGUFFile, key: str, default: Any = None) -> Any:
    """A metadata value (see GGUFFile.fields), or `default`."""
    return reader.fields.get(key, default)


def arch_from_gguf(reader: GGUFFile, name: str, path: Path) -> ModelArch:
    """ModelArch from the `<arch>.*` metadata keys.

    Gemma3 files do not store the sliding-window pattern, the local RoPE base or the query
    scale; llama.cpp hard-codes them (every 6th layer global, base 1e4, head_dim ** -0.5), and
    so do we unless the file carries `gemma3.attention.sliding_window_pattern` /
    `gemma3.rope.freq_base_swa`.
    """
    a = field_value(reader, "general.architecture")
    if a not in SUPPORTED_ARCHS:
        raise ValueError(f"{path}: unsupported GGUF architecture {a!r}; valid: "
                         f"{', '.join(SUPPORTED_ARCHS)}")

    def need(key: str) -> Any:
        v = field_value(reader, f"{a}.{key}")
        if v is None:
            raise ValueError(f"{path}: GGUF metadata key {a}.{key} is missing")
        return v

    hidden, heads = int(need("embedding_length")), int(need("attention.head_count"))
    head_dim = int(field_value(reader, f"{a}.attention.key_length", hidden // heads))
    vocab = field_value(reader, f"{a}.vocab_size")
    if vocab is None:
        vocab = len(reader.fields.get("tokenizer.ggml.tokens", ()))
    names = {t.name for t in reader.tensors}
    common: dict[str, Any] = dict(
        name=name, family=a, num_layers=int(need("block_count")), hidden_size=hidden,
        num_heads=heads, num_kv_heads=int(field_value(reader, f"{a}.attention.head_count_kv",
                                                      heads)),
        head_dim=head_dim, intermediate_size=int(need("feed_forward_length")),
        vocab_size=int(vocab), max_context=int(need("context_length")),
        rope_theta=float(field_value(reader, f"{a}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
        tie_embeddings="output.weight" not in names)
    scaling = field_value(reader, f"{a}.rope.scaling.type")
    if scaling not in (None, "none"):
        raise ValueError(f"{path}: RoPE scaling {scaling!r} is not supported")
    if a == "gemma3":
        scale = field_value(reader, "gemma3.attention.scale")
        return ModelArch(
            sliding_window=int(need("attention.sliding_window")),
            sliding_window_pattern=_window_pattern(
                field_value(reader, "gemma3.attention.sliding_window_pattern", 6),
                common["num_layers"], path),
            rope_local_theta=float(field_value(reader, "gemma3.rope.freq_base_swa", 10000.0)),
            query_pre_attn_scalar=float(scale ** -2 if scale else head_dim), **common)
    return ModelArch(**common)


def _window_pattern(value: int | list[bool], num_layers: int, path: Path) -> int:
    """Newer files store one bool per layer (True = sliding window); we need the period N of
    "every Nth layer is global"."""
    if isinstance(value, int):
        return value
    period = next((i + 1 for i, local in enumerate(value) if not local), len(value) + 1)
    if any(bool(local) != ((i + 1) % period != 0) for i, local in enumerate(value)):
        raise ValueError(f"{path}: sliding-window layers {value} do not repeat with a period")
    return period


def hf_name(gguf_name: str, family: str) -> str:
    """The Hugging Face state-dict name of GGUF tensor `gguf_name`; ValueError if unknown."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLK.match(gguf_name)
    if m:
        part = _LAYER_NAMES.get(m.group(2)) or _FAMILY_LAYER_NAMES[family].get(m.group(2))
        if part:
            return f"model.layers.{m.group(1)}.{part}.weight"
    raise ValueError(f"unexpected GGUF tensor {gguf_name!r} for a {family} model")


def _unpermute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp stored each head's rows as (dim/2, 2) pairs; HF wants (2, dim/2) halves
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def read_weights(reader: GGUFFile, arch: ModelArch, path: Path) -> dict[str, torch.Tensor]:
    """All tensors, dequantized to fp32, under HF names and in HF layout."""
    out: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        name = hf_name(t.name, arch.family)
        try:
            with np.errstate(invalid="ignore", over="ignore"):  # reported below as non-finite
                w = gguf.quants.dequantize(t.data, t.tensor_type)
        except Exception as e:
            raise ValueError(f"{path}: cannot dequantize tensor {t.name!r} "
                             f"({t.tensor_type.name}): {e}") from e
        w = np.asarray(w, dtype=np.float32)
        if not np.isfinite(w).all():  # a damaged scale byte turns whole blocks into inf/nan
            raise ValueError(f"{path}: tensor {t.name!r} has non-finite values")
        if arch.family == "llama" and ".attn_q." in t.name:
            w = _unpermute_rows(w, arch.num_heads)
        elif arch.family == "llama" and ".attn_k." in t.name:
            w = _unpermute_rows(w, arch.num_kv_heads)
        elif arch.family == "gemma3" and t.name.endswith("norm.weight"):
            w = w - np.float32(1.0)
        out[name] = torch.from_numpy(np.array(w, dtype=np.float32, copy=True))
    return out


def read_tokenizer(reader: GGUFFile, family: str) -> Tokenizer:
    """The tokenizer described by the `tokenizer.*` metadata (see tokenizer_build)."""
    meta = {k[len("tokenizer.ggml."):]: field_value(reader, k) for k in reader.fields
            if k.startswith("tokenizer.ggml.")}
    if "tokens" not in meta:
        raise ValueError("GGUF file has no tokenizer.ggml.tokens metadata")
    backend = build_gguf_backend(meta, family)
    tokens = meta["tokens"]
    bos, eos = meta.get("bos_token_id"), meta.get("eos_token_id")
    eos_ids = {int(eos)} if eos is not None else set()
    # Gemma's chat turns end with <end_of_turn>; llama.cpp also treats it as end-of-generation
    for stop in ("<end_of_turn>", "<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
        if stop in tokens:
            eos_ids.add(tokens.index(stop))
    add_bos = meta.get("add_bos_token")
    if add_bos is None:  # llama.cpp's default: SentencePiece vocabularies get a BOS
        add_bos = meta.get("model") == "llama"
    return Tokenizer(
        backend=backend, bos_token_id=None if bos is None else int(bos),
        eos_token_id=None if eos is None else int(eos), eos_token_ids=frozenset(eos_ids),
        add_bos_token=bool(add_bos), chat_template=field_value(reader, "tokenizer.chat_template"),
        fallback_template=family if family in FALLBACK_TEMPLATES else "plain",
        pad_token_id=meta.get("padding_token_id"),
        kind="gpt2-bpe" if meta.get("model") == "gpt2" else "sentencepiece-bpe")
