"""`load_model`: any model source -> HF-layout weights in the requested dtype + tokenizer."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from muxserve.config.models import ModelArch
from muxserve.engine.loader import cache
from muxserve.engine.loader.gguf_file import (
    arch_from_gguf,
    check_gguf_header,
    open_gguf,
    read_tokenizer,
    read_weights,
)
from muxserve.engine.loader.hf_folder import read_hf_arch, read_hf_tokenizer, read_hf_weights
from muxserve.engine.loader.layout import check_weights
from muxserve.engine.loader.random_model import byte_tokenizer, parse_random_spec, random_weights
from muxserve.engine.loader.sources import resolve_source
from muxserve.engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)

DTYPES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for the engine.

    weights: Hugging Face LlamaForCausalLM / Gemma3ForCausalLM state-dict names and layout
        (see loader.layout.weight_shapes), all in one dtype; Gemma3 norm weights follow HF's
        x * (1 + w) convention. `lm_head.weight` is present only when embeddings are not tied.
    """

    name: str
    arch: ModelArch
    weights: dict[str, torch.Tensor]
    tokenizer: Tokenizer


def load_model(source: str | os.PathLike[str], dtype: torch.dtype = torch.float32,
               cache_dir: str | Path | None = None) -> LoadedModel:
    """Load `source`: a built-in name (MODEL_SOURCES), a .gguf path, a Hugging Face folder or
    `random:<preset or config.json>[?key=value&...]`.

    GGUF conversions are cached under `cache_dir` (else $MUXSERVE_CACHE_DIR, else
    ~/.cache/muxserve); the built-in Gemma3 file is assembled there on first use. Nothing is
    downloaded. Raises ValueError for an unknown name or unusable file (naming it) and
    FileNotFoundError for a missing .gguf.
    """
    if dtype not in DTYPES:
        raise ValueError(f"unsupported dtype {dtype}; valid: {', '.join(DTYPES.values())}")
    root = cache.cache_root(cache_dir)
    source = os.fspath(source) if isinstance(source, os.PathLike) else source
    src = resolve_source(source, root)
    if src.kind == "random":
        arch, seed = parse_random_spec(src.spec)
        weights, tokenizer = random_weights(arch, seed), byte_tokenizer()
    elif src.kind == "hf":
        assert src.path is not None
        arch = read_hf_arch(src.path, src.name)
        weights, tokenizer = read_hf_weights(src.path, arch), read_hf_tokenizer(src.path, arch)
    else:
        assert src.path is not None
        weights, arch, tokenizer = _load_gguf_cached(src.path, src.name, root)
    arch = arch.with_(name=src.name)
    check_weights(weights, arch, origin=str(src.path or source))
    weights = {k: v.to(dtype) for k, v in weights.items()}
    return LoadedModel(name=src.name, arch=arch, weights=weights, tokenizer=tokenizer)


def _load_gguf_cached(path: Path, name: str, root: Path
                      ) -> tuple[dict[str, torch.Tensor], ModelArch, Tokenizer]:
    check_gguf_header(path)
    # the key covers path, size and mtime: an entry exists only for a file that converted fine
    entry = cache.entry_dir(root, path)
    hit = cache.load_entry(entry)
    if hit is not None:
        return hit
    reader = open_gguf(path)
    try:
        arch = arch_from_gguf(reader, name, path)
        weights = read_weights(reader, arch, path)
        check_weights(weights, arch, origin=str(path))
        tokenizer = read_tokenizer(reader, arch.family)
    except Exception as e:
        # inconsistent metadata surfaces as all sorts of errors; the user needs the file name
        if isinstance(e, ValueError) and str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot load this GGUF file: {e!r}") from e
    try:
        cache.save_entry(entry, weights, arch, tokenizer)
    except OSError as e:  # an unwritable cache slows the next load; it must not fail this one
        log.warning("could not write model cache %s: %s", entry, e)
    return weights, arch, tokenizer
