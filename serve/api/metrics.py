"""`ServiceMetrics`: the service's Prometheus metrics, in a registry of their own per app.

Contract: `ServiceMetrics()` holds request counts by route and status, request latency by route,
upstream errors by reason (timeout, connect, status), and the encoder's batch sizes and call
times; `render()` returns the text exposition format and its content type for `GET /metrics`.
Routes are the service's fixed paths (anything else is counted as "other"), so label
cardinality stays bounded whatever clients send.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServiceMetrics:
    """Counters and histograms of one running service."""

    def __init__(self, routes: tuple[str, ...]) -> None:
        self.routes = frozenset(routes)
        self.registry = CollectorRegistry()
        self.requests = Counter("uprise_requests", "HTTP requests served, by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("uprise_request_duration_seconds",
                                 "Time from request to response headers, by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.upstream_errors = Counter("uprise_upstream_errors",
                                       "Proxied requests the upstream failed, by reason",
                                       ["reason"], registry=self.registry)
        self.batch_size = Histogram("uprise_encoder_batch_queries",
                                    "Queries per query-encoder call", buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self.encoder_seconds = Histogram("uprise_encoder_duration_seconds",
                                         "Time per query-encoder call", buckets=LATENCY_BUCKETS,
                                         registry=self.registry)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        route = path if path in self.routes else "other"
        self.requests.labels(route=route, status=str(status)).inc()
        self.latency.labels(route=route).observe(seconds)

    def observe_batch(self, n_queries: int, seconds: float) -> None:
        self.batch_size.observe(n_queries)
        self.encoder_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
