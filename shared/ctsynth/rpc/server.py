"""The one way every ctsynth service process starts: a gRPC server with the
official health and reflection services, our interceptors, optional TLS and
bearer-token auth, a Prometheus endpoint, and graceful SIGTERM handling.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ctsynth.config import ServerSettings
from ctsynth.observability.prometheus import serve_metrics
from ctsynth.rpc.interceptors import ObservabilityInterceptor, TokenAuthInterceptor
from ctsynth.storage import open_store

log = logging.getLogger("ctsynth.server")


@dataclass(frozen=True)
class ServiceSpec:
    """One service a server can host; `ctsynth.servicers` holds ours."""

    name: str  # short name used on the command line
    full_name: str  # fully qualified gRPC service name
    create: Callable  # (store, settings) -> servicer
    register: Callable  # (servicer, server) -> None


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials from the settings' PEM files; None for plaintext."""
    if settings.tls_cert is None:
        return None
    client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key.read_bytes(), settings.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


@dataclass
class ServiceHost:
    """A running gRPC server hosting one or more ctsynth services."""

    server: grpc.Server
    health: health.HealthServicer
    settings: ServerSettings
    port: int
    metrics_port: int | None
    services: dict[str, ServiceSpec]
    observer: ObservabilityInterceptor
    servicers: dict[str, object] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"{self.settings.host}:{self.port}"

    def set_serving(self, name: str, serving: bool = True) -> None:
        """Report a hosted service (by short name) ready or not to health checks."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        self.health.set(self.services[name].full_name, status)
        if all(self._is_serving(spec.full_name) for spec in self.services.values()) or not serving:
            self.health.set("", status)

    def _is_serving(self, full_name: str) -> bool:
        request = health_pb2.HealthCheckRequest(service=full_name)
        return self.health.Check(request, None).status == health_pb2.HealthCheckResponse.SERVING

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, let in-flight ones finish within the grace period."""
        self.health.enter_graceful_shutdown()
        grace = self.settings.grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        self.server.stop(grace).wait()
        # gRPC counts a call done when its transport ends (a passed deadline);
        # its handler may still be returning: give those the rest of the grace.
        self.observer.wait_idle(max(0.0, deadline - time.monotonic()))
        for servicer in self.servicers.values():
            close = getattr(servicer, "close", None)
            if close is not None:
                close()


def build_server(services: Iterable[ServiceSpec], settings: ServerSettings, *, ready: bool = True) -> ServiceHost:
    """Create and start a server hosting `services`.

    Health reports NOT_SERVING until the services are ready: at once when
    `ready`, otherwise when the caller says so with `host.set_serving`.
    """
    specs = {spec.name: spec for spec in services}
    # The first interceptor is the outermost: observing wraps auth, so refused calls are logged and counted.
    observer = ObservabilityInterceptor()
    interceptors = [observer]
    if settings.auth_token:
        interceptors.append(TokenAuthInterceptor(settings.auth_token))
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=options,
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for spec in specs.values():
        health_servicer.set(spec.full_name, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        [spec.full_name for spec in specs.values()] + [health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )

    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    metrics_port = None
    if settings.metrics_port is not None:
        metrics_port = serve_metrics(settings.metrics_port, settings.host)
    host = ServiceHost(server, health_servicer, settings, port, metrics_port, specs, observer)

    store = open_store(settings.store_uri)
    for name, spec in specs.items():
        servicer = spec.create(store, settings)
        spec.register(servicer, server)
        host.servicers[name] = servicer
    server.start()
    if ready:
        for name in specs:
            host.set_serving(name)
    log.info(
        "serving",
        extra={"address": host.address, "services": sorted(specs), "metrics_port": metrics_port,
               "tls": credentials is not None, "auth": bool(settings.auth_token)},
    )
    return host


def serve_until_signalled(host: ServiceHost) -> None:
    """Block until SIGTERM or SIGINT, then shut down gracefully."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    stop.wait()
    log.info("shutting down", extra={"grace_seconds": host.settings.grace_seconds})
    host.stop()
    log.info("stopped")
