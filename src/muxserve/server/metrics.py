"""Prometheus metrics of one server (its own registry, so several apps can live in a process).

Counters and histograms are updated as requests run; the engine gauges (queue length, running
batch, KV blocks, compute share) are read from the backend's `UnitStats` at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from muxserve.engine.protocol import UnitStats

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TPOT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class _UnitCollector(Collector):
    def __init__(self, stats: Callable[[], UnitStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self._stats()
        per_model = {
            "muxserve_queue_length": ("requests waiting in the engine", "waiting"),
            "muxserve_running_requests": ("requests in the running batch", "running"),
            "muxserve_kv_blocks_used": ("KV blocks held by the model", "kv_blocks_used"),
            "muxserve_worker_restarts": ("times the model's worker was restarted",
                                         "worker_restarts"),
        }
        for name, (doc, attr) in per_model.items():
            g = GaugeMetricFamily(name, doc, labels=["model"])
            for m in s.models:
                g.add_metric([m.model], float(getattr(m, attr)))
            yield g
        share = GaugeMetricFamily("muxserve_model_compute_share",
                                  "compute share the model's jobs hold", labels=["model", "phase"])
        for m in s.models:
            share.add_metric([m.model, "prefill"], m.prefill_share)
            share.add_metric([m.model, "decode"], m.decode_share)
        yield share
        yield GaugeMetricFamily("muxserve_kv_blocks_used_total", "KV blocks in use, all models",
                                value=s.kv_blocks_used)
        yield GaugeMetricFamily("muxserve_kv_blocks_total", "KV blocks in the pool",
                                value=s.kv_blocks_total)
        yield GaugeMetricFamily("muxserve_compute_share_in_use",
                                "fraction of the unit's compute in use",
                                value=s.compute_share_in_use)


class ServerMetrics:
    """stats: returns the engine gauges' latest snapshot (the /metrics route refreshes it off
    the event loop before rendering)."""

    def __init__(self, stats: Callable[[], UnitStats]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("muxserve_requests", "finished HTTP requests by outcome",
                                ["model", "endpoint", "status"], registry=r)
        self.errors = Counter("muxserve_request_errors", "failed requests by error type",
                              ["model", "type"], registry=r)
        self.in_flight = Gauge("muxserve_server_requests_in_flight",
                               "requests admitted by the server and not finished", ["model"],
                               registry=r)
        self.aborted = Counter("muxserve_requests_aborted",
                               "requests aborted (client gone or timeout)", ["model", "reason"],
                               registry=r)
        self.ttft = Histogram("muxserve_time_to_first_token_seconds", "TTFT", ["model"],
                              buckets=LATENCY_BUCKETS_S, registry=r)
        self.tpot = Histogram("muxserve_time_per_output_token_seconds",
                              "mean time per output token after the first", ["model"],
                              buckets=TPOT_BUCKETS_S, registry=r)
        self.latency = Histogram("muxserve_request_latency_seconds", "end-to-end latency",
                                 ["model"], buckets=LATENCY_BUCKETS_S, registry=r)
        self.prompt_tokens = Counter("muxserve_prompt_tokens", "prompt tokens", ["model"],
                                     registry=r)
        self.generation_tokens = Counter("muxserve_generation_tokens", "generated tokens",
                                         ["model"], registry=r)
        self.unit_restarts = Gauge("muxserve_unit_restarts",
                                   "times a dead unit process was replaced", registry=r)
        r.register(_UnitCollector(stats))

    def render(self) -> bytes:
        return generate_latest(self.registry)
