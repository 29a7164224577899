"""Channels to ctsynth services: a remote target, or services started
in-process for the duration of a command (the embedded default)."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from ctsynth.config import ServerSettings


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


@contextmanager
def connect(
    services: Iterable[str],
    *,
    target: str | None = None,
    store: str | None = None,
    token: str | None = None,
    tls_ca: Path | None = None,
    import_roots: Iterable[str] = (),
) -> Iterator[grpc.Channel]:
    """A channel to `target`, or to the named services started in-process on
    loopback for the duration of the block when no target is given.

    `import_roots`: paths the in-process services may also read, beside the
    configured roots: the command's own local inputs, which its user already
    owns. A served instance never takes roots from a client."""
    if target:
        channel = open_channel(resolve_target(target, services), token=token, tls_ca=tls_ca)
        try:
            yield channel
        finally:
            channel.close()
        return

    from ctsynth.rpc.server import build_server

    # Loopback for the life of one command: no TLS, no token, no metrics port.
    settings = ServerSettings.from_env(store_uri=store)
    settings = dataclasses.replace(
        settings,
        host="127.0.0.1", port=0, metrics_port=None, grace_seconds=5.0,
        tls_cert=None, tls_key=None, tls_client_ca=None, auth_token=None,
        import_roots=settings.allowed_roots().including(*import_roots).roots,
    )
    host = build_server(list(services), settings)
    channel = open_channel(host.address)
    try:
        yield channel
    finally:
        channel.close()
        host.stop()
