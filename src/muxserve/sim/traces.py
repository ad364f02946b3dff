"""Replay of real request traces in ../shared/data/traces/ as multi-model workloads.

Azure (code/conv), Mooncake and BurstGPT give arrival times and lengths of real requests;
ServeGen gives per-model request rates over time (600 s windows) from which arrivals are drawn.
Traces with one service (Azure, Mooncake) are spread over several models by popularity weights.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from muxserve.sim.workload import LengthSampler, TraceRequest, from_arrays

TRACE_KINDS = ("azure", "mooncake", "burstgpt")


@dataclass(frozen=True)
class RawTrace:
    """Parallel arrays of one real trace; ``labels`` is the trace's own model column (or empty)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    labels: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.arrival_s)


def load_azure(path: str | Path) -> RawTrace:
    """AzureLLMInferenceTrace_{code,conv}.csv: TIMESTAMP, ContextTokens, GeneratedTokens."""
    ts: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            # 100 ns resolution: 7 fractional digits, one more than fromisoformat accepts
            stamp = row["TIMESTAMP"]
            head, _, frac = stamp.partition(".")
            t = datetime.fromisoformat(head).timestamp() + float("0." + (frac or "0"))
            ts.append(t)
            prompts.append(int(row["ContextTokens"]))
            outputs.append(int(row["GeneratedTokens"]))
    t0 = min(ts)
    return RawTrace(np.asarray(ts) - t0, np.asarray(prompts), np.asarray(outputs))


def load_mooncake(path: str | Path) -> RawTrace:
    """Mooncake JSONL: timestamp (ms), input_length, output_length."""
    ts: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    with open(path) as f:
        for line in f:
            if line.strip():
                rec = json.loads(line)
                ts.append(rec["timestamp"] / 1000.0)
                prompts.append(int(rec["input_length"]))
                outputs.append(int(rec["output_length"]))
    return RawTrace(np.asarray(ts), np.asarray(prompts), np.asarray(outputs))


def load_burstgpt(path: str | Path, drop_failures: bool = True) -> RawTrace:
    """BurstGPT CSV: Timestamp (s), Model, Request tokens, Response tokens.

    Rows with 0 response tokens are failed requests; they are dropped by default.
    """
    ts: list[float] = []
    prompts: list[int] = []
    outputs: list[int] = []
    labels: list[str] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out = int(row["Response tokens"])
            if drop_failures and out <= 0:
                continue
            ts.append(float(row["Timestamp"]))
            prompts.append(int(row["Request tokens"]))
            outputs.append(out)
            labels.append(row["Model"])
    t = np.asarray(ts)
    return RawTrace(t - t.min(), np.asarray(prompts), np.asarray(outputs), tuple(labels))


def load_trace(kind: str, path: str | Path) -> RawTrace:
    loaders = {"azure": load_azure, "mooncake": load_mooncake, "burstgpt": load_burstgpt}
    if kind not in loaders:
        raise ValueError(f"unknown trace kind {kind!r}; valid: {', '.join(TRACE_KINDS)}")
    return loaders[kind](path)


