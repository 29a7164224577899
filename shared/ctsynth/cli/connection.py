"""The services a command talks to, from the global options: the target's,
or the embedded default, started in-process on loopback for the command."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import grpc

from ctsynth import stack
from ctsynth.client import open_channel, resolve_target
from ctsynth.config import ServerSettings


def target_of(args) -> str | None:
    """--target, else the local stack when `ctsynth up` started one."""
    if args.target:
        return args.target
    running = stack.current()
    return running.target if running is not None else None


@contextmanager
def open_services(args, names: Iterable[str], import_roots: Iterable[str] = ()) -> Iterator[grpc.Channel]:
    """A channel to `names` at the target, or to them started in-process for
    the command. `import_roots`: the command's own local inputs, which its
    user already owns; the in-process services may read them beside the
    configured roots. A served instance never takes roots from a client."""
    names = list(names)
    target = target_of(args)
    if target:
        with open_channel(resolve_target(target, names), token=args.token, tls_ca=args.tls_ca) as channel:
            yield channel
        return

    from ctsynth.servicers import host_services  # the servers' code, only for a command that hosts them

    # Loopback for the life of one command: no TLS, no token, no metrics port.
    settings = ServerSettings.from_env(store_uri=args.store)
    settings = dataclasses.replace(
        settings,
        host="127.0.0.1", port=0, metrics_port=None, grace_seconds=5.0,
        tls_cert=None, tls_key=None, tls_client_ca=None, auth_token=None,
        import_roots=settings.allowed_roots().including(*import_roots).roots,
    )
    host = host_services(names, settings)
    try:
        with open_channel(host.address) as channel:
            yield channel
    finally:
        host.stop()
