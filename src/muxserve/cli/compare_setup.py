"""What `muxserve compare` runs: models, shares, KV pool, the request list, and the prediction.

Lives in ``cli`` because it joins the two halves that may not import each other: the engine
(real runtime) and the simulator (workload generator, metrics, predictions).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml  # type: ignore[import-untyped]

from muxserve.bench.workload import cap_lengths
from muxserve.config.models import MODEL_PRESETS, ModelArch
from muxserve.costmodel import CostModel, ProfileCostModel
from muxserve.scheduler import SchedulerConfig, UnitModel
from muxserve.sim.experiment import simulate, slo_baseline_fn
from muxserve.sim.metrics import RequestRecord
from muxserve.sim.simulator import SimUnit
from muxserve.sim.workload import TraceRequest, parse_lengths, powerlaw_rates, synthesize

SHAREGPT = Path("..") / "shared" / "data" / "traces" / "sharegpt" / (
    "sharegpt_v3_first_turn_lengths.csv")
DEFAULT_PROFILE = Path("benchmarks") / "results" / "cpu_profile.json"
# The benchmark's four-model CPU set: two instances of each built-in model, separate weights.
# Listed in unit order, which fixes spatial mode's core pairing (model i on core i*2//4):
# popularity ranks 1+4 share core 0 and ranks 2+3 core 1, the balanced split.
DEFAULT_MODELS = (("smollm2-a", "smollm2-135m", 1), ("gemma3-b", "gemma3-270m", 4),
                  ("gemma3-a", "gemma3-270m", 2), ("smollm2-b", "smollm2-135m", 3))
CONFIG_KEYS = {"models", "dtype", "kv_pool_mib", "cores", "prefill_token_cap", "pack_weights"}
MODEL_KEYS = {"name", "source", "rank", "prefill_share", "decode_share", "rate_rps",
              "max_num_seqs"}
BLOCK_NUMEL = 8192
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


@dataclass(frozen=True)
class CompareModel:
    name: str
    source: str
    arch: ModelArch  # named like its profile entry (e.g. smollm2-135m) for the cost model
    prefill_share: float
    decode_share: float
    max_num_seqs: int = 256


class CoreShareCost(CostModel):
    """A CPU profile's prices for shares as the CPU runtime grants them: whole cores
    (``round(share x cores)``, at least one), and below one core -- spatial mode's models that
    share a core -- that core time-sliced, i.e. the one-core time x (one core / share).

    The profile cannot measure a fraction of a core, and extrapolating it linearly in 1/share
    leaves memory-bound decode flat (as on a GPU, where bandwidth saturates with a third of the
    SMs), which would let four models on two cores decode as fast as two."""

    def __init__(self, inner: CostModel, num_cores: int) -> None:
        self.inner, self.num_cores = inner, num_cores
        self.device, self.dtype_bytes = inner.device, inner.dtype_bytes

    def _price(self, share: float) -> tuple[float, float]:
        one = 1.0 / self.num_cores
        if share < one:
            return one, one / share
        return min(self.num_cores, max(1, round(share * self.num_cores))) * one, 1.0

    def prefill_ms(self, arch: ModelArch, num_seqs: int, num_tokens: int, share: float,
                   tp: int = 1) -> float:
        s, slow = self._price(share)
        return slow * self.inner.prefill_ms(arch, num_seqs, num_tokens, s, tp)

    def decode_ms(self, arch: ModelArch, batch: int, context_tokens: int, share: float,
                  tp: int = 1) -> float:
        s, slow = self._price(share)
        return slow * self.inner.decode_ms(arch, batch, context_tokens, s, tp)


def arch_of(source: str) -> ModelArch:
    """The architecture of a loader source without loading weights where possible."""
    if source in MODEL_PRESETS:
        return MODEL_PRESETS[source]
    if source.startswith("random:"):
        from muxserve.engine.loader.random_model import parse_random_spec

        arch, _ = parse_random_spec(source[len("random:"):])
        return arch
    from muxserve.engine.loader import load_model

    return load_model(source).arch


@dataclass(frozen=True)
class CompareSetup:
    models: tuple[CompareModel, ...]
    rates_rps: dict[str, float]
    trace: tuple[TraceRequest, ...]
    prompt_ids: tuple[tuple[int, ...], ...]  # per trace request, random token ids
    cores: tuple[int, ...]
    dtype: str
    num_kv_blocks: int
    prefill_token_cap: int
    avg_seq_tokens: int
    drain_until_s: float
    slo_scales: tuple[float, ...]
    profile: str
    params: dict[str, Any]
    pack_weights: bool = False

    def unit_config(self, mode: str):  # type: ignore[no-untyped-def]
        from muxserve.engine.runtime.config import ModelSpec, UnitConfig

        specs = tuple(ModelSpec(m.name, m.source, m.prefill_share, m.decode_share,
                                self.rates_rps[m.name], m.max_num_seqs) for m in self.models)
        return UnitConfig(specs, mode=mode, dtype=self.dtype, num_kv_blocks=self.num_kv_blocks,
                          block_numel=BLOCK_NUMEL, cores=self.cores,
                          prefill_token_cap=self.prefill_token_cap,
                          avg_seq_tokens=self.avg_seq_tokens, seed=0,
                          pack_weights=self.pack_weights)

    def requests(self) -> list[Any]:
        """The trace as GenerateRequests: req_id = trace index, greedy, exactly
        output_tokens tokens (EOS ignored), arrival_s relative to the run's start."""
        from muxserve.engine.protocol import GenerateRequest
        from muxserve.types import SamplingParams

        return [GenerateRequest(str(r.req_id), r.model, ids,
                                SamplingParams(max_tokens=r.output_tokens, temperature=0.0,
                                               ignore_eos=True), r.arrival_s)
                for r, ids in zip(self.trace, self.prompt_ids, strict=True)]

    def cost_model(self) -> CostModel:
        return CoreShareCost(ProfileCostModel(self.profile, device="cpu-2core",
                                              dtype_bytes=DTYPE_BYTES[self.dtype]),
                             len(self.cores))

    def sim_units(self, mode: str) -> list[SimUnit]:
        models = tuple(UnitModel(i, m.name, m.arch, self.rates_rps[m.name], m.prefill_share,
                                 m.decode_share, m.max_num_seqs) for i, m in enumerate(self.models))
        return [SimUnit(models, 1, kv_blocks=self.num_kv_blocks)]

    def describe(self) -> dict[str, Any]:
        return {**self.params, "rates_rps": self.rates_rps, "cores": list(self.cores),
                "dtype": self.dtype, "num_kv_blocks": self.num_kv_blocks,
                "avg_seq_tokens": self.avg_seq_tokens, "profile": self.profile,
                "models": [{"name": m.name, "source": m.source, "arch": m.arch.name,
                            "prefill_share": m.prefill_share, "decode_share": m.decode_share}
                           for m in self.models]}


