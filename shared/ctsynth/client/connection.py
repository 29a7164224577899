"""Channels to ctsynth services at a target. The client starts no server:
the CLI hosts services in-process when it has no target."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from pathlib import Path

import grpc


class _ClientCallDetails(
    collections.namedtuple("_ClientCallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    """grpc.ClientCallDetails is an interface; this is the usual concrete form."""


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call (plaintext or TLS)."""

    def __init__(self, token: str):
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details):
        metadata = list(details.metadata or ()) + [self._header]
        return _ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                  details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


def open_channel(
    target: str,
    *,
    token: str | None = None,
    tls_ca: Path | None = None,
    max_message_bytes: int = 64 * 1024 * 1024,
) -> grpc.Channel:
    """A channel to `host:port`; TLS when `tls_ca` is given (PEM of the CA)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if tls_ca is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    if token:
        channel = grpc.intercept_channel(channel, _BearerToken(token))
    return channel


def resolve_target(target: str, services: Iterable[str]) -> str:
    """The one address serving `services`: `target` is `host:port`, or a map
    `ingest=host:port,training=host:port,...` (as `ctsynth up` prints)."""
    if "=" not in target:
        return target
    mapping = {}
    for part in target.split(","):
        name, sep, address = part.partition("=")
        if not sep or not address:
            raise ValueError(f"target {target!r}: expected host:port or service=host:port,...")
        mapping[name.strip()] = address.strip()
    services = list(services)
    missing = [name for name in services if name not in mapping]
    if missing:
        raise ValueError(f"target {target!r} gives no address for {', '.join(missing)}")
    addresses = {mapping[name] for name in services}
    if len(addresses) != 1:
        raise ValueError(f"{', '.join(services)} are at different addresses; ask for them one at a time")
    return addresses.pop()
