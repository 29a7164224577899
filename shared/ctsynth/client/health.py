"""Which ctsynth services a target hosts and whether each is serving, through
the official gRPC health service."""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ctsynth.service_names import SERVICE_NAMES


def service_health(channel: grpc.Channel, names: Iterable[str] = tuple(SERVICE_NAMES),
                   timeout: float = 5.0) -> dict[str, str]:
    """Health status name of the named services on the channel
    ("NOT_HOSTED" for a service the target does not run)."""
    stub = health_pb2_grpc.HealthStub(channel)
    result = {}
    for name in names:
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAMES[name]), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            result[name] = "NOT_HOSTED"
            continue
        result[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return result
