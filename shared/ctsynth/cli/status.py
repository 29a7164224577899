"""`ctsynth status`: the health of every service at the target."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ctsynth.client import connect
from ctsynth.services import SERVICES


def add_parser(commands) -> None:
    parser = commands.add_parser("status", help="show whether each service is serving")
    parser.set_defaults(run=run)


def service_health(channel, timeout: float = 5.0) -> dict[str, str]:
    """Health status name of every ctsynth service on the channel
    ("NOT_HOSTED" for a service the target does not run)."""
    stub = health_pb2_grpc.HealthStub(channel)
    result = {}
    for name, spec in SERVICES.items():
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=spec.full_name), timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            result[name] = "NOT_HOSTED"
            continue
        result[name] = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return result


def run(args) -> int:
    with connect(SERVICES, target=args.target, store=args.store, token=args.token, tls_ca=args.tls_ca) as channel:
        health = service_health(channel)
    where = args.target or "in-process"
    print(f"{'service':<12} status   ({where}, store {args.store})")
    for name, state in health.items():
        print(f"{name:<12} {state}")
    hosted = [state for state in health.values() if state != "NOT_HOSTED"]
    return 0 if hosted and all(state == "SERVING" for state in hosted) else 1