def read_config(path: str | None) -> dict[str, Any]:
    if path is None:
        return {"models": [{"name": n, "source": s, "rank": k} for n, s, k in DEFAULT_MODELS]}
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("models"), list) or not cfg["models"]:
        raise ValueError(f"{path}: expected a mapping with a non-empty 'models' list")
    bad = sorted(set(cfg) - CONFIG_KEYS)
    if bad:
        raise ValueError(f"{path}: unknown keys {bad}; valid: {sorted(CONFIG_KEYS)}")
    for i, m in enumerate(cfg["models"]):
        if not isinstance(m, dict) or "name" not in m or "source" not in m:
            raise ValueError(f"{path}: models[{i}] needs 'name' and 'source', got {m!r}")
        extra = sorted(set(m) - MODEL_KEYS)
        if extra:
            raise ValueError(f"{path}: models[{i}] ({m['name']}): unknown keys {extra}; "
                             f"valid: {sorted(MODEL_KEYS)}")
    return cfg


def popularity_rates(cfg: dict[str, Any], alpha: float, max_rate: float) -> dict[str, float]:
    """Rates in popularity order (``rank``, default the listing order): the power law, or a
    model's own ``rate_rps``. The order matters: each model's arrivals come from the child
    generator of its position, so `muxserve bench --models` in rank order gets this list."""
    ms = cfg["models"]
    ranks = [int(m.get("rank", i + 1)) for i, m in enumerate(ms)]
    if sorted(ranks) != list(range(1, len(ms) + 1)):
        raise ValueError(f"model ranks must be 1..{len(ms)} once each, got {ranks}")
    law = powerlaw_rates(len(ms), alpha, max_rate)
    by_rank = sorted(zip(ranks, ms, strict=True), key=lambda x: x[0])
    return {m["name"]: float(m.get("rate_rps", law[k - 1])) for k, m in by_rank}


