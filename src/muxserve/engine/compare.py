"""Replay a timed request list against a real unit runtime and time every request.

``muxserve compare`` calls ``run_trace`` once per mode with the same requests: a fresh unit is
started (models loaded, workers up) before the clock starts, requests are submitted at their
``arrival_s`` (seconds after the start) in real time, and the run ends when all requests have
ended or at ``until_s``, when the rest are aborted and count as unfinished. Times are taken on
the client when the unit's events arrive, so they include the unit's queueing and messaging.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from muxserve.engine.protocol import GenerateRequest, TokenEvent
from muxserve.engine.runtime.client import UnitRuntime
from muxserve.engine.runtime.config import UnitConfig
from muxserve.engine.runtime.shares import set_worker_env

ABORT_WAIT_S = 30.0  # after the cutoff, how long to wait for the aborts to be confirmed
@dataclass(frozen=True)
class RequestTiming:
    """One request's fate; times are seconds since the run's start (None: never got there).
    finish_s is set only for requests that completed (finish_reason stop or length)."""

    first_token_s: float | None
    finish_s: float | None
    finish_reason: str | None  # None: still running at the cutoff and no abort came back
    output_tokens: int
    error: str | None = None


@dataclass(frozen=True)
class TraceRun:
    timings: list[RequestTiming]  # in the order of the requests given
    info: dict[str, Any]  # start-up time, wall time, counts, the unit's diagnostics


class _Track:
    __slots__ = ("first_s", "end_s", "reason", "tokens", "error")

    def __init__(self) -> None:
        self.first_s: float | None = None
        self.end_s: float | None = None
        self.reason: str | None = None
        self.tokens = 0
        self.error: str | None = None

    def add(self, ev: TokenEvent, now_s: float) -> bool:
        if ev.token_ids and self.first_s is None:
            self.first_s = now_s
        self.tokens += len(ev.token_ids)
        if ev.finished:
            self.end_s, self.reason, self.error = now_s, ev.finish_reason, ev.error
        return ev.finished

    def timing(self) -> RequestTiming:
        done = self.reason in ("stop", "length")
        return RequestTiming(self.first_s, self.end_s if done else None, self.reason,
                             self.tokens, self.error)


def run_trace(config: UnitConfig, requests: Sequence[GenerateRequest], until_s: float,
              log: Callable[[str], None] | None = None) -> TraceRun:
    """Start a unit for ``config``, replay ``requests`` (sorted by arrival_s) in real time and
    return every request's timing; the unit is shut down before returning."""
    ids = [r.req_id for r in requests]
    if len(set(ids)) != len(ids):
        raise ValueError("request ids must be unique")
    if any(b.arrival_s < a.arrival_s for a, b in zip(requests, requests[1:], strict=False)):
        raise ValueError("requests must be sorted by arrival_s")
    env = set_worker_env()
    t_start = time.perf_counter()
    rt = UnitRuntime(config).start()
    try:
        startup_s = time.perf_counter() - t_start
        warm_s = _warm_up(rt, config)
        rt.jobs()  # drop the warm-up's job records
        if log:
            log(f"unit up in {startup_s:.1f} s; replaying {len(requests)} requests for up to "
                f"{until_s:.0f} s")
        tracks, end_s = _replay(rt, requests, until_s, log)
        info = {"startup_s": round(startup_s, 2), "warmup_s": round(warm_s, 2),
                "run_s": round(end_s, 2), "env": env,
                "unit": _safe_info(rt), "jobs": job_summary(rt.jobs())}
    finally:
        rt.shutdown()
    timings = [tracks[i].timing() for i in ids]
    reasons: dict[str, int] = {}
    for t in timings:
        key = t.finish_reason or "none"
        reasons[key] = reasons.get(key, 0) + 1
    info["finish_reasons"] = reasons
    errors = sorted({t.error for t in timings if t.error})
    if errors:
        info["errors"] = errors[:5]
    return TraceRun(timings, info)


