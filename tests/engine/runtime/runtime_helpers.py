"""Shared pieces of the runtime tests: tiny random models, prompts, reference outputs."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from muxserve.engine.llm import MultiModelLLM
from muxserve.engine.protocol import GenerateRequest
from muxserve.engine.request import GenerationOutput, GenerationRequest
from muxserve.engine.runtime import UnitConfig, UnitRuntime
from muxserve.types import SamplingParams

LLAMA = ("random:smollm2-135m?num_layers=2&hidden_size=64&num_heads=4&num_kv_heads=2"
         "&intermediate_size=128&vocab_size=300&max_context=256")
GEMMA = ("random:gemma3-270m?num_layers=3&hidden_size=64&num_heads=2&num_kv_heads=1"
         "&head_dim=32&intermediate_size=128&vocab_size=300&max_context=256&sliding_window=8"
         "&sliding_window_pattern=3&query_pre_attn_scalar=32")
MODELS = {"llama": LLAMA, "gemma": GEMMA}
BLOCK_NUMEL = 512  # llama: 16 tokens per block, 4 blocks per token block; gemma: 8 and 3
NUM_BLOCKS = 400


def unit_config(mode: str, **kw: object) -> UnitConfig:
    # a small avg_seq_tokens makes ADBS admit many sequences, so the pool runs out: preemption
    return UnitConfig.of(MODELS, mode=mode, num_kv_blocks=NUM_BLOCKS, block_numel=BLOCK_NUMEL,
                         seed=0, avg_seq_tokens=16, **kw)


def greedy(n: int = 12, **kw: object) -> SamplingParams:
    return SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True, **kw)  # type: ignore


def prompt(i: int, length: int) -> tuple[int, ...]:
    return tuple((37 * i + 11 * j) % 250 + 3 for j in range(length))


def reference(reqs: list[GenerateRequest], models: dict[str, str] | None = None,
              **kw: object) -> dict[str, tuple[int, ...]]:
    """Each request's tokens from MultiModelLLM, alone (one request per generate call).
    Single-threaded: on a busy machine OpenMP threads of these tiny models only spin."""
    torch.set_num_threads(1)
    llm = MultiModelLLM(models or MODELS, num_blocks=NUM_BLOCKS, block_numel=BLOCK_NUMEL,
                        **kw)  # type: ignore[arg-type]
    return {r.req_id: tuple(llm.generate([GenerationRequest(r.model, list(r.prompt_token_ids),
                                                             r.params)])[0].token_ids)
            for r in reqs}


def reference_outputs(reqs: list[GenerateRequest]) -> dict[str, GenerationOutput]:
    """Each request's full output (tokens, text, finish reason) from MultiModelLLM, alone."""
    torch.set_num_threads(1)
    llm = MultiModelLLM(MODELS, num_blocks=NUM_BLOCKS, block_numel=BLOCK_NUMEL)
    return {r.req_id: llm.generate([GenerationRequest(r.model, list(r.prompt_token_ids),
                                                      r.params)])[0] for r in reqs}


def wait_for(cond, timeout_s: float = 30.0, what: str = "condition") -> None:  # type: ignore
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def proc_alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        return False
    return "State:\tZ" not in status.read_text()


def smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup in bytes (Rss, Pss, Private_Dirty, ...)."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0]) * 1024
    return out


def shared_mappings(pid: int, size_bytes: int) -> set[tuple[str, int]]:
    """(device, inode) of the file mappings of exactly size_bytes (rounded up to pages)."""
    page = 4096
    want = -(-size_bytes // page) * page
    found = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if hi - lo == want and parts[4] != "0":
            found.add((parts[3], int(parts[4])))
    return found


def shutdown_and_check(rt: UnitRuntime) -> None:
    """Stop the unit (always); neither it nor any worker may outlive it."""
    try:
        workers = [] if rt.dead else list(rt.info(timeout_s=10)["workers"].values())
    except Exception:  # a hung or dying unit: still shut it down below
        workers = []
    pids = [p for p in (rt.pid, *workers) if p]
    rt.shutdown()
    wait_for(lambda: not any(proc_alive(p) for p in pids), 10, "unit and workers to exit")
