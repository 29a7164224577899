"""`ctsynth serve`: host one service, or all of them on one port."""

from __future__ import annotations

from ctsynth.config import ServerSettings
from ctsynth.service_names import SERVICE_NAMES


def add_parser(commands) -> None:
    parser = commands.add_parser("serve", help="run a service until SIGTERM")
    parser.add_argument("service", choices=[*SERVICE_NAMES, "all"])
    parser.add_argument("--host", default=None, help="listen address (env CTSYNTH_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="gRPC port (env CTSYNTH_PORT, default 50051; 0: any free)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="Prometheus /metrics port (env CTSYNTH_METRICS_PORT; default: none)")
    parser.set_defaults(run=run)


def run(args) -> int:
    from ctsynth.rpc.server import serve_until_signalled
    from ctsynth.servicers import host_services

    settings = ServerSettings.from_env(
        store_uri=args.store, host=args.host, port=args.port, metrics_port=args.metrics_port
    )
    names = list(SERVICE_NAMES) if args.service == "all" else [args.service]
    host = host_services(names, settings)
    # One parseable line for scripts and tests that start the server with port 0.
    metrics = f" metrics={host.metrics_port}" if host.metrics_port is not None else ""
    print(f"ctsynth serving {','.join(names)} on {host.address}{metrics}", flush=True)
    serve_until_signalled(host)
    return 0