def _prompt_ids(trace: Sequence[TraceRequest], vocab: dict[str, int], seed: int
                ) -> tuple[tuple[int, ...], ...]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    return tuple(tuple(int(t) for t in rng.integers(0, vocab[r.model], r.prompt_tokens))
                 for r in trace)


def build_setup(args: argparse.Namespace) -> CompareSetup:
    import os

    cfg = read_config(args.config)
    cores = tuple(cfg.get("cores") or sorted(os.sched_getaffinity(0)))
    dtype = args.dtype or cfg.get("dtype", "float32")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPE_BYTES)}")
    one_core = 1.0 / len(cores)
    models = tuple(CompareModel(
        m["name"], m["source"], arch_of(m["source"]), float(m.get("prefill_share", one_core)),
        float(m.get("decode_share", one_core)), int(m.get("max_num_seqs", 256)))
        for m in cfg["models"])
    rates = popularity_rates(cfg, args.alpha, args.max_rate)
    lengths = parse_lengths(args.lengths, SHAREGPT)
    # `muxserve bench`'s clipping, so its request list for the same flags is this one
    trace = tuple(cap_lengths(synthesize(rates, args.duration_s, lengths, args.seed),
                              args.max_prompt, args.max_output))
    if not trace:
        raise ValueError(f"no requests arrive in {args.duration_s} s at rates {rates}; raise "
                         "--max-rate or --duration-s")
    if not Path(args.profile).is_file():
        raise ValueError(f"profile {args.profile!r} does not exist; write one with "
                         "`muxserve profile -o FILE` and pass --profile FILE")
    drain = args.duration_s if args.drain_s is None else args.drain_s
    kv_mib = float(cfg.get("kv_pool_mib", 1024))
    num_blocks = int(kv_mib * 2**20 // (BLOCK_NUMEL * DTYPE_BYTES[dtype]))
    avg_seq = round(float(np.mean([r.prompt_tokens + r.output_tokens for r in trace])))
    pack = bool(getattr(args, "pack_weights", False) or cfg.get("pack_weights", False))
    params = {"alpha": args.alpha, "max_rate": args.max_rate, "lengths": args.lengths,
              "max_prompt": args.max_prompt, "max_output": args.max_output,
              "duration_s": args.duration_s, "drain_s": drain, "seed": args.seed,
              "config": args.config, "kv_pool_mib": kv_mib, "pack_weights": pack}
    return CompareSetup(
        models, rates, trace, _prompt_ids(trace, {m.name: m.arch.vocab_size for m in models},
                                          args.seed),
        cores, dtype, num_blocks, int(cfg.get("prefill_token_cap", 2048)), avg_seq,
        args.duration_s + drain, tuple(float(s) for s in str(args.slo_scale).split(",")),
        str(args.profile), params, pack)


def baselines_s(setup: CompareSetup) -> list[float]:
    """Each request alone at batch 1 on the whole machine, priced by the CPU profile."""
    fn = slo_baseline_fn(setup.sim_units("muxserve"), setup.cost_model())
    return [fn(r) for r in setup.trace]


def records_of(setup: CompareSetup, timings: Sequence[Any]) -> list[RequestRecord]:
    """Measured timings (one per request, trace order; seconds since the run's start) ->
    the metrics' records, with the same SLO baselines as the prediction."""
    assert len(timings) == len(setup.trace), "every request must be accounted for"
    base = baselines_s(setup)
    out = []
    for r, t, b in zip(setup.trace, timings, base, strict=True):
        out.append(RequestRecord(r.req_id, r.model, r.arrival_s, r.prompt_tokens,
                                 r.output_tokens, t.first_token_s, t.finish_s, b))
    return out


def predict(setup: CompareSetup, mode: str) -> dict[str, Any]:
    """The simulator on the same requests, policy, shares and pool, priced by the profile."""
    sched = SchedulerConfig(policy=mode, prefill_token_cap=setup.prefill_token_cap,
                            avg_seq_tokens=setup.avg_seq_tokens)
    return simulate(setup.sim_units(mode), setup.cost_model(), list(setup.trace), mode,
                    scheduler=sched, slo_scales=setup.slo_scales, rates_rps=setup.rates_rps,
                    max_sim_s=setup.drain_until_s)