def replay(raw: RawTrace, models: Sequence[str], seed: int,
           weights: Sequence[float] | None = None, label_map: Mapping[str, str] | None = None,
           time_scale: float = 1.0, duration_s: float | None = None,
           max_prompt_tokens: int | None = None, max_output_tokens: int | None = None
           ) -> list[TraceRequest]:
    """Turn a real trace into TraceRequests for ``models``.

    label_map maps the trace's model column to our model names (BurstGPT); without it every
    request goes to a model drawn with ``weights`` (default: uniform). time_scale > 1 compresses
    time (arrival / time_scale). Lengths are clipped to the caps and to >= 1 token.
    """
    if not models:
        raise ValueError("replay needs at least one model")
    if time_scale <= 0:
        raise ValueError(f"time_scale must be > 0, got {time_scale}")
    rng = np.random.default_rng(seed)
    if label_map is not None:
        missing = sorted(set(raw.labels) - set(label_map))
        if missing:
            raise ValueError(f"label_map lacks trace models {missing}; it has {sorted(label_map)}")
        unknown = sorted(set(label_map.values()) - set(models))
        if unknown:
            raise ValueError(f"label_map names models {unknown} not in {list(models)}")
        pos = {m: i for i, m in enumerate(models)}
        midx = np.asarray([pos[label_map[lb]] for lb in raw.labels], dtype=np.int64)
    else:
        w = np.asarray(weights if weights is not None else [1.0] * len(models), dtype=float)
        if len(w) != len(models) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {len(models)} non-negative numbers, got {list(w)}")
        midx = rng.choice(len(models), size=len(raw), p=w / w.sum())
    t = raw.arrival_s / time_scale
    keep = np.ones(len(t), dtype=bool) if duration_s is None else t < duration_s
    p = np.maximum(raw.prompt_tokens, 1)
    o = np.maximum(raw.output_tokens, 1)
    if max_prompt_tokens:
        p = np.minimum(p, max_prompt_tokens)
    if max_output_tokens:
        o = np.minimum(o, max_output_tokens)
    return from_arrays(models, midx[keep], t[keep], p[keep], o[keep])


# ---- ServeGen: per-model rates over time ----------------------------------------------------
SERVEGEN_WINDOW_S = 600.0


def load_servegen_rates(path: str | Path, models: Sequence[str] | None = None
                        ) -> dict[str, np.ndarray]:
    """servegen_model_aggregate_rates.csv -> {"category/model": total rate per 600 s window}."""
    series: dict[str, list[tuple[float, float]]] = {}
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        for row in csv.DictReader(f):
            key = f"{row['category']}/{row['model']}"
            series.setdefault(key, []).append((float(row["t_s"]), float(row["total_rate_rps"])))
    if models is not None:
        missing = [m for m in models if m not in series]
        if missing:
            raise ValueError(f"unknown ServeGen models {missing}; valid: {sorted(series)}")
        series = {m: series[m] for m in models}
    return {k: np.asarray([r for _, r in sorted(v)]) for k, v in series.items()}


def from_rate_series(rates_rps: Mapping[str, np.ndarray], lengths: LengthSampler, seed: int,
                     window_s: float = SERVEGEN_WINDOW_S, start_window: int = 0,
                     num_windows: int | None = None, time_scale: float = 1.0,
                     rate_scale: float = 1.0) -> list[TraceRequest]:
    """Piecewise-constant Poisson arrivals per model: rate series[w] during window w.

    Keys of ``rates_rps`` become the model names. time_scale > 1 compresses each window to
    window_s / time_scale seconds (rates multiplied by time_scale, so window counts are kept);
    rate_scale multiplies every rate (to fit a smaller cluster).
    """
    if time_scale <= 0 or rate_scale < 0:
        raise ValueError(f"time_scale must be > 0 and rate_scale >= 0, got {time_scale}, "
                         f"{rate_scale}")
    models = list(rates_rps)
    children = np.random.SeedSequence(seed).spawn(len(models))
    win = window_s / time_scale
    ts, mi, ps, os_ = [], [], [], []
    for idx, (model, ss) in enumerate(zip(models, children, strict=True)):
        rng = np.random.default_rng(ss)
        series = np.asarray(rates_rps[model], dtype=float)[start_window:]
        if num_windows is not None:
            series = series[:num_windows]
        counts = rng.poisson(series * rate_scale * window_s)
        n = int(counts.sum())
        # uniform positions inside each window = Poisson process of that window's rate
        t = (np.repeat(np.arange(len(series)), counts) + rng.random(n)) * win
        p, o = lengths.sample(n, rng)
        ts.append(t)
        mi.append(np.full(n, idx))
        ps.append(p)
        os_.append(o)
    if not models:
        return []
    return from_arrays(models, np.concatenate(mi), np.concatenate(ts), np.concatenate(ps),
                       np.concatenate(os_))
