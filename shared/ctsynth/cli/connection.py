"""The services a command talks to, from the global options."""

from __future__ import annotations

from ctsynth import stack
from ctsynth.client import connect


def target_of(args) -> str | None:
    """--target, else the local stack when `ctsynth up` started one."""
    if args.target:
        return args.target
    running = stack.current()
    return running.target if running is not None else None


def open_services(args, names, import_roots=()):
    """A channel to `names` at the target, or started in-process for the
    command (which may then also read the local `import_roots`)."""
    return connect(names, target=target_of(args), store=args.store, token=args.token, tls_ca=args.tls_ca,
                   import_roots=import_roots)
