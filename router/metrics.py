"""Prometheus metrics of the one server process. Labels hold only values the server itself chose or knows
(its endpoints, its catalog's ids and versions): never a client's string, so no client can break or
bloat the exposition."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

ROUTE_DECISIONS = Counter("seam_route_decisions_total", "Routing decisions, one per answer", ["target", "reason"])
PREDICTION_RATIO = Histogram("seam_prediction_ratio", "An answer's actual over its predicted time to first token "
                             "or tokens/s, as its page reported", ["target", "measure"],
                             buckets=(0.1, 0.25, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 4.0, 10.0))
TOKENS_SERVED = Counter("seam_tokens_served_total", "Completion tokens sent to clients", ["backend"])
CHATS_IN_FLIGHT = Gauge("seam_chats_in_flight", "Chat requests answering or waiting (503 beyond SEAM_MAX_QUEUE)")
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
    return generate_latest() + generate_latest(fleet_registry), CONTENT_TYPE_LATEST
