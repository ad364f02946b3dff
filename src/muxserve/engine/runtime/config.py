"""The frozen configuration of one unit runtime: its models, mode, KV pool and cores.

A *mode* is a scheduler policy plus a share layout (see ``MODES``): the same models, requests and
engine code run under each, so ``muxserve compare`` measures only the multiplexing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# mode -> (scheduler policy, share layout)
#   flexible: each job gets the cores its share asks for, least-loaded first (shares may overlap
#             within the scheduler's oversubscription bound)
#   fixed:    each model owns a fixed core set for both its phases, never shared with others
#   whole:    every job runs on all of the unit's cores (one job at a time)
MODES: dict[str, tuple[str, str]] = {
    "muxserve": ("muxserve", "flexible"),
    "spatial": ("spatial", "fixed"),
    "temporal": ("temporal", "whole"),
}
DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class ModelSpec:
    """One model of the unit.

    name: the served name requests use; source: what ``load_model`` accepts (built-in name, .gguf
    path, HF folder, ``random:<preset>?...``). prefill_share / decode_share: fractions of the
    unit's compute in (0, 1] for its prefill and decode jobs (None: one core's worth on CPU, i.e.
    1 / number of unit cores). rate_rps seeds ADBS's KV quotas; max_num_seqs caps concurrent
    sequences (the placement's batch cap).
    """

    name: str
    source: str
    prefill_share: float | None = None
    decode_share: float | None = None
    rate_rps: float = 1.0
    max_num_seqs: int = 256

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model name must be non-empty")
        for f in ("prefill_share", "decode_share"):
            v = getattr(self, f)
            if v is not None and not 0.0 < v <= 1.0:
                raise ValueError(f"model {self.name!r}: {f} must be in (0, 1], got {v!r}")


@dataclass(frozen=True)
class UnitConfig:
    """Everything a unit process needs to start (picklable; sent to the unit process).

    mode: one of MODES. dtype: the unit's compute and KV dtype. KV pool: ``num_kv_blocks`` blocks
    of ``block_numel`` elements, or as many as fit in ``kv_pool_bytes`` (default 256 MiB); give at
    most one. cores: CPU ids the unit owns (default: this process's affinity when the unit
    starts). seed: generator of unseeded sampled requests in each worker.
    avg_seq_tokens / integrity_checks: passed to the scheduler (see SchedulerConfig).
    bf16 weights whose projections fit AMX tiles are packed once in the unit process and
    shared by its workers (`muxserve.engine.models.linear`). pack_weights: each worker also
    reorders the projections left plain into a private oneDNN copy (faster matmuls, same
    tokens) at the price of a copy per worker; off by default (no effect in float32).
    """

    models: tuple[ModelSpec, ...]
    mode: str = "muxserve"
    dtype: str = "float32"
    num_kv_blocks: int | None = None
    kv_pool_bytes: int | None = None
    block_numel: int = 8192
    cores: tuple[int, ...] | None = None
    prefill_token_cap: int = 2048
    avg_seq_tokens: int = 416
    integrity_checks: bool = False
    seed: int | None = None
    cache_dir: str | None = None
    worker_start_timeout_s: float = 120.0
    pack_weights: bool = False

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("a unit needs at least one model")
        names = [m.name for m in self.models]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate served model names {dup}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid: {', '.join(MODES)}")
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if self.num_kv_blocks is not None and self.kv_pool_bytes is not None:
            raise ValueError(f"give num_kv_blocks ({self.num_kv_blocks}) or kv_pool_bytes "
                             f"({self.kv_pool_bytes}), not both")
        if self.num_kv_blocks is not None and self.num_kv_blocks < 1:
            raise ValueError(f"num_kv_blocks must be >= 1, got {self.num_kv_blocks!r}")
        if self.cores is not None:
            if not self.cores or len(set(self.cores)) != len(self.cores):
                raise ValueError(f"cores must be distinct CPU ids, got {self.cores!r}")
            bad = sorted(set(self.cores) - os.sched_getaffinity(0))
            if bad:
                raise ValueError(f"cores {bad} are not available to this process; available: "
                                 f"{sorted(os.sched_getaffinity(0))}")

    @classmethod
    def of(cls, models: Mapping[str, str], **kw: object) -> UnitConfig:
        """Shorthand: ``UnitConfig.of({"a": "smollm2-135m"}, mode="spatial")``."""
        return cls(tuple(ModelSpec(n, s) for n, s in models.items()), **kw)  # type: ignore[arg-type]

    @property
    def policy(self) -> str:
        return MODES[self.mode][0]

    @property
    def share_layout(self) -> str:
        return MODES[self.mode][1]

    def unit_cores(self) -> tuple[int, ...]:
        return self.cores if self.cores is not None else tuple(sorted(os.sched_getaffinity(0)))
