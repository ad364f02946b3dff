"""Model architectures: the numbers the engine builds from and the cost model prices.

One frozen dataclass describes every supported family. The engine reads the layer shapes;
the cost model and the planner read parameter counts and KV bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

FAMILIES = ("llama", "gemma3")


@dataclass(frozen=True)
class ModelArch:
    """Architecture of one decoder-only LLM.

    sliding_window: tokens a local layer attends to (0 = every layer is global).
    sliding_window_pattern: every Nth layer (1-based: layers N-1, 2N-1, ...) is global, the others
    local (Gemma3 uses 6). rope_local_theta is the RoPE base of local layers.
    """

    name: str
    family: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    max_context: int = 4096
    rope_theta: float = 10000.0
    rope_local_theta: float = 10000.0
    sliding_window: int = 0
    sliding_window_pattern: int = 1
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = False
    query_pre_attn_scalar: float = 0.0  # 0 = head_dim (attention scale = this ** -0.5)
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown model family {self.family!r}; valid: {', '.join(FAMILIES)}")
        for f in ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
                  "intermediate_size", "vocab_size", "max_context"):
            if getattr(self, f) <= 0:
                raise ValueError(f"{self.name}: {f} must be > 0, got {getattr(self, f)}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"{self.name}: num_heads {self.num_heads} is not a multiple of "
                             f"num_kv_heads {self.num_kv_heads}")

    # ---- derived shapes -------------------------------------------------------------------
    def is_local_layer(self, layer: int) -> bool:
        """True for sliding-window layers (Gemma3: all but every 6th)."""
        if self.sliding_window <= 0:
            return False
        return (layer + 1) % self.sliding_window_pattern != 0

    @property
    def attn_scale(self) -> float:
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def num_params(self) -> int:
        """Parameter count (embeddings counted once when tied)."""
        h, hd = self.hidden_size, self.head_dim
        attn = h * hd * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = 3 * h * self.intermediate_size
        per_layer = attn + mlp + 4 * h
        emb = self.vocab_size * h * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + emb + h

    def weight_bytes(self, dtype_bytes: int = 2) -> int:
        return self.num_params * dtype_bytes

    def kv_bytes_per_token(self, dtype_bytes: int = 2) -> int:
        """K and V bytes one token occupies across all layers and KV heads."""
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * dtype_bytes

    def flops_per_token(self) -> int:
        """Matmul FLOPs of one token through the weights (2 per multiply-add), no attention."""
        return 2 * (self.num_params - self.vocab_size * self.hidden_size)

    def with_(self, **changes: Any) -> ModelArch:
        return replace(self, **changes)


def _llama(name: str, layers: int, hidden: int, heads: int, kv: int, inter: int, vocab: int,
           ctx: int = 2048, theta: float = 10000.0, eps: float = 1e-6) -> ModelArch:
    return ModelArch(name=name, family="llama", num_layers=layers, hidden_size=hidden,
                     num_heads=heads, num_kv_heads=kv, head_dim=hidden // heads,
                     intermediate_size=inter, vocab_size=vocab, max_context=ctx,
                     rope_theta=theta, rms_norm_eps=eps)


MODEL_PRESETS: dict[str, ModelArch] = {
    "smollm2-135m": ModelArch(
        name="smollm2-135m", family="llama", num_layers=30, hidden_size=576, num_heads=9,
        num_kv_heads=3, head_dim=64, intermediate_size=1536, vocab_size=49152, max_context=8192,
        rope_theta=100000.0, rms_norm_eps=1e-5, tie_embeddings=True),
    "gemma3-270m": ModelArch(
        name="gemma3-270m", family="gemma3", num_layers=18, hidden_size=640, num_heads=4,
        num_kv_heads=1, head_dim=256, intermediate_size=2048, vocab_size=262144,
        max_context=32768, rope_theta=1_000_000.0, rope_local_theta=10000.0,
        sliding_window=512, sliding_window_pattern=6, rms_norm_eps=1e-6, tie_embeddings=True,
        query_pre_attn_scalar=256.0),
    "llama-7b": _llama("llama-7b", 32, 4096, 32, 32, 11008, 32000),
    "llama-13b": _llama("llama-13b", 40, 5120, 40, 40, 13824, 32000),
    "llama-30b": _llama("llama-30b", 60, 6656, 52, 52, 17920, 32000),
    "llama-65b": _llama("llama-65b", 80, 8192, 64, 64, 22016, 32000),
    "llama-3-8b": _llama("llama-3-8b", 32, 4096, 32, 8, 14336, 128256, 8192, 500000.0, 1e-5),
    "llama-3-70b": _llama("llama-3-70b", 80, 8192, 64, 8, 28672, 128256, 8192, 500000.0, 1e-5),
    "mistral-7b": _llama("mistral-7b", 32, 4096, 32, 8, 14336, 32000, 32768, 1e6, 1e-5),
    "qwen2.5-7b": _llama("qwen2.5-7b", 28, 3584, 28, 4, 18944, 152064, 32768, 1e6, 1e-6),
    "qwen2.5-72b": _llama("qwen2.5-72b", 80, 8192, 64, 8, 29568, 152064, 32768, 1e6, 1e-6),
}


def get_model_arch(name: str) -> ModelArch:
    """Look up a preset by name; the error lists the valid names."""
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(sorted(MODEL_PRESETS))}"
                         ) from None


def _hf_rope_theta(cfg: dict[str, Any], layer_type: str, legacy_key: str) -> float:
    """RoPE base: top-level key (transformers < 5) or rope_parameters (>= 5; nested per layer
    type for Gemma3), else 10000."""
    if legacy_key in cfg:
        return float(cfg[legacy_key])
    params = cfg.get("rope_parameters") or {}
    params = params.get(layer_type, params)
    return float(params.get("rope_theta", 10000.0))


def arch_from_hf_config(cfg: dict[str, Any], name: str = "") -> ModelArch:
    """Build a ModelArch from a Hugging Face config.json dict (llama/mistral/qwen2/gemma3)."""
    mt = cfg.get("model_type", "llama")
    if mt == "gemma3":  # multimodal wrapper keeps the LM config nested
        cfg = cfg.get("text_config", cfg)
        mt = "gemma3_text"
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    common: dict[str, Any] = dict(
        name=name or cfg.get("_name_or_path", mt), num_layers=int(cfg["num_hidden_layers"]),
        hidden_size=hidden, num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or hidden // heads),
        intermediate_size=int(cfg["intermediate_size"]), vocab_size=int(cfg["vocab_size"]),
        max_context=int(cfg.get("max_position_embeddings", 4096)),
        rope_theta=_hf_rope_theta(cfg, "full_attention", "rope_theta"),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)))
    if mt == "gemma3_text":
        return ModelArch(family="gemma3", sliding_window=int(cfg.get("sliding_window", 512)),
                         sliding_window_pattern=int(cfg.get("sliding_window_pattern", 6)),
                         rope_local_theta=_hf_rope_theta(cfg, "sliding_attention",
                                                          "rope_local_base_freq"),
                         query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar", 0) or 0),
                         **common)
    if mt in ("llama", "mistral", "qwen2"):
        return ModelArch(family="llama", **common)
    raise ValueError(f"unsupported model_type {mt!r}; valid: llama, mistral, qwen2, gemma3_text")


def num_blocks_for(tokens: int, tokens_per_block: int) -> int:
    return math.ceil(tokens / tokens_per_block)


def _arch_from_mapping(cfg: dict[str, Any], name: str) -> ModelArch:
    """Our schema (ModelArch field names) or a Hugging Face config.json dict."""
    if "num_hidden_layers" in cfg or "text_config" in cfg:
        return arch_from_hf_config(cfg, name=str(cfg.get("name") or name))
    known = {f.name for f in fields(ModelArch)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"model config {name!r}: unknown keys {unknown}; valid: {sorted(known)}")
    try:
        return ModelArch(**{"name": name, **cfg})
    except TypeError as e:  # a required field is missing
        raise ValueError(f"model config {name!r}: {e}") from None


def load_model_arch(name_or_path: str | Path) -> ModelArch:
    """A preset name, or a model config file: a Hugging Face ``config.json`` (or a folder holding
    one) or a YAML/JSON file with ModelArch's field names (``name`` defaults to the file stem)."""
    if isinstance(name_or_path, str) and name_or_path in MODEL_PRESETS:
        return MODEL_PRESETS[name_or_path]
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ValueError(f"unknown model {str(name_or_path)!r}: not a preset and not a config "
                         f"file; presets: {', '.join(sorted(MODEL_PRESETS))}")
    text = path.read_text()
    cfg = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    if not isinstance(cfg, dict):
        raise ValueError(f"model config {path}: expected a mapping, got {type(cfg).__name__}")
    name = path.parent.name if path.name == "config.json" else path.stem
    return _arch_from_mapping(cfg, name)
