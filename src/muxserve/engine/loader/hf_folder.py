"""Load a Hugging Face-format folder: config.json, *.safetensors, tokenizer.json (+ config).

Weights are read as stored (their names already are the HF layout we use). Multimodal Gemma3
checkpoints keep the language model under `language_model.`; those names are mapped to the
causal-LM names and the vision tower is dropped. A tied `lm_head.weight` is dropped too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import safetensors.torch
import tokenizers
import torch

from muxserve.config.models import ModelArch, arch_from_hf_config
from muxserve.engine.tokenizer import Tokenizer

_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
             ("language_model.lm_head.", "lm_head."))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def read_hf_arch(folder: Path, name: str) -> ModelArch:
    cfg = _read_json(folder / "config.json")
    try:
        return arch_from_hf_config(cfg, name=name)
    except KeyError as e:
        raise ValueError(f"{folder / 'config.json'} lacks the field {e}") from None


def read_hf_weights(folder: Path, arch: ModelArch) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ValueError(f"{folder} has no *.safetensors weight files")
    out: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors = safetensors.torch.load_file(str(f))
        except Exception as e:
            raise ValueError(f"{f} is not a readable safetensors file: {e}") from e
        for key, tensor in tensors.items():
            for old, new in _PREFIXES:
                if key.startswith(old):
                    key = new + key[len(old):]
            if key.startswith(("model.", "lm_head.")):
                out[key] = tensor
    if arch.tie_embeddings:
        out.pop("lm_head.weight", None)
    return out


def read_hf_tokenizer(folder: Path, arch: ModelArch) -> Tokenizer:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"{folder} has no tokenizer.json")
    try:
        backend = tokenizers.Tokenizer.from_file(str(path))
    except Exception as e:
        raise ValueError(f"{path} is not a readable tokenizer: {e}") from e
    tcfg = _read_json(folder / "tokenizer_config.json") \
        if (folder / "tokenizer_config.json").is_file() else {}
    cfg = _read_json(folder / "config.json")
    bos_id = _token_id(backend, tcfg.get("bos_token"), cfg.get("bos_token_id"))
    eos_id = _token_id(backend, tcfg.get("eos_token"), cfg.get("eos_token_id"))
    eos_ids = {i for i in (eos_id,) if i is not None}
    gen = folder / "generation_config.json"
    for source in (cfg, _read_json(gen) if gen.is_file() else {}):
        value = source.get("eos_token_id")
        eos_ids.update(value if isinstance(value, list) else [] if value is None else [value])
    end_of_turn = backend.token_to_id("<end_of_turn>")
    if arch.family == "gemma3" and end_of_turn is not None:
        eos_ids.add(end_of_turn)
    add_bos = tcfg.get("add_bos_token")
    if add_bos is None:  # whatever the tokenizer.json's own post-processor does
        probe = backend.encode("a", add_special_tokens=True).ids
        add_bos = bos_id is not None and bool(probe) and probe[0] == bos_id
    return Tokenizer(backend=backend, bos_token_id=bos_id, eos_token_id=eos_id,
                     eos_token_ids=frozenset(int(i) for i in eos_ids),
                     add_bos_token=bool(add_bos), chat_template=_chat_template(folder, tcfg),
                     fallback_template="gemma3" if arch.family == "gemma3" else "llama",
                     pad_token_id=_token_id(backend, tcfg.get("pad_token"), None), kind="hf")


def _token_id(backend: tokenizers.Tokenizer, token: Any, fallback: Any) -> int | None:
    if isinstance(token, dict):  # {"content": "<s>", ...}
        token = token.get("content")
    token_id = backend.token_to_id(token) if isinstance(token, str) else None
    if token_id is not None:
        return int(token_id)
    if isinstance(fallback, list):
        fallback = fallback[0] if fallback else None
    return int(fallback) if fallback is not None else None


def _chat_template(folder: Path, tcfg: dict[str, Any]) -> str | None:
    if (folder / "chat_template.jinja").is_file():
        return (folder / "chat_template.jinja").read_text()
    tpl = tcfg.get("chat_template")
    if isinstance(tpl, list):  # named templates: [{"name": "default", "template": ...}, ...]
        tpl = next((t.get("template") for t in tpl if t.get("name") == "default"), None)
    return tpl if isinstance(tpl, str) else None
