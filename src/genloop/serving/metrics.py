"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

UNMATCHED = "<unmatched>"
KNOWN_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
ROW_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
REQUEST_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128)


class ServingMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("genloop_serve_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("genloop_serve_request_duration_seconds", "HTTP request latency by route template",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_rows = Histogram("genloop_serve_batch_rows", "rows per onnxruntime run (after dynamic batching)",
                                    ["model"], buckets=ROW_BUCKETS, registry=r)
        self.batch_requests = Histogram("genloop_serve_batch_requests", "requests merged into one onnxruntime run",
                                        ["model"], buckets=REQUEST_BUCKETS, registry=r)
        self.run_seconds = Histogram("genloop_serve_inference_seconds", "seconds of one onnxruntime run",
                                     ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.request_rows = Histogram("genloop_serve_request_rows", "rows per inference request", ["model"],
                                      buckets=ROW_BUCKETS, registry=r)
        self.ready = Gauge("genloop_serve_ready", "1 once every model is loaded, warmed up and batched", registry=r)
        self.reloads = Counter("genloop_serve_model_reloads", "new model versions swapped in while serving",
                               ["model"], registry=r)
        self.reload_failures = Counter("genloop_serve_model_reload_failures",
                                       "loads that failed (the previous version kept serving)", ["model"], registry=r)
        self.served_version = Gauge("genloop_serve_model_version", "the version being served (registry version "
                                    "number; -1 when not a number)", ["model"], registry=r)

    def set_served_version(self, model: str, version: str) -> None:
        self.served_version.labels(model).set(int(version) if version.isdigit() else -1)

    def clear_served_version(self, model: str) -> None:
        try:
            self.served_version.remove(model)
        except KeyError:
            pass

    def observe_batch(self, model: str, requests: int, rows: int, seconds: float) -> None:
        self.batch_rows.labels(model).observe(rows)
        self.batch_requests.labels(model).observe(requests)
        self.run_seconds.labels(model).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware: counts every HTTP request by its route template (not its raw path)."""

    def __init__(self, app, metrics: ServingMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def send_status(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope.get("method", "")
            method = method if method in KNOWN_METHODS else "OTHER"
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)
