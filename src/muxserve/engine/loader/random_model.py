"""Random-weight models: any architecture, deterministic, for tests and for sizes that do not fit.

Source form: `random:<preset>` (a name in MODEL_PRESETS) or `random:<path/to/config.json>`
(a Hugging Face config), optionally followed by `?key=value&...` to override ModelArch fields
or set the seed, e.g. `random:gemma3-270m?num_layers=2&vocab_size=512&seed=3`.

Weights: every matrix ~ N(0, 0.02^2) (small, so activations stay finite through many layers);
norm weights are the identity of their family (1 for Llama's x * w, 0 for Gemma3's x * (1 + w)).
Each tensor draws from its own generator seeded by (seed, name), so the same source gives the
same weights in any process, and changing one shape does not change the others.
The tokenizer is byte-level: id b < 256 is byte b, 256 is <bos> (prepended by encode),
257 is <eos>; the vocabulary must have at least 258 ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from muxserve.config.models import MODEL_PRESETS, ModelArch, arch_from_hf_config
from muxserve.engine.loader.layout import weight_shapes
from muxserve.engine.loader.tokenizer_build import byte_tokenizer_backend
from muxserve.engine.tokenizer import Tokenizer

WEIGHT_STD = 0.02
BYTE_VOCAB = 258


def parse_random_spec(spec: str) -> tuple[ModelArch, int]:
    """(arch, seed) for what follows "random:"; ValueError names the bad part."""
    base, _, query = spec.partition("?")
    if base in MODEL_PRESETS:
        arch = MODEL_PRESETS[base]
    elif base.endswith(".json"):
        path = Path(base).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
        arch = arch_from_hf_config(cfg, name=path.parent.name or path.stem)
    else:
        raise ValueError(f"unknown random model {base!r}; use random:<preset> with a preset in "
                         f"{', '.join(sorted(MODEL_PRESETS))}, or random:<path to config.json>")
    seed = 0
    fields = {f.name: f.type for f in dataclasses.fields(ModelArch)}
    changes: dict[str, Any] = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key == "seed":
            seed = _number(key, value, int)
        elif key in fields and key not in ("name", "family", "extra"):
            kind = type(getattr(arch, key))
            changes[key] = value.lower() in ("1", "true") if kind is bool else \
                _number(key, value, kind)
        else:
            valid = sorted(k for k in fields if k not in ("name", "family", "extra"))
            raise ValueError(f"unknown random-model option {key!r}; valid: seed, "
                             f"{', '.join(valid)}")
    if changes.get("hidden_size") and "head_dim" not in changes:
        changes["head_dim"] = changes["hidden_size"] // changes.get("num_heads", arch.num_heads)
    arch = arch.with_(**changes)
    if arch.vocab_size < BYTE_VOCAB:
        raise ValueError(f"random model vocab_size must be >= {BYTE_VOCAB} for the byte "
                         f"tokenizer, got {arch.vocab_size}")
    return arch, seed


def _number(key: str, value: str, kind: type) -> Any:
    try:
        return kind(float(value)) if kind is int and "e" in value.lower() else kind(value)
    except ValueError:
        raise ValueError(f"random-model option {key}={value!r} is not a {kind.__name__}"
                         ) from None


def random_weights(arch: ModelArch, seed: int) -> dict[str, torch.Tensor]:
    """fp32 weights in HF layout (see module docstring)."""
    out: dict[str, torch.Tensor] = {}
    for name, shape in weight_shapes(arch).items():
        if len(shape) == 1:  # a norm: the identity of its family
            fill = 0.0 if arch.family == "gemma3" else 1.0
            out[name] = torch.full(shape, fill, dtype=torch.float32)
            continue
        digest = hashlib.sha256(f"{seed}|{name}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        out[name] = torch.randn(shape, generator=gen, dtype=torch.float32) * WEIGHT_STD
    return out


def byte_tokenizer() -> Tokenizer:
    return Tokenizer(backend=byte_tokenizer_backend(), bos_token_id=256, eos_token_id=257,
                     eos_token_ids=frozenset({257}), add_bos_token=True, chat_template=None,
                     fallback_template="plain", pad_token_id=None, kind="bytes")
