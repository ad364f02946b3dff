"""Model load times: first load (GGUF -> fp32 weights + tokenizer, written to a fresh cache)
and cached loads, for the built-in models.

    .venv/bin/python benchmarks/bench_loader.py [--repeats 3]

Each repeat uses a new empty cache folder (the assembled Gemma3 GGUF is reused, so its
~1 s assembly is not counted). "touch" is the time to read every weight once afterwards:
safetensors maps the cache file lazily, so a cached fp32 load defers its page reads to first use.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from muxserve.engine.loader import load_model
from muxserve.engine.loader.sources import resolve_source


def timed_load(name: str, cache: Path, dtype: torch.dtype = torch.float32
               ) -> tuple[dict[str, torch.Tensor], float]:
    t0 = time.perf_counter()
    m = load_model(name, dtype=dtype, cache_dir=cache)
    return m.weights, time.perf_counter() - t0


def touch(weights: dict[str, torch.Tensor]) -> float:
    t0 = time.perf_counter()
    for w in weights.values():
        float(w.float().sum())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    gguf_home = Path(tempfile.mkdtemp(prefix="muxserve-gguf-"))
    resolve_source("gemma3-270m", gguf_home)  # assemble once, outside the timings
    rows = []
    for name in ("smollm2-135m", "gemma3-270m"):
        times: dict[str, list[float]] = {"first": [], "cached fp32": [], "touch": [],
                                         "cached bf16": []}
        for _ in range(args.repeats):
            cache = Path(tempfile.mkdtemp(prefix="muxserve-cache-"))
            if name == "gemma3-270m":
                shutil.copytree(gguf_home / "gguf", cache / "gguf")
            times["first"].append(timed_load(name, cache)[1])
            weights, dt = timed_load(name, cache)
            times["cached fp32"].append(dt)
            times["touch"].append(touch(weights))
            times["cached bf16"].append(timed_load(name, cache, torch.bfloat16)[1])
            shutil.rmtree(cache)
        rows.append((name, {k: statistics.median(v) for k, v in times.items()}))
    shutil.rmtree(gguf_home)
    print("| model | first load (s) | cached fp32 (s) | + first read of all weights (s) "
          "| cached -> bf16 (s) |")
    print("|---|---|---|---|---|")
    for name, t in rows:
        print(f"| {name} | {t['first']:.2f} | {t['cached fp32']:.2f} | {t['touch']:.2f} "
              f"| {t['cached bf16']:.2f} |")


if __name__ == "__main__":
    main()
