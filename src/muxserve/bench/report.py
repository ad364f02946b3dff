"""Bench outcomes -> ``muxserve.sim.metrics.build_result``'s schema, plus ``errors``,
``base_url``, ``slo_baseline`` and ``bench`` (client-side facts: lag, usage, wall time)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from muxserve.bench.client import ERROR_KINDS, Outcome
from muxserve.bench.runner import RunOutput
from muxserve.sim.metrics import RequestRecord, build_result
from muxserve.sim.workload import TraceRequest

BENCH_KEYS = ("errors", "base_url", "slo_baseline", "trace", "bench")


# ---- SLO baselines --------------------------------------------------------------------------
def load_baseline(path: str | Path) -> dict[str, Any]:
    """A baseline file: {model: seconds} (a fixed latency per model), {model: {ttft_s, tpot_s}}
    (scaled per request by its output length), or an earlier bench result (its
    ``slo_baseline.per_model``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--slo-baseline file not found: {p}")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--slo-baseline {p}: not valid JSON: {e}") from None
    if isinstance(data, Mapping) and isinstance(data.get("slo_baseline"), Mapping):
        data = data["slo_baseline"].get("per_model")
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"--slo-baseline {p}: expected a non-empty mapping model -> seconds or "
                         "model -> {ttft_s, tpot_s}")
    for m, v in data.items():
        ok = (isinstance(v, int | float) and v > 0) or (
            isinstance(v, Mapping) and all(isinstance(v.get(k), int | float) and v[k] >= 0
                                           for k in ("ttft_s", "tpot_s")))
        if not ok:
            raise ValueError(f"--slo-baseline {p}: model {m!r} must map to seconds > 0 or to "
                             f"{{ttft_s, tpot_s}} numbers, got {v!r}")
    return dict(data)


def request_baseline_s(entry: float | Mapping[str, float], output_tokens: int) -> float:
    """The request alone: a fixed number, or TTFT + TPOT x (output tokens - 1)."""
    if isinstance(entry, int | float):
        return float(entry)
    return float(entry["ttft_s"]) + float(entry["tpot_s"]) * max(output_tokens - 1, 0)


# ---- records and errors ---------------------------------------------------------------------
def to_records(trace: Sequence[TraceRequest], run: RunOutput,
               baseline: Mapping[str, Any] | None) -> list[RequestRecord]:
    """One record per request; an errored request has no first token or finish (unfinished).
    A model without a baseline entry gets none: its requests miss the SLO and its own
    attainment is null."""
    out = []
    for r, o in zip(trace, run.outcomes, strict=False):
        assert o.req_id == r.req_id and o.model == r.model
        ok = o.error is None and o.finish_s is not None
        first = o.first_token_s if o.first_token_s is not None else o.finish_s
        out.append(RequestRecord(
            r.req_id, r.model, r.arrival_s,
            prompt_tokens=o.prompt_tokens if o.prompt_tokens is not None else r.prompt_tokens,
            output_tokens=o.output_tokens if ok else r.output_tokens,
            first_token_s=first if ok else None, finish_s=o.finish_s if ok else None,
            slo_baseline_s=(request_baseline_s(baseline[r.model], r.output_tokens)
                            if baseline is not None and r.model in baseline else None)))
    return out


def error_summary(models: Sequence[str], outcomes: Sequence[Outcome],
                  max_samples: int = 3) -> dict[str, Any]:
    """Counts per kind, in total and per model, and a few messages per kind."""
    def empty() -> dict[str, Any]:
        return {"total": 0, "by_kind": {k: 0 for k in ERROR_KINDS}}

    total, per_model = empty(), {m: empty() for m in models}
    samples: dict[str, list[str]] = {}
    for o in outcomes:
        if o.error is None:
            continue
        for d in (total, per_model[o.model]):
            d["total"] += 1
            d["by_kind"][o.error] += 1
        got = samples.setdefault(o.error, [])
        if len(got) < max_samples:
            got.append(f"{o.model}: {o.detail}")
    return {**total, "per_model": per_model, "samples": samples}


def request_rows(trace: Sequence[TraceRequest], run: RunOutput) -> list[dict[str, Any]]:
    """One plain row per request sent (for --save-requests JSONL): what was asked, what came
    back, times in seconds since the run began."""
    return [{"req_id": r.req_id, "model": r.model, "arrival_s": r.arrival_s,
             "send_s": o.send_s, "first_token_s": o.first_token_s, "finish_s": o.finish_s,
             "prompt_tokens": r.prompt_tokens, "prompt_tokens_reported": o.prompt_tokens,
             "max_tokens": r.output_tokens, "output_tokens": o.output_tokens,
             "error": o.error, "detail": o.detail}
            for r, o in zip(trace, run.outcomes, strict=False)]


def _pcts(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None}
    a = np.asarray(values, dtype=float)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)),
            "max": float(a.max())}


def client_facts(trace: Sequence[TraceRequest], run: RunOutput,
                 options: Mapping[str, Any]) -> dict[str, Any]:
    done = [(r, o) for r, o in zip(trace, run.outcomes, strict=False)
            if o.error is None and o.finish_s is not None]
    reported = [(r, o) for r, o in done if o.prompt_tokens is not None]
    return {
        **options,
        "wall_s": run.wall_s,
        "interrupted": run.interrupted,
        "send_lag_s": _pcts(run.send_lag_s),
        "usage_reported": sum(o.usage_reported for _, o in done),
        # ignore_eos unsupported, a server-side cap, or a stop: fewer tokens than asked
        "short_outputs": sum(o.output_tokens < r.output_tokens for r, o in done),
        "prompt_tokens_requested": sum(r.prompt_tokens for r, _ in reported),
        "prompt_tokens_reported": sum(o.prompt_tokens or 0 for _, o in reported),
    }


def bench_result(trace: Sequence[TraceRequest], run: RunOutput, *, label: str,
                 rates_rps: Mapping[str, float], base_url: Mapping[str, str],
                 baseline: Mapping[str, Any] | None, baseline_source: str | None,
                 slo_scales: Sequence[float], ttft_slo_s: float | None = None,
                 tpot_slo_s: float | None = None, window_s: tuple[float, float] | None = None,
                 trace_info: Mapping[str, Any] | None = None,
                 client: Mapping[str, Any] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """build_result over the run's records; ``extra`` carries the run's parameters (the same
    keys ``muxserve simulate`` writes: workload, alpha, rates_rps, seed, ...)."""
    trace = trace[:len(run.outcomes)]  # an interrupted run: the requests sent
    records = to_records(trace, run, baseline)
    models = list(rates_rps)
    bench_extra = {
        "errors": error_summary(models, run.outcomes),
        "base_url": dict(base_url),
        "slo_baseline": ({"source": baseline_source, "per_model": dict(baseline)}
                         if baseline is not None else None),
        "trace": dict(trace_info) if trace_info else None,
        "bench": client_facts(trace, run, client or {}),
    }
    result = build_result(records, label, slo_scales=slo_scales, rates_rps=rates_rps,
                          ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, window_s=window_s,
                          extra={**(extra or {}), **bench_extra})
    _check_finite(result)
    return result


def _check_finite(result: Mapping[str, Any]) -> None:
    """json.dumps writes NaN, which strict JSON readers reject: fail here instead."""
    def walk(v: Any, where: str) -> None:
        if isinstance(v, float):
            assert math.isfinite(v), f"non-finite number at {where}"
        elif isinstance(v, Mapping):
            for k, x in v.items():
                walk(x, f"{where}.{k}")
        elif isinstance(v, list | tuple):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")

    walk(result, "result")
