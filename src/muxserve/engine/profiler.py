"""`muxserve profile`'s measurement: prefill and decode latencies of the real engine on core shares.

For each model and compute share, one spawned subprocess pins itself to the share's cores
(``os.sched_setaffinity`` + ``torch.set_num_threads``), loads the model, and times
``ModelRunner.execute`` over a paged ``KVPool`` whose block tables come from the pure-Python
``BlockManager`` -- the same code path a unit's worker runs. Every grid point is timed
``reps`` times after a warm-up, and the median is kept. The result is a list of
``costmodel.ProfileEntry`` in the A100 table's shape (model -> 1 -> share% -> batch -> seq_len),
so ``save_profile`` writes it and ``ProfileCostModel`` prices CPU jobs from it.

Shares are percentages of the machine's usable cores: on 2 cores, 50 = one core, 100 = both.
Prefill: ``batch`` prompts of ``seq_len`` tokens; decode: one new token for each of ``batch``
sequences whose cache holds ``seq_len`` tokens (the table's definitions). Prefill points with
more than ``max_prefill_tokens`` tokens are not measured (-1): they are linear in tokens, and
the table's loader extrapolates them.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing import get_context

import torch

from muxserve.costmodel.profile_table import MISSING, ProfileEntry
from muxserve.engine.kv_pool import DEFAULT_BLOCK_NUMEL, KVPool
from muxserve.engine.llm import parse_dtype
from muxserve.engine.loader import load_model
from muxserve.engine.model_runner import ModelRunner, SeqInput
from muxserve.engine.runtime.shares import WORKER_ENV, set_worker_env
from muxserve.kvcache.block_manager import BlockManager

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)
DEFAULT_SEQ_LENS = (32, 64, 128, 256, 512)
DEFAULT_SHARES_PCT = (50, 100)
QUICK_BATCHES = (1, 4, 16)
QUICK_SEQ_LENS = (32, 128, 512)
MAX_TIMED_S = 2.0  # stop repeating a point once its timed runs add up to this
WARM_S = 0.25  # a warm-up call slower than this counts as a sample


@dataclass(frozen=True)
class ProfileSpec:
    """What to measure. models are loader sources (built-in names, .gguf, random:...)."""

    models: tuple[str, ...]
    dtype: str = "float32"
    batches: tuple[int, ...] = DEFAULT_BATCHES
    seq_lens: tuple[int, ...] = DEFAULT_SEQ_LENS
    shares_pct: tuple[int, ...] = DEFAULT_SHARES_PCT
    reps: int = 3
    max_prefill_tokens: int = 1024
    block_numel: int = DEFAULT_BLOCK_NUMEL
    pack_weights: bool = False  # time packed bf16 weights (UnitConfig.pack_weights)

    def __post_init__(self) -> None:
        parse_dtype(self.dtype)  # ValueError naming the valid dtypes
        if not self.models:
            raise ValueError("no models to profile; give at least one")
        for name, values in (("batches", self.batches), ("seq_lens", self.seq_lens),
                             ("shares_pct", self.shares_pct)):
            if not values or min(values) < 1:
                raise ValueError(f"{name} must be a non-empty list of positive integers, "
                                 f"got {list(values)}")
        if max(self.shares_pct) > 100:
            raise ValueError(f"shares are percentages in (0, 100], got {list(self.shares_pct)}")
        if self.reps < 1:
            raise ValueError(f"reps must be >= 1, got {self.reps}")


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def share_cores(share_pct: int, cores: Sequence[int]) -> list[int]:
    """The cores a share runs on: the first round(share% x cores) of them, at least one.

    A share that is not a whole number of cores is rounded (a CPU share is a set of cores)."""
    n = max(1, round(share_pct / 100.0 * len(cores)))
    return list(cores[:n])


def pin_to_cores(cores: Sequence[int]) -> None:
    """Run this process (and torch's intra-op pool) on exactly ``cores``."""
    os.sched_setaffinity(0, set(cores))
    torch.set_num_threads(len(cores))


def _median_ms(fn: Callable[[], object], reps: int) -> float:
    """Median of up to ``reps`` timed calls after a warm-up call (first touch of buffers,
    allocator growth). A warm-up slower than WARM_S already ran warm code paths (the process
    measured smaller points first), so it counts as the first sample: big points cost one
    call less. Timed calls stop once they add up to MAX_TIMED_S."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = [first] if first > WARM_S else []
    while len(times) < reps and sum(times) < MAX_TIMED_S:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def measure_model(source: str, dtype: str, cores: Sequence[int], share_pct: int,
                  batches: Sequence[int], seq_lens: Sequence[int], reps: int,
                  max_prefill_tokens: int, block_numel: int, pack_weights: bool = False
                  ) -> list[ProfileEntry]:
    """Time one model's grid on ``cores`` (call it in a fresh process: it pins the caller)."""
    pin_to_cores(cores)
    dt = parse_dtype(dtype)
    loaded = load_model(source, dtype=dt)
    arch = loaded.arch
    max_b, max_s = max(batches), max(seq_lens)
    bm = BlockManager(1, block_numel)  # only to size the pool below
    lay = bm.register_model(0, arch.num_layers, arch.num_kv_heads, arch.head_dim)
    num_blocks = max_b * bm.blocks_needed(0, max_s + 1)
    bm = BlockManager(num_blocks, block_numel)
    lay = bm.register_model(0, arch.num_layers, arch.num_kv_heads, arch.head_dim)
    runner = ModelRunner(arch, loaded.weights, KVPool(num_blocks, block_numel, dt), lay, dt)
    if pack_weights:
        runner.pack_weights()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, arch.vocab_size, (max_b, max_s + 1), generator=gen).tolist()
    out = []
    for b in batches:
        for s in seq_lens:
            for i in range(b):
                bm.allocate(i, 0, s + 1)
            tables = [bm.block_table(i) for i in range(b)]
            prefill = [SeqInput(tokens[i][:s], 0, tables[i]) for i in range(b)]
            decode = [SeqInput([tokens[i][s]], s, tables[i]) for i in range(b)]
            pre_ms = (_median_ms(partial(runner.execute, prefill), reps)
                      if b * s <= max_prefill_tokens else MISSING)
            dec_ms = _median_ms(partial(runner.execute, decode), reps)
            for i in range(b):
                bm.free(i)
            out.append(ProfileEntry(arch.name, 1, share_pct, b, s, pre_ms, dec_ms))
    bm.check_integrity()
    return out