def job_summary(jobs: Sequence[Any]) -> dict[str, Any]:
    """Where the run's compute went, from the unit's job records: per phase the jobs, their
    mean batch and compute seconds; per core the fraction of the jobs' span it was busy
    (a job on two cores counts on both); the mean number of jobs running at once."""
    if not jobs:
        return {}
    t0, t1 = min(j.start_s for j in jobs), max(j.end_s for j in jobs)
    span = max(t1 - t0, 1e-9)
    phases: dict[str, dict[str, float]] = {}
    busy: dict[int, float] = {}
    for j in jobs:
        p = phases.setdefault(j.phase, {"jobs": 0, "seqs": 0, "tokens": 0, "compute_s": 0.0})
        p["jobs"] += 1
        p["seqs"] += j.batch
        p["tokens"] += j.num_tokens
        p["compute_s"] += j.compute_s
        for c in j.cores:
            busy[c] = busy.get(c, 0.0) + (j.end_s - j.start_s)
    for p in phases.values():
        p["mean_batch"] = round(p["seqs"] / p["jobs"], 2)
        p["compute_s"] = round(p["compute_s"], 2)
    return {"span_s": round(span, 2), "phases": phases,
            "core_busy_frac": {str(c): round(b / span, 3) for c, b in sorted(busy.items())},
            "mean_running_jobs": round(sum(j.end_s - j.start_s for j in jobs) / span, 2)}


def _warm_up(rt: UnitRuntime, config: UnitConfig) -> float:
    """One short request per model before the clock starts, so every prefill and decode
    worker has run once (first calls pay allocator growth and lazy initialisation, which the
    profile's warm-up also excludes)."""
    from muxserve.types import SamplingParams

    t0 = time.perf_counter()
    params = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    reqs = [GenerateRequest(f"warmup-{m.name}", m.name, tuple(range(1, 17)), params)
            for m in config.models]
    outs = rt.run_requests(reqs, timeout_s=300.0)
    bad = [o for o in outs if o.finish_reason != "length"]
    if bad:
        raise RuntimeError(f"warm-up request {bad[0].req_id} ended with "
                           f"{bad[0].finish_reason}: {bad[0].error}")
    return time.perf_counter() - t0


def _replay(rt: UnitRuntime, requests: Sequence[GenerateRequest], until_s: float,
            log: Callable[[str], None] | None) -> tuple[dict[str, _Track], float]:
    tracks = {r.req_id: _Track() for r in requests}
    t0 = time.perf_counter()
    nxt = done = 0
    next_log = 10.0
    while done < len(requests):
        now = time.perf_counter() - t0
        while nxt < len(requests) and requests[nxt].arrival_s <= now:
            rt.submit(requests[nxt])
            nxt += 1
        if now >= until_s:
            break
        wait = min(0.05, until_s - now)
        if nxt < len(requests):
            wait = min(wait, max(0.0, requests[nxt].arrival_s - now))
        for ev in rt.events(timeout_s=wait or 0.0):
            if tracks[ev.req_id].add(ev, time.perf_counter() - t0):
                done += 1
        if log and now >= next_log:
            log(f"t={now:.0f} s: {nxt} submitted, {done} ended")
            next_log += 10.0
    end_s = time.perf_counter() - t0
    open_ids = [r.req_id for r in requests[:nxt] if tracks[r.req_id].reason is None]
    for req_id in open_ids:
        rt.abort(req_id)
    deadline = time.perf_counter() + ABORT_WAIT_S
    pending = set(open_ids)
    while pending and time.perf_counter() < deadline:
        for ev in rt.events(timeout_s=0.2):
            if tracks[ev.req_id].add(ev, time.perf_counter() - t0):
                pending.discard(ev.req_id)
    if log:
        log(f"ended at {end_s:.1f} s: {done} of {len(requests)} ended, {len(open_ids)} aborted, "
            f"{len(requests) - nxt} never sent")
    return tracks, end_s


def _safe_info(rt: UnitRuntime, settle_s: float = 20.0) -> dict[str, Any]:
    """The unit's diagnostics once its jobs have drained (an aborted request inside a running
    job keeps its KV blocks until that job ends), without the pid maps."""
    deadline = time.perf_counter() + settle_s
    try:
        info = rt.info(timeout_s=30.0)
        while (info.get("kv_blocks_used") or info.get("live_requests")) and \
                time.perf_counter() < deadline:
            time.sleep(0.2)
            info = rt.info(timeout_s=30.0)
    except (TimeoutError, RuntimeError) as e:
        return {"error": str(e)}
    keys = ("kv_pool_bytes", "kv_blocks_used", "live_requests", "cores", "fixed_cores",
            "preemptions", "restarts", "integrity", "weight_bytes")
    return {k: info[k] for k in keys if k in info}
