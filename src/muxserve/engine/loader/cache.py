"""On-disk cache of converted models: fp32 weights (safetensors), tokenizer, architecture.

Dequantizing a GGUF and rebuilding its tokenizer takes seconds (Gemma3's merges alone are half
a million); reading the result back is a file read. An entry is a folder keyed by the source
file's resolved path, size and mtime (and this module's format version), so editing or replacing
the file makes a new entry. Entries are written to a temporary folder and renamed into place, so
a crashed or concurrent writer never leaves a half-written entry under the real name.

Location: the `cache_dir` argument, else $MUXSERVE_CACHE_DIR, else ~/.cache/muxserve.
Layout: <root>/models/<stem>-<key>/{weights.safetensors, arch.json, tokenizer.json,
muxserve_tokenizer.json}; <root>/gguf/ holds assembled built-in GGUF files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import safetensors.torch
import torch

from muxserve.config.models import ModelArch
from muxserve.engine.tokenizer import Tokenizer

FORMAT_VERSION = 2
WEIGHTS_FILE = "weights.safetensors"
ARCH_FILE = "arch.json"


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("MUXSERVE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "muxserve"


def entry_dir(root: Path, source: Path) -> Path:
    """The cache folder for `source` (a file or folder) as it is now on disk."""
    source = source.resolve()
    st = source.stat()
    key = f"{source}|{st.st_size}|{st.st_mtime_ns}|v{FORMAT_VERSION}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return root / "models" / f"{source.stem}-{digest}"


def arch_to_json(arch: ModelArch) -> str:
    return json.dumps(dataclasses.asdict(arch), indent=1)


def arch_from_json(text: str) -> ModelArch:
    return ModelArch(**json.loads(text))


def save_entry(entry: Path, weights: dict[str, torch.Tensor], arch: ModelArch,
               tokenizer: Tokenizer) -> None:
    """Write an entry atomically; if another process finished the same entry first, keep
    theirs."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = entry.parent / f".tmp-{entry.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        safetensors.torch.save_file({k: v.contiguous() for k, v in weights.items()},
                                    str(tmp / WEIGHTS_FILE))
        (tmp / ARCH_FILE).write_text(arch_to_json(arch))
        tokenizer.save(tmp)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_entry(entry: Path) -> tuple[dict[str, torch.Tensor], ModelArch, Tokenizer] | None:
    """The cached (fp32 weights, arch, tokenizer), or None when there is no usable entry
    (a damaged entry is removed so the caller rebuilds it)."""
    if not entry.is_dir():
        return None
    try:
        weights = safetensors.torch.load_file(str(entry / WEIGHTS_FILE))
        arch = arch_from_json((entry / ARCH_FILE).read_text())
        tokenizer = Tokenizer.load(entry)
    except Exception:  # any damage means "rebuild"; the source file is the truth
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return weights, arch, tokenizer
