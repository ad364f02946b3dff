"""The request list of a bench run, built by ``muxserve.sim``'s generators (no copies here).

Rates come from a workload YAML (via the CLI, exactly as ``muxserve simulate`` computes them),
a power law over ``--models``, or explicit ``--model-rates``; arrivals and lengths from
``sim.workload.synthesize``; or a real trace replayed by ``sim.traces.replay``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from muxserve.sim.traces import (
    SERVEGEN_WINDOW_S,
    from_rate_series,
    load_servegen_rates,
    load_trace,
    replay,
)
from muxserve.sim.workload import LengthSampler, TraceRequest, powerlaw_rates

TRACE_DIR = Path("..") / "shared" / "data" / "traces"
# --trace NAME -> (loader kind, file under TRACE_DIR)
TRACES: dict[str, tuple[str, str]] = {
    "azure-code": ("azure", "azure_llm_2023/AzureLLMInferenceTrace_code.csv"),
    "azure-conv": ("azure", "azure_llm_2023/AzureLLMInferenceTrace_conv.csv"),
    "mooncake": ("mooncake", "mooncake/conversation_trace.jsonl"),
    "mooncake-synthetic": ("mooncake", "mooncake/synthetic_trace.jsonl"),
    "burstgpt": ("burstgpt", "burstgpt/BurstGPT_1_first400.csv"),
    # per-model rates over time (600 s windows), not requests: lengths come from --lengths
    "servegen": ("servegen", "servegen/servegen_model_aggregate_rates.csv"),
}


def rates_from_flags(models: Sequence[str] | None, model_rates: Mapping[str, str] | None,
                     alpha: float | None, max_rate_rps: float | None,
                     rate_scale: float = 1.0) -> dict[str, float]:
    """--model-rates m=R,... (explicit) or --models m1,m2 with a power law (alpha default 0:
    every model at --max-rate). Model order is popularity order for the power law."""
    if rate_scale <= 0:
        raise ValueError(f"--rate-scale must be > 0, got {rate_scale}")
    if model_rates:
        if models or alpha is not None or max_rate_rps is not None:
            raise ValueError("--model-rates gives explicit rates; do not combine it with "
                             "--models, --alpha or --max-rate")
        out: dict[str, float] = {}
        for m, r in model_rates.items():
            try:
                rate = float(r)
            except ValueError:
                raise ValueError(f"--model-rates: rate of {m!r} must be a number, got {r!r}"
                                 ) from None
            if not rate >= 0 or not np.isfinite(rate):
                raise ValueError(f"--model-rates: rate of {m!r} must be >= 0 req/s, got {r!r}")
            out[m] = rate * rate_scale
        return out
    if not models:
        raise ValueError("name the models: a WORKLOAD.yaml, --models m1,m2 (with --max-rate) "
                         "or --model-rates m1=R1,m2=R2")
    if len(set(models)) != len(models):
        raise ValueError(f"--models has duplicates: {list(models)}")
    if max_rate_rps is None:
        raise ValueError("--models needs --max-rate R (the most popular model's req/s; "
                         "--alpha A spreads the others as R x (i+1)^-A)")
    rates = powerlaw_rates(len(models), 0.0 if alpha is None else alpha, max_rate_rps)
    return {m: r * rate_scale for m, r in zip(models, rates, strict=True)}


def trace_path(name: str, trace_dir: Path = TRACE_DIR) -> tuple[str, Path]:
    if name not in TRACES:
        raise ValueError(f"unknown trace {name!r}; valid: {', '.join(TRACES)}")
    kind, rel = TRACES[name]
    return kind, trace_dir / rel


def replay_trace(name: str, models: Sequence[str], seed: int,
                 weights: Sequence[float] | None = None, time_scale: float = 1.0,
                 duration_s: float | None = None, trace_dir: Path = TRACE_DIR
                 ) -> list[TraceRequest]:
    """A real trace's arrivals and lengths, each request sent to a model drawn by ``weights``
    (the models' rates; uniform without). The trace's own model column is not used."""
    kind, path = trace_path(name, trace_dir)
    if kind == "servegen":
        raise ValueError("servegen has rates, not requests: use servegen_trace")
    if not path.is_file():
        raise FileNotFoundError(f"trace file for {name!r} not found: {path} (run from the repo "
                                "root, next to ../shared)")
    return replay(load_trace(kind, path), models, seed, weights=weights, time_scale=time_scale,
                  duration_s=duration_s)


def servegen_trace(models: Sequence[str], lengths: LengthSampler, seed: int,
                   duration_s: float, time_scale: float = 1.0, rate_scale: float = 1.0,
                   trace_dir: Path = TRACE_DIR) -> tuple[list[TraceRequest], dict[str, str]]:
    """ServeGen's per-model rate series as Poisson arrivals (sim's ``from_rate_series``): our
    models, most popular first, take ServeGen's models by mean rate (language/m-mid first).
    ServeGen's rates are production scale (hundreds of req/s): shrink them with rate_scale.
    Returns the requests and which ServeGen series each model replays."""
    _, path = trace_path("servegen", trace_dir)
    if not path.is_file():
        raise FileNotFoundError(f"ServeGen rates not found: {path} (run from the repo root)")
    series = load_servegen_rates(path)
    keys = sorted(series, key=lambda k: -float(series[k].mean()))
    if len(models) > len(keys):
        raise ValueError(f"the servegen trace has {len(keys)} models ({', '.join(keys)}); "
                         f"got {len(models)}")
    mapping = dict(zip(models, keys, strict=False))
    windows = int(np.ceil(duration_s * time_scale / SERVEGEN_WINDOW_S))
    trace = from_rate_series({m: series[k] for m, k in mapping.items()}, lengths, seed,
                             num_windows=windows, time_scale=time_scale, rate_scale=rate_scale)
    return [r for r in trace if r.arrival_s < duration_s], mapping


def cap_lengths(trace: Sequence[TraceRequest], max_prompt_tokens: int | None,
                max_output_tokens: int | None) -> list[TraceRequest]:
    """Clip lengths to what small endpoints accept (e.g. a 2048-token context); no caps ->
    the list unchanged, so the request list still equals ``muxserve simulate``'s."""
    for flag, v in (("--max-prompt-tokens", max_prompt_tokens),
                    ("--max-output-tokens", max_output_tokens)):
        if v is not None and v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    if max_prompt_tokens is None and max_output_tokens is None:
        return list(trace)
    return [replace(r, prompt_tokens=min(r.prompt_tokens, max_prompt_tokens or r.prompt_tokens),
                    output_tokens=min(r.output_tokens, max_output_tokens or r.output_tokens))
            for r in trace]


# about one token each in the llama, GPT-2/cl100k and SmolLM2/Gemma vocabularies (with the
# leading space), so a prompt of n words is about n tokens
_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which "
    "but have an they you were her she there one all we their has been if more when will would "
    "who so no time can only new some could these two may first then do any like my now over "
    "such our man me even most made after also did many off before must well back through years "
    "much where your way down should because long each just state people those too how little "
    "good world very still own see men work here between both life under never day same another "
    "know while last might great old year since come right used take three")
COMMON_WORDS: tuple[str, ...] = tuple(_WORDS.split())


def synthetic_prompt(num_tokens: int, seed: int, req_id: int) -> str:
    """About ``num_tokens`` tokens of common words, different per request: random words keep
    a server's prefix cache from turning every prefill into a cache hit."""
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    rng = np.random.default_rng([seed, req_id])
    idx = rng.integers(0, len(COMMON_WORDS), num_tokens)
    return " ".join(COMMON_WORDS[i] for i in idx.tolist())
