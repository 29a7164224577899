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

SAMPLING_REQUESTS = Counter(
    "ctsynth_sampling_requests_total",
    "Sample calls accepted, by model name and output format.",
    ["model", "format"],
)
SAMPLING_ITEMS = Counter(
    "ctsynth_sampling_items_total",
    "Items sampled and sent, by model name.",
    ["model"],
)
SAMPLING_FIRST_ITEM = Histogram(
    "ctsynth_sampling_first_item_seconds",
    "Time from a Sample call's arrival to its first batch being ready.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SAMPLING_DURATION = Histogram(
    "ctsynth_sampling_request_seconds",
    "Time from a Sample call's arrival to its last batch being sent.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
SAMPLING_QUEUE = Gauge(
    "ctsynth_sampling_queue_items",
    "Items waiting for the model's batching worker, by model reference.",
    ["model"],
)
SAMPLING_BATCH = Histogram(
    "ctsynth_sampling_batch_items",
    "Items (of every request merged) per forward pass of a model, by model reference.",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
SAMPLING_ACTIVE = Gauge(
    "ctsynth_sampling_active_requests",
    "Sample calls holding a slot of the concurrency limit.",
)
SAMPLING_BYTES = Gauge(
    "ctsynth_sampling_bytes_in_flight",
    "Bytes reserved by Sample calls in progress (the limiter's estimate).",
)
MODEL_CACHE_HITS = Counter(
    "ctsynth_model_cache_hits_total",
    "Model lookups served from the in-memory cache.",
)
MODEL_CACHE_MISSES = Counter(
    "ctsynth_model_cache_misses_total",
    "Model lookups that loaded the model from the object store.",
)
MODEL_CACHE_BYTES = Gauge(
    "ctsynth_model_cache_bytes",
    "Weight bytes of the models held in the cache.",
)
DEVICE_UTILIZATION = Gauge(
    "ctsynth_device_utilization_ratio",
    "Busy fraction of the sampling device: each GPU (NVML, device gpuN) or this process's CPU share (device cpu).",
    ["device"],
)

TRAINING_IMAGES_PER_SECOND = Gauge(
    "ctsynth_training_images_per_second",
    "Real images consumed per second by a running training job (all workers).",
    ["model"],
)
