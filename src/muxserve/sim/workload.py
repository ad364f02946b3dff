"""Synthetic multi-model workloads: per-model arrival processes and request lengths.

All randomness comes from an explicit ``numpy.random.Generator`` built from a seed; nothing here
touches global random state, so the same arguments always give the same trace.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

ARRIVALS = ("poisson", "gamma")
TOKENIZERS = ("llama", "cl100k")


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One request of a workload trace. ``output_tokens`` is what the request generates."""

    req_id: int
    model: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


# ---- popularity -----------------------------------------------------------------------------
def powerlaw_rates(num_models: int, alpha: float, max_rate_rps: float) -> list[float]:
    """MuxServe's popularity: rate_i proportional to (i+1)^-alpha, the top model at max_rate."""
    if num_models < 1:
        raise ValueError(f"num_models must be >= 1, got {num_models}")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if max_rate_rps <= 0:
        raise ValueError(f"max_rate_rps must be > 0, got {max_rate_rps}")
    return [max_rate_rps * (i + 1) ** -alpha for i in range(num_models)]


# ---- arrivals -------------------------------------------------------------------------------
def arrival_times(rate_rps: float, duration_s: float, rng: np.random.Generator,
                  arrival: str = "poisson", cv: float = 1.0) -> np.ndarray:
    """Arrival times in [0, duration_s) of a renewal process with mean rate ``rate_rps``.

    poisson: exponential gaps. gamma: Gamma gaps with coefficient of variation ``cv``
    (shape 1/cv^2; cv=1 is Poisson, cv>1 burstier).
    """
    if arrival not in ARRIVALS:
        raise ValueError(f"unknown arrival process {arrival!r}; valid: {', '.join(ARRIVALS)}")
    if rate_rps < 0 or not math.isfinite(rate_rps):
        raise ValueError(f"rate_rps must be a finite number >= 0, got {rate_rps}")
    if arrival == "gamma" and cv <= 0:
        raise ValueError(f"cv must be > 0 for gamma arrivals, got {cv}")
    if rate_rps == 0 or duration_s <= 0:
        return np.empty(0)
    # draw in chunks with headroom so the common case is one vectorised draw
    expected = rate_rps * duration_s
    chunk = int(expected + 6 * math.sqrt(expected * max(cv, 1.0) ** 2) + 16)
    gaps: list[np.ndarray] = []
    total = 0.0
    while total < duration_s:
        if arrival == "poisson":
            g = rng.exponential(1.0 / rate_rps, chunk)
        else:
            shape = 1.0 / (cv * cv)
            g = rng.gamma(shape, 1.0 / (rate_rps * shape), chunk)
        gaps.append(g)
        total += float(g.sum())
    times = np.cumsum(np.concatenate(gaps))
    return times[times < duration_s]


# ---- lengths --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LengthSampler:
    """Draws (prompt, output) token counts: fixed values, or pairs resampled from a dataset."""

    prompts: tuple[int, ...]
    outputs: tuple[int, ...]
    name: str = "fixed"

    def __post_init__(self) -> None:
        if not self.prompts or len(self.prompts) != len(self.outputs):
            raise ValueError(f"{self.name}: need equally many (>0) prompt and output lengths, "
                             f"got {len(self.prompts)} and {len(self.outputs)}")
        if min(self.prompts) < 1 or min(self.outputs) < 1:
            raise ValueError(f"{self.name}: prompt and output lengths must be >= 1")

    @classmethod
    def fixed(cls, prompt_tokens: int, output_tokens: int) -> LengthSampler:
        return cls((prompt_tokens,), (output_tokens,), f"fixed:{prompt_tokens},{output_tokens}")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if len(self.prompts) == 1:
            return np.full(n, self.prompts[0]), np.full(n, self.outputs[0])
        idx = rng.integers(0, len(self.prompts), n)
        return np.asarray(self.prompts)[idx], np.asarray(self.outputs)[idx]

    @property
    def mean_prompt_tokens(self) -> float:
        return float(np.mean(self.prompts))

    @property
    def mean_output_tokens(self) -> float:
        return float(np.mean(self.outputs))


