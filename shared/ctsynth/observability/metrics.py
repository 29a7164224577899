"""Prometheus metrics of the gRPC layer and the /metrics HTTP endpoint."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter(
    "ctsynth_grpc_requests_total",
    "gRPC calls handled, by service, method and status code.",
    ["service", "method", "code"],
)
LATENCY = Histogram(
    "ctsynth_grpc_request_duration_seconds",
    "Time from a call's arrival to its last response.",
    ["service", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
IN_FLIGHT = Gauge(
    "ctsynth_grpc_requests_in_flight",
    "Calls being handled right now.",
    ["service"],
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> int:
    """Expose the default registry on http://host:port/metrics; returns the port."""
    server, _thread = start_http_server(port, addr=host)
    return server.server_port

JOBS = Counter(
    "ctsynth_jobs_total",
    "Jobs that reached a final state, by kind and state.",
    ["kind", "state"],
)
JOB_DURATION = Histogram(
    "ctsynth_job_duration_seconds",
    "Wall time of finished jobs, by kind.",
    ["kind"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
)
JOBS_ACTIVE = Gauge(
    "ctsynth_jobs_active",
    "Jobs queued or running, by kind.",
    ["kind"],
)
