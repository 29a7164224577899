"""A gRPC health check over TLS, for Kubernetes exec probes.

Kubernetes' built-in gRPC probe speaks plaintext only, so the chart uses it
while TLS is off and this script while it is on. Exit 0 when the service is
SERVING, 1 otherwise (with the reason on stderr).

    python /app/bin/grpc_health_probe.py --addr 127.0.0.1:50051 \\
        --service ctsynth.v1.SamplingService --tls-ca /etc/ctsynth/tls/ca.crt \\
        --server-name ctsynth-sampling.default.svc
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def check(addr: str, service: str, timeout: float, *, tls_ca: Path | None = None,
          tls_cert: Path | None = None, tls_key: Path | None = None, server_name: str | None = None) -> str:
    """The health status name (SERVING, NOT_SERVING, ...) of `service` at `addr`."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    if tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=tls_ca.read_bytes(),
            private_key=tls_key.read_bytes() if tls_key else None,
            certificate_chain=tls_cert.read_bytes() if tls_cert else None,
        )
        channel = grpc.secure_channel(addr, credentials, options=options)
    else:
        channel = grpc.insecure_channel(addr)
    with channel:
        response = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051")
    parser.add_argument("--service", default="", help="gRPC service name; empty: the whole server")
    parser.add_argument("--timeout", type=float, default=3.0)
    parser.add_argument("--tls-ca", type=Path, help="PEM CA that signed the server certificate")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    parser.add_argument("--tls-key", type=Path, help="client key (mutual TLS)")
    parser.add_argument("--server-name", help="name the server certificate is checked against")
    args = parser.parse_args(argv)
    try:
        status = check(args.addr, args.service, args.timeout, tls_ca=args.tls_ca, tls_cert=args.tls_cert,
                       tls_key=args.tls_key, server_name=args.server_name)
    except Exception as exc:  # noqa: BLE001 - any failure is an unhealthy probe
        print(f"health check of {args.addr} failed: {exc}", file=sys.stderr)
        return 1
    if status != "SERVING":
        print(f"{args.service or 'server'} at {args.addr} is {status}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
