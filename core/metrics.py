"""Prometheus metrics. One registry per app instance (tests build many apps); with several uvicorn
workers set PROMETHEUS_MULTIPROC_DIR and /metrics aggregates all of them."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "sentiment_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "sentiment_request_duration_seconds", "End-to-end request latency in the server", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.queue_time = Histogram(
            "sentiment_queue_seconds", "Time a request's texts waited in the queue before their batch ran",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.inference_time = Histogram(
            "sentiment_inference_seconds", "Forward-pass time per batch (in the inference thread)",
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "sentiment_batch_size", "Texts per batch", buckets=_SIZE_BUCKETS, registry=r
        )
        self.batch_tokens = Histogram(
            "sentiment_batch_padded_tokens", "Padded tokens (texts × longest text) per batch",
            buckets=(16, 64, 256, 1024, 4096, 16384, 65536), registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "sentiment_queue_depth", "Texts waiting for inference", registry=r, multiprocess_mode="livesum"
        )
        self.texts = Counter("sentiment_texts", "Texts classified", registry=r)
        self.rejected_texts = Counter(
            "sentiment_rejected_texts",
            "Texts not classified: overloaded (queue full) or dropped (client gone or timed out)",
            ["reason"], registry=r,
        )  # fmt: skip
        self.batch_failures = Counter(
            "sentiment_batch_failures", "Batches whose forward pass raised", registry=r
        )
        self.model_info = Gauge(
            "sentiment_model_info", "The serving model (value 1; a reload replaces the series)",
            ["name", "version"], registry=r, multiprocess_mode="max",
        )  # fmt: skip
        self.model_reloads = Counter(
            "sentiment_model_reloads",
            "POST /admin/reload by result: swapped, unchanged (already serving it), refused (bad or "
            "incompatible artifact, bad request), failed (unexpected error)",
            ["result"], registry=r,
        )  # fmt: skip
        self._request_children: dict[tuple[str, str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        # Cached label children: .labels() takes a lock and builds a key on every call.
        key = (route, method, status)
        counter = self._request_children.get(key)
        if counter is None:
            counter = self._request_children[key] = self.requests.labels(route, method, str(status))
        counter.inc()
        hist = self._latency_children.get(route)
        if hist is None:
            hist = self._latency_children[route] = self.latency.labels(route)
        hist.observe(seconds)

    def render(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
