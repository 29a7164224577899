"""`ctsynth`: one command for every service.

Global options say where the object store is (`--store`, CTSYNTH_STORE) and
which services to talk to (`--target`, CTSYNTH_TARGET). Without a target a
command starts the services it needs in-process for its duration, so every
command works on one laptop with nothing running.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc

from ctsynth import __version__
from ctsynth.cli import demo, evaluate, ingest, phantom, sample, serve, stack_commands, status, train, watch
from ctsynth.client.jobs import JobFailed
from ctsynth.config import default_store_uri
from ctsynth.storage.errors import StorageError

COMMANDS = (serve, stack_commands, status, demo, phantom, ingest, train, watch, sample, evaluate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ctsynth", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ctsynth {__version__}")
    parser.add_argument("--store", default=os.environ.get("CTSYNTH_STORE") or default_store_uri(),
                        help="object store URI: file:///path or s3://bucket/prefix (env CTSYNTH_STORE)")
    parser.add_argument("--target", default=os.environ.get("CTSYNTH_TARGET") or None,
                        help="HOST:PORT of running services; omitted: start them in-process (env CTSYNTH_TARGET)")
    parser.add_argument("--token", default=os.environ.get("CTSYNTH_AUTH_TOKEN") or None,
                        help="bearer token for --target (env CTSYNTH_AUTH_TOKEN)")
    parser.add_argument("--tls-ca", type=Path, default=os.environ.get("CTSYNTH_TLS_CA") or None,
                        help="PEM CA file: talk TLS to --target (env CTSYNTH_TLS_CA)")
    parser.add_argument("--log-level", default=os.environ.get("CTSYNTH_LOG_LEVEL") or None,
                        choices=["debug", "info", "warning", "error"],
                        help="env CTSYNTH_LOG_LEVEL; default info for `serve`, warning otherwise")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; errors become a one-line reason and a non-zero exit."""
    args = build_parser().parse_args(argv)
    from ctsynth.observability.logging import configure_logging

    configure_logging(args.log_level or ("info" if args.command == "serve" else "warning"))
    try:
        return args.run(args) or 0
    except JobFailed as exc:
        print(f"ctsynth: error: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"ctsynth: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except (ValueError, OSError, StorageError) as exc:
        print(f"ctsynth: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctsynth: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
