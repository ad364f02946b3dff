"""Serving metrics from per-request records, and THE result schema (``build_result``).

The same schema is written by the simulator, the real-engine comparison and the HTTP load
generator, so every producer calls ``build_result`` and nothing else builds result dicts.

Definitions:
- throughput: finished requests / span, span = last finish - first arrival (or given), taken
  over all requests for the total and over the model's own requests per model (so a model that
  keeps up reports about its rate even when another model's backlog drains for long after).
  The rate-weighted throughput is the mean of per-model throughput weighted by each model's
  rate (MuxServe's plotted number). With ``window_s=(start, end)`` throughput instead counts
  the requests that finished inside the window, divided by its width: a steady-state rate for
  short runs, where one long request's tail would otherwise set the span of everything.
- SLO attainment (MuxServe): a request meets the SLO when it finished and its end-to-end latency
  <= scale x its baseline, the single-device batch-1 latency (per request when the record carries
  one, else the model's value from ``slo_baseline_s``). Unfinished requests miss the SLO.
- TTFT/TPOT SLOs and goodput (DistServe): a request is good when it finished, TTFT <= ttft SLO and
  TPOT <= tpot SLO; goodput_rps = good requests / span. DistServe's sweep-level goodput (the
  highest rate whose attainment stays >= 90%) is ``max_rate_meeting``.
- TPOT = (finish - first token) / (output tokens - 1); undefined (excluded) for 1-token outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """What happened to one request. first_token_s/finish_s are None when it never got there."""

    req_id: int
    model: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int
    first_token_s: float | None = None
    finish_s: float | None = None
    slo_baseline_s: float | None = None  # this request's single-device batch-1 latency


def _pcts(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {f"p{p}": None for p in PERCENTILES}
    got = np.percentile(values, PERCENTILES)
    return {f"p{p}": float(v) for p, v in zip(PERCENTILES, got, strict=True)}


class _Arrays:
    """Column view of records (NaN where a time is missing) for vectorised metrics."""

    def __init__(self, records: Sequence[RequestRecord],
                 slo_baseline_s: Mapping[str, float] | None) -> None:
        self.model = np.asarray([r.model for r in records], dtype=object)
        self.arrival = np.asarray([r.arrival_s for r in records], dtype=float)
        nan = float("nan")
        self.first = np.asarray([nan if r.first_token_s is None else r.first_token_s
                                 for r in records], dtype=float)
        self.finish = np.asarray([nan if r.finish_s is None else r.finish_s for r in records],
                                 dtype=float)
        self.prompt = np.asarray([r.prompt_tokens for r in records], dtype=float)
        self.output = np.asarray([r.output_tokens for r in records], dtype=float)
        base = []
        for r in records:
            b = r.slo_baseline_s
            if b is None and slo_baseline_s is not None:
                if r.model not in slo_baseline_s:
                    raise ValueError(f"slo_baseline_s has no entry for model {r.model!r}; "
                                     f"it has {sorted(slo_baseline_s)}")
                b = slo_baseline_s[r.model]
            base.append(nan if b is None else b)
        self.baseline = np.asarray(base, dtype=float)

    def select(self, mask: np.ndarray) -> _Arrays:
        out = object.__new__(_Arrays)
        for k, v in vars(self).items():
            setattr(out, k, v[mask])
        return out


def _span(a: _Arrays) -> float:
    done = a.finish[~np.isnan(a.finish)]
    return float(done.max() - a.arrival.min()) if len(done) else 0.0


def _summary(a: _Arrays, span_s: float, slo_scales: Sequence[float],
             ttft_slo_s: float | None, tpot_slo_s: float | None,
             window_s: tuple[float, float] | None = None) -> dict[str, Any]:
    done = ~np.isnan(a.finish)
    n_done = int(done.sum())
    counted, per_s = done, span_s
    if window_s is not None:
        counted = done & (a.finish >= window_s[0]) & (a.finish <= window_s[1])
        per_s = window_s[1] - window_s[0]
    latency = (a.finish - a.arrival)[done]
    ttft = (a.first - a.arrival)[~np.isnan(a.first)]
    multi = done & (a.output > 1)
    tpot_all = np.full(len(a.arrival), np.nan)
    tpot_all[multi] = (a.finish[multi] - a.first[multi]) / (a.output[multi] - 1)
    n = len(a.arrival)
    attainment: dict[str, float | None] = {}
    for s in slo_scales:
        if n == 0 or np.isnan(a.baseline).all():
            attainment[str(s)] = None
        else:
            ok = done & (a.finish - a.arrival <= s * a.baseline)
            attainment[str(s)] = float(ok.sum()) / n
    out: dict[str, Any] = {
        "span_s": span_s,
        "num_requests": n,
        "num_finished": n_done,
        "throughput_rps": int(counted.sum()) / per_s if per_s > 0 else 0.0,
        "token_throughput_tps": float(a.output[counted].sum()) / per_s if per_s > 0 else 0.0,
        "slo_attainment": {"scale": slo_scales[0] if slo_scales else None,
                           "attainment": attainment.get(str(slo_scales[0])) if slo_scales
                           else None,
                           "by_scale": attainment},
        "ttft_s": _pcts(ttft),
        "tpot_s": _pcts(tpot_all[multi]),
        "latency_s": _pcts(latency),
    }
    if ttft_slo_s is not None or tpot_slo_s is not None:
        good = done.copy()
        if ttft_slo_s is not None:
            good &= (a.first - a.arrival) <= ttft_slo_s
        if tpot_slo_s is not None:
            good &= ~multi | (tpot_all <= tpot_slo_s)
        out["goodput_rps"] = int(good.sum()) / span_s if span_s > 0 else 0.0
        out["ttft_tpot_attainment"] = int(good.sum()) / n if n else None
    return out


def build_result(records: Sequence[RequestRecord], policy: str, *,
                 slo_baseline_s: Mapping[str, float] | None = None,
                 slo_scales: Sequence[float] = (5.0,),
                 rates_rps: Mapping[str, float] | None = None,
                 span_s: float | None = None,
                 ttft_slo_s: float | None = None, tpot_slo_s: float | None = None,
                 window_s: tuple[float, float] | None = None,
                 extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The JSON result of one run: totals at the top level, the same fields per model.

    Top-level keys: policy, throughput_rps, rate_weighted_throughput_rps, token_throughput_tps,
    slo_attainment {scale, attainment, by_scale}, ttft_s/tpot_s/latency_s {p50, p90, p99},
    num_requests, num_finished, span_s, [goodput_rps, ttft_tpot_attainment], per_model, and any
    ``extra`` keys. rates_rps weights the rate-weighted mean (default: observed arrival counts).
    """
    if window_s is not None and not window_s[1] > window_s[0]:
        raise ValueError(f"window_s must be (start, end) with end > start, got {window_s}")
    if not slo_scales or any(s <= 0 for s in slo_scales):
        raise ValueError(f"slo_scales must be positive numbers, got {list(slo_scales)}")
    a = _Arrays(records, slo_baseline_s)
    fixed_span = span_s
    span_s = _span(a) if fixed_span is None else fixed_span
    total = _summary(a, span_s, slo_scales, ttft_slo_s, tpot_slo_s, window_s)
    models = list(rates_rps) if rates_rps else list(dict.fromkeys(a.model.tolist()))
    per_model = {}
    for m in models:
        am = a.select(a.model == m)
        per_model[m] = _summary(am, _span(am) if fixed_span is None else fixed_span,
                                slo_scales, ttft_slo_s, tpot_slo_s, window_s)
    weights = {m: (rates_rps[m] if rates_rps else per_model[m]["num_requests"]) for m in models}
    wsum = sum(weights.values())
    rw = (sum(weights[m] * per_model[m]["throughput_rps"] for m in models) / wsum
          if wsum > 0 else 0.0)
    result: dict[str, Any] = {
        "policy": policy,
        "throughput_rps": total["throughput_rps"],
        "rate_weighted_throughput_rps": rw,
        "token_throughput_tps": total["token_throughput_tps"],
        "slo_attainment": total["slo_attainment"],
        "ttft_s": total["ttft_s"],
        "tpot_s": total["tpot_s"],
        "latency_s": total["latency_s"],
        "num_requests": total["num_requests"],
        "num_finished": total["num_finished"],
        "span_s": span_s,
        "window_s": list(window_s) if window_s is not None else None,
    }
    for k in ("goodput_rps", "ttft_tpot_attainment"):
        if k in total:
            result[k] = total[k]
    result["per_model"] = per_model
    if extra:
        result.update(extra)
    return result


def max_rate_meeting(points: Iterable[tuple[float, float | None]],
                     target: float = 0.9) -> float | None:
    """DistServe's goodput: the highest rate whose attainment is >= target (None if none)."""
    ok = [rate for rate, att in points if att is not None and att >= target]
    return max(ok) if ok else None
