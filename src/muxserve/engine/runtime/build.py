"""Build a unit's engine state once, in the unit process: models, the shared KV pool, runners.

Each model's weights are loaded and fused ONCE here and moved to shared memory together with
the pool; the worker processes receive the runners by pickling, which passes the shared
storages' file descriptors instead of copying them.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass
from typing import Any

import torch

from muxserve.config.models import ModelArch
from muxserve.engine.kv_pool import KVPool
from muxserve.engine.llm import parse_dtype
from muxserve.engine.loader import load_model
from muxserve.engine.model_runner import ModelRunner
from muxserve.engine.runtime.config import UnitConfig
from muxserve.engine.tokenizer import Tokenizer
from muxserve.kvcache.block_manager import BlockManager

log = logging.getLogger(__name__)
DEFAULT_KV_POOL_BYTES = 256 * 2**20


@dataclass(frozen=True)
class BuiltModel:
    model_id: int
    name: str
    arch: ModelArch
    tokenizer: Tokenizer
    runner: ModelRunner
    weight_bytes: int  # bytes of its (fused) weights in shared memory


def pool_blocks(config: UnitConfig, dtype: torch.dtype) -> int:
    if config.num_kv_blocks is not None:
        return config.num_kv_blocks
    pool_bytes = config.kv_pool_bytes or DEFAULT_KV_POOL_BYTES
    block_bytes = config.block_numel * torch.empty((), dtype=dtype).element_size()
    if pool_bytes < block_bytes:
        raise ValueError(f"kv_pool_bytes {pool_bytes} is smaller than one block "
                         f"({block_bytes} bytes)")
    return pool_bytes // block_bytes


def build_unit(config: UnitConfig) -> tuple[BlockManager, KVPool, list[BuiltModel]]:
    """Load every model, register it in a fresh BlockManager, build its runner over one shared
    KVPool, and move all tensors to shared memory."""
    _raise_fd_limit()  # one fd per shared storage, in the unit and in every worker
    dtype = parse_dtype(config.dtype)
    num_blocks = pool_blocks(config, dtype)
    bm = BlockManager(num_blocks, config.block_numel)
    pool = KVPool(num_blocks, config.block_numel, dtype)
    pool.storage.share_memory_()
    built = []
    for model_id, spec in enumerate(config.models):
        loaded = load_model(spec.source, dtype=dtype, cache_dir=config.cache_dir)
        arch = loaded.arch
        layout = bm.register_model(model_id, arch.num_layers, arch.num_kv_heads, arch.head_dim)
        runner = ModelRunner(arch, loaded.weights, pool, layout, dtype)  # type: ignore[arg-type]
        tokenizer = loaded.tokenizer
        del loaded  # drop unfused originals the runner does not reference
        # AMX tile order is a plain tensor: pack once here and every worker shares it
        runner.pack_weights(amx=True, onednn=False)
        nbytes = share_tensors(runner.model)
        built.append(BuiltModel(model_id, spec.name, arch, tokenizer, runner, nbytes))
        log.info("unit: loaded %s (%s): %.1f MiB of weights in shared memory", spec.name,
                 spec.source, nbytes / 2**20)
    return bm, pool, built


def load_tokenizer(source: str, cache_dir: str | None = None) -> Tokenizer:
    """The tokenizer of a model source (loads the model and keeps only its tokenizer)."""
    return load_model(source, dtype=torch.bfloat16, cache_dir=cache_dir).tokenizer


def share_tensors(obj: Any) -> int:
    """Move every tensor reachable from obj's attributes (lists, tuples, dicts) to shared
    memory; returns their distinct storage bytes."""
    seen: set[int] = set()
    storages: dict[int, int] = {}

    def walk(x: Any) -> None:
        if id(x) in seen:
            return
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            x.share_memory_()
            st = x.untyped_storage()
            storages[st.data_ptr()] = st.nbytes()
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif hasattr(x, "__dict__") and not isinstance(x, type):
            for v in vars(x).values():
                walk(v)

    walk(obj)
    return sum(storages.values())


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
