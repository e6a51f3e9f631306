"""Prometheus metrics. Under gunicorn every worker writes to PROMETHEUS_MULTIPROC_DIR and /metrics
adds them up (prometheus_client's multiprocess mode); a single process just uses its own registry."""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

ROUTE_DECISIONS = Counter("seam_route_decisions_total", "Routing decisions", ["target", "reason"])
TOKENS_SERVED = Counter("seam_tokens_served_total", "Completion tokens sent to clients", ["backend"])
REQUEST_SECONDS = Histogram("seam_request_seconds", "Time to answer a request", ["endpoint", "status"])
CLIENT_VERSIONS = Counter("seam_client_model_reports_total", "Cached model versions reported by pages",
                          ["model", "version"])
SELF_CHECKS = Counter("seam_self_checks_total", "First-load self-checks reported by pages",
                      ["model", "version", "result"])


class FleetCollector:
    """Active clients per cached model version, read from the fleet store at scrape time."""

    def __init__(self, fleet):
        self.fleet = fleet

    def collect(self):
        gauge = GaugeMetricFamily("seam_client_model_versions", "Active clients holding each model version",
                                  labels=["model", "version"])
        for row in self.fleet.versions():
            gauge.add_metric([row["id"], row["version"]], row["clients"])
        yield gauge


def exposition(fleet) -> tuple[bytes, str]:
    fleet_registry = CollectorRegistry()
    fleet_registry.register(FleetCollector(fleet))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry) + generate_latest(fleet_registry), CONTENT_TYPE_LATEST
    return generate_latest() + generate_latest(fleet_registry), CONTENT_TYPE_LATEST
