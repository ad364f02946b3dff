"""Open-loop replay: each request is sent at its arrival time, whatever the server is doing.

A request that cannot start on time (the client's own --max-concurrency cap, a busy event loop)
starts late; its latency still counts from the scheduled arrival, as a user would see it, and
the lag is reported so a saturated client is visible.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from muxserve.bench.client import Outcome, request_body, stream_completion
from muxserve.bench.targets import Targets, models_url
from muxserve.bench.workload import synthetic_prompt
from muxserve.sim.workload import TraceRequest

START_LEAD_S = 0.05  # time to create the first tasks before the first arrival is due
BASELINE_REQ_ID = 1 << 40  # prompt seeds of baseline requests, apart from the trace's ids


@dataclass(frozen=True)
class RunOptions:
    timeout_s: float = 600.0  # one request, connect to [DONE]
    max_concurrency: int | None = None  # None: every request in flight at once if need be
    api_key: str | None = None
    seed: int = 0  # picks the synthetic prompt words

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"--timeout-s must be > 0, got {self.timeout_s}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError(f"--max-concurrency must be >= 1, got {self.max_concurrency}")


@dataclass(frozen=True)
class RunOutput:
    """Outcomes in trace order, with times in seconds since the run began (arrival 0).
    After an interruption only the requests sent so far have outcomes (a prefix of the
    trace); the ones then in flight have error "cancelled"."""

    outcomes: tuple[Outcome, ...]
    wall_s: float
    send_lag_s: tuple[float, ...]  # actual send - scheduled arrival, per request
    interrupted: bool = False


def _client(opts: RunOptions) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
    limits = httpx.Limits(max_connections=opts.max_concurrency,
                          max_keepalive_connections=opts.max_concurrency)
    # pool=None: waiting for a pooled connection is bounded by the whole-request timeout
    timeout = httpx.Timeout(opts.timeout_s, pool=None)
    return httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout)


def _shift(o: Outcome, t0: float) -> Outcome:
    def rel(t: float | None) -> float | None:
        return None if t is None else t - t0

    return Outcome(o.req_id, o.model, o.send_s - t0, rel(o.first_token_s), rel(o.finish_s),
                   o.prompt_tokens, o.output_tokens, o.usage_reported, o.error, o.detail)


async def _one(client: httpx.AsyncClient, r: TraceRequest, targets: Targets, opts: RunOptions,
               sem: asyncio.Semaphore | None) -> Outcome:
    body = request_body(targets.served_name[r.model],
                        synthetic_prompt(r.prompt_tokens, opts.seed, r.req_id), r.output_tokens,
                        targets.api)
    if sem is None:
        return await stream_completion(client, targets.url(r.model), r.req_id, r.model, body,
                                       opts.timeout_s)
    async with sem:
        return await stream_completion(client, targets.url(r.model), r.req_id, r.model, body,
                                       opts.timeout_s)


async def _run(trace: Sequence[TraceRequest], targets: Targets, opts: RunOptions,
               on_sent: Callable[[TraceRequest], None] | None,
               on_done: Callable[[Outcome], None] | None) -> RunOutput:
    sem = asyncio.Semaphore(opts.max_concurrency) if opts.max_concurrency else None
    tasks: list[asyncio.Task[Outcome]] = []
    interrupted = False

    def done(t: asyncio.Task[Outcome]) -> None:
        if on_done is not None and not t.cancelled() and t.exception() is None:
            on_done(t.result())

    async with _client(opts) as client:
        t0 = time.perf_counter() + START_LEAD_S
        try:
            for r in trace:
                delay = t0 + r.arrival_s - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(_one(client, r, targets, opts, sem))
                task.add_done_callback(done)
                tasks.append(task)
                if on_sent is not None:
                    on_sent(r)
            if tasks:
                await asyncio.wait(tasks)
        except asyncio.CancelledError:
            # Ctrl-C (asyncio.run cancels us): stop sending, cancel what is in flight, and
            # return what was sent so far so the caller can still write a result
            interrupted = True
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks)
        wall = time.perf_counter() - t0
    raw = [Outcome(r.req_id, r.model, t0 + r.arrival_s, error="cancelled",
                   detail="run interrupted") if t.cancelled() else t.result()
           for r, t in zip(trace, tasks, strict=False)]
    outcomes = tuple(_shift(o, t0) for o in raw)
    lag = tuple(o.send_s - r.arrival_s for o, r in zip(outcomes, trace, strict=False))
    return RunOutput(outcomes, wall, lag, interrupted)


def run_trace(trace: Sequence[TraceRequest], targets: Targets, opts: RunOptions,
              on_sent: Callable[[TraceRequest], None] | None = None,
              on_done: Callable[[Outcome], None] | None = None) -> RunOutput:
    """Send every request of ``trace`` at its arrival time and wait for all of them (on
    Ctrl-C: return the part sent so far, ``interrupted`` set).

    ``on_sent``/``on_done`` are called from the event loop (keep them cheap: a progress bar)."""
    missing = sorted({r.model for r in trace} - set(targets.base_url))
    if missing:
        raise ValueError(f"trace has models {missing} without an endpoint")
    return asyncio.run(_run(trace, targets, opts, on_sent, on_done))


# ---- before the run: are the endpoints up and do they serve the models? ---------------------
def preflight(targets: Targets, opts: RunOptions, timeout_s: float = 10.0) -> None:
    """GET /v1/models once per endpoint; ValueError when one is unreachable or lists models but
    not ours (every request would fail). An endpoint without /v1/models passes."""
    by_url: dict[str, list[str]] = {}
    for m, url in targets.base_url.items():
        by_url.setdefault(url, []).append(targets.served_name[m])
    headers = {"Authorization": f"Bearer {opts.api_key}"} if opts.api_key else {}
    with httpx.Client(headers=headers, timeout=timeout_s) as client:
        for url, names in by_url.items():
            listing = models_url(url)
            try:
                resp = client.get(listing)
            except httpx.TransportError as e:
                raise ValueError(f"cannot reach {listing}: {e!r} (is the server up? "
                                 "--no-preflight skips this check)") from None
            if resp.status_code != 200:
                continue
            try:
                listed = {str(d.get("id")) for d in resp.json().get("data") or ()}
            except (ValueError, AttributeError):
                continue
            missing = [n for n in names if listed and n not in listed]
            if missing:
                raise ValueError(f"{url} does not serve {missing}; it serves {sorted(listed)} "
                                 "(map names with --served-name MODEL=NAME)")


# ---- the SLO baseline: each model's latency with the server to itself -----------------------
def measure_baseline(lengths: Mapping[str, tuple[int, int]], targets: Targets,
                     opts: RunOptions, repeats: int = 2
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Send ``repeats`` requests per model, one at a time, nothing else in flight; keep the
    fastest (the first may pay warm-up). lengths: model -> (prompt tokens, output tokens).

    Returns (model -> {ttft_s, tpot_s, latency_s, prompt_tokens, output_tokens}, model -> the
    error of a model whose baseline request failed)."""
    if repeats < 1:
        raise ValueError(f"--baseline-requests must be >= 1, got {repeats}")

    async def one_model(client: httpx.AsyncClient, m: str, p: int, o: int
                        ) -> tuple[Outcome | None, str]:
        best: Outcome | None = None
        best_s = float("inf")
        for k in range(repeats):
            rid = BASELINE_REQ_ID + k
            body = request_body(targets.served_name[m], synthetic_prompt(p, opts.seed, rid), o,
                                targets.api)
            got = await stream_completion(client, targets.url(m), rid, m, body, opts.timeout_s)
            if got.error or got.finish_s is None:
                return None, f"{got.error}: {got.detail}"
            if got.finish_s - got.send_s < best_s:
                best, best_s = got, got.finish_s - got.send_s
        return best, ""

    async def go() -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        out: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        async with _client(opts) as client:
            for m, (p, o) in lengths.items():
                best, err = await one_model(client, m, p, o)
                if best is None:
                    failed[m] = err
                    continue
                assert best.finish_s is not None
                first = best.first_token_s if best.first_token_s is not None else best.finish_s
                n = best.output_tokens
                out[m] = {"ttft_s": first - best.send_s,
                          "tpot_s": (best.finish_s - first) / (n - 1) if n > 1 else 0.0,
                          "latency_s": best.finish_s - best.send_s,
                          "prompt_tokens": best.prompt_tokens or p, "output_tokens": n}
        return out, failed

    return asyncio.run(go())
