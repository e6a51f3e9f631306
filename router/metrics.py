"""Prometheus metrics. Under gunicorn every worker writes to PROMETHEUS_MULTIPROC_DIR and /metrics
adds them up (prometheus_client's multiprocess mode); a single process just uses its own registry."""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

ROUTE_DECISIONS = Counter("seam_route_decisions_total", "Routing decisions", ["target", "reason"])
TOKENS_SERVED = Counter("seam_tokens_served_total", "Completion tokens sent to clients", ["backend"])
REQUEST_SECONDS = Histogram("seam_request_seconds", "Time to answer a request", ["endpoint", "status"])
CLIENT_VERSIONS = Counter("seam_client_model_reports_total", "Cached model versions reported by pages",
                          ["model", "version"])


def exposition() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