def run_profile(spec: ProfileSpec, cores: Sequence[int] | None = None,
                on_done: Callable[[str, int, float], None] | None = None
                ) -> list[ProfileEntry]:
    """Measure every (model, share) in its own spawned, pinned subprocess, one at a time.

    on_done(model, share_pct, seconds) is called after each subprocess finishes."""
    cores = list(cores) if cores is not None else usable_cores()
    set_worker_env()  # the unit runtime's workers run with the same setting
    entries: list[ProfileEntry] = []
    ctx = get_context("spawn")  # a fresh interpreter: no inherited torch thread pool
    for source in spec.models:
        for share in spec.shares_pct:
            t0 = time.perf_counter()
            with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
                fut = pool.submit(measure_model, source, spec.dtype,
                                  share_cores(share, cores), share, spec.batches,
                                  spec.seq_lens, spec.reps, spec.max_prefill_tokens,
                                  spec.block_numel, spec.pack_weights)
                entries.extend(fut.result())
            if on_done is not None:
                on_done(source, share, time.perf_counter() - t0)
    return entries


def machine_meta(spec: ProfileSpec, cores: Sequence[int]) -> dict[str, object]:
    """Provenance for the table's ``_meta``: machine, cores, load, torch, grid."""
    load_before = os.getloadavg()
    return {
        "device": f"cpu: {len(cores)} cores {list(cores)} ({_cpu_model()})",
        "dtype": spec.dtype,
        "torch": torch.__version__,
        "share_unit": "percent of the listed cores (50 = 1 of 2 cores)",
        "reps": spec.reps,
        "max_prefill_tokens": spec.max_prefill_tokens,
        "block_numel": spec.block_numel,
        "pack_weights": spec.pack_weights,
        "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
        "env": {k: os.environ.get(k, v) for k, v in WORKER_ENV.items()},
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown cpu"