def load_sharegpt(path: str | Path, tokenizer: str = "llama", min_tokens: int = 4,
                  max_prompt_tokens: int = 1024, max_total_tokens: int = 2048,
                  cap_output_tokens: int | None = None) -> LengthSampler:
    """ShareGPT first-turn lengths with the paper's filter.

    Drops conversations with < 2 turns, prompt or output < ``min_tokens``, prompt >
    ``max_prompt_tokens`` or prompt+output > ``max_total_tokens``; ``cap_output_tokens`` then
    clips outputs (e.g. to shorten runs) without dropping the request.
    """
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; valid: {', '.join(TOKENIZERS)}")
    prompts: list[int] = []
    outputs: list[int] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            p, o = int(row[f"prompt_tokens_{tokenizer}"]), int(row[f"output_tokens_{tokenizer}"])
            if (p < min_tokens or o < min_tokens or p > max_prompt_tokens
                    or p + o > max_total_tokens):
                continue  # also drops the -1 rows (fewer than 2 turns)
            prompts.append(p)
            outputs.append(min(o, cap_output_tokens) if cap_output_tokens else o)
    return LengthSampler(tuple(prompts), tuple(outputs), f"sharegpt-{tokenizer}")


def parse_lengths(spec: str, sharegpt_path: str | Path) -> LengthSampler:
    """``sharegpt`` or ``fixed:P,O`` (the --lengths flag)."""
    if spec == "sharegpt":
        return load_sharegpt(sharegpt_path)
    if spec.startswith("fixed:"):
        try:
            p, o = (int(x) for x in spec[len("fixed:"):].split(","))
        except ValueError:
            raise ValueError(f"bad lengths {spec!r}; expected fixed:PROMPT,OUTPUT like "
                             "fixed:128,256") from None
        return LengthSampler.fixed(p, o)
    raise ValueError(f"bad lengths {spec!r}; valid: sharegpt, fixed:PROMPT,OUTPUT")


# ---- putting it together --------------------------------------------------------------------
def synthesize(rates_rps: Mapping[str, float], duration_s: float, lengths: LengthSampler,
               seed: int, arrival: str = "poisson", cv: float = 1.0,
               per_model_lengths: Mapping[str, LengthSampler] | None = None) -> list[TraceRequest]:
    """Independent per-model arrival processes merged into one trace sorted by arrival.

    Each model draws from its own child generator (seeded from ``seed`` and the model's position),
    so adding a model at the end does not change the others' requests.
    """
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    children = np.random.SeedSequence(seed).spawn(len(rates_rps))
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    for idx, ((model, rate), ss) in enumerate(zip(rates_rps.items(), children, strict=True)):
        rng = np.random.default_rng(ss)
        times = arrival_times(rate, duration_s, rng, arrival, cv)
        sampler = (per_model_lengths or {}).get(model, lengths)
        p, o = sampler.sample(len(times), rng)
        parts.append((times, np.full(len(times), idx), p, o))
    return _merge(list(rates_rps), parts)


def _merge(models: Sequence[str],
           parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
           ) -> list[TraceRequest]:
    if not parts:
        return []
    times = np.concatenate([p[0] for p in parts])
    midx = np.concatenate([p[1] for p in parts]).astype(np.int64)
    prompts = np.concatenate([p[2] for p in parts]).astype(np.int64)
    outputs = np.concatenate([p[3] for p in parts]).astype(np.int64)
    order = np.lexsort((midx, times))  # stable: ties broken by model position
    return [TraceRequest(i, models[m], t, p, o) for i, (t, m, p, o) in enumerate(zip(
        times[order].tolist(), midx[order].tolist(), prompts[order].tolist(),
        outputs[order].tolist(), strict=True))]


def from_arrays(models: Sequence[str], model_idx: ArrayLike, arrival_s: ArrayLike,
                prompt_tokens: ArrayLike, output_tokens: ArrayLike) -> list[TraceRequest]:
    """Build a sorted trace from parallel arrays (used by trace replay)."""
    return _merge(models, [(np.asarray(arrival_s, dtype=float), np.asarray(model_idx),
                            np.asarray(prompt_tokens), np.asarray(output_tokens))])


# ---- the paper's synthetic model set --------------------------------------------------------
PAPER_SYNTHETIC_SIZES = ("llama-7b",) * 12 + ("llama-13b",) * 4 + ("llama-30b",) * 2 + (
    "llama-65b",)


def paper_synthetic_models() -> list[tuple[str, str]]:
    """(name, arch) of the 19 LLMs of the paper's synthetic workload, most popular first.

    Popularity rank follows this order, 7B models first: the original
    benchmark/end_to_end/bench_end_to_end_muxserve.py hands out the power-law rates in the
    order 12 x 7B, 4 x 13B, 2 x 30B, 1 x 65B.
    """
    return [(f"llm-{i}", arch) for i, arch in enumerate(PAPER_SYNTHETIC_SIZES)]
