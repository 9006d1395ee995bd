"""Prometheus metrics, at TF Serving's path ``/monitoring/prometheus/metrics``."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """One registry per server, so two servers in one process (the tests) keep their own counts."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("serving_requests", "Requests answered, by front end, model, method and code",
                                ["api", "model", "method", "code"], registry=self.registry)
        self.latency = Histogram("serving_request_latency_seconds", "Time from request to answer",
                                 ["api", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("serving_batch_size", "Rows in each call of a model (merged by batching)",
                                    ["model"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.in_flight = Gauge("serving_requests_in_flight", "API requests received and not yet answered",
                               registry=self.registry, multiprocess_mode="livesum")
        self.versions = Gauge("serving_model_version_state", "1 for each model version in a state",
                              ["model", "version", "state"], registry=self.registry, multiprocess_mode="livemax")

    def observe(self, api: str, model: str, method: str, code: str, seconds: float) -> None:
        self.requests.labels(api, model, method, code).inc()
        self.latency.labels(api, method).observe(seconds)

    def batch(self, model: str, rows: int) -> None:
        self.batch_size.labels(model).observe(rows)

    def version_state(self, model: str, version: int, state: str) -> None:
        for other in ("LOADING", "AVAILABLE", "UNLOADING", "END"):
            self.versions.labels(model, str(version), other).set(1 if other == state else 0)

    def text(self) -> bytes:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # --workers: the sum over every worker's files
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
